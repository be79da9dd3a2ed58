package nft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	gnft "github.com/google/nftables"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// Interface programs the desired table ip vxflow; the agent depends on it, and tests of the agent use Fake.
type Interface interface {
	// Sync makes the kernel's table equal to desired in one atomic transaction and returns what it did.
	// It is idempotent: syncing the same desired state twice sends nothing the second time. Call it
	// periodically (every few seconds) with the last desired ruleset as the drift check: it costs one
	// generation read unless another writer changed the namespace's ruleset, in which case it rewrites
	// the table (a deleted or edited table is restored). triggerTimes are the EndpointSlice
	// last-change-trigger-times this sync carries, observed in network_programming_duration_seconds.
	Sync(ctx context.Context, desired *nftables.Ruleset, triggerTimes ...time.Time) (Result, error)
	// Close releases the netlink socket and the namespace handle; the table stays as programmed.
	Close() error
}

var (
	_ Interface = (*Syncer)(nil)
	_ Interface = (*Fake)(nil)
)

// Options configure a Syncer.
type Options struct {
	// NetNSPath is the network namespace to program, for example /run/netns/node1 or /proc/PID/ns/net;
	// empty means the caller's namespace.
	NetNSPath string
	// Metrics receives the sync metrics; nil records nothing.
	Metrics *Metrics
	// Logger is used for sync logs; the zero value discards them.
	Logger klog.Logger
	// Table is the name of the table to program; empty means nftables.TableName ("vxflow"). Other names
	// are for tests and experiments that need several tables in one namespace.
	Table string
	// StaleChainDelay is how long a chain that is no longer used stays (flushed) before it is deleted:
	// with kernels before 6.2 a chain is still referenced for a short time after the map element that
	// pointed to it is removed, so deleting it in the same transaction can fail (kube-proxy waits too).
	// Zero means one second.
	StaleChainDelay time.Duration
}

// Result says what one Sync did.
type Result struct {
	// Full is true when the whole table was rewritten rather than patched.
	Full bool
	// Reason says why a full sync was needed ("first sync", "previous sync failed", "table deleted", ...).
	Reason string
	// Messages is the number of netlink messages in the transaction (0 when nothing had to change).
	Messages int
	// ChainsWritten counts chains created or rewritten; ChainsDeleted counts stale chains deleted.
	ChainsWritten, ChainsDeleted int
	// RulesWritten counts rules sent.
	RulesWritten int
	// ElementsAdded and ElementsDeleted count set and map elements sent.
	ElementsAdded, ElementsDeleted int
	// Duration is the wall time of the sync, including the kernel's commit.
	Duration time.Duration
	// KernelDuration is the part of Duration spent inside the kernel processing the batch (sendmsg).
	KernelDuration time.Duration
}

// Syncer programs table ip vxflow in one network namespace over netlink (google/nftables), keeping the
// Ruleset it programmed so that a partial sync sends only changed elements and chains. With a grouped
// Ruleset (nftables.Renderer.RenderGrouped) that copy is the Ruleset itself and a partial sync costs a
// pass over the Service groups' pointers plus the changed Services.
type Syncer struct {
	opts  Options
	log   klog.Logger
	table *gnft.Table
	nsFD  *os.File

	mu sync.Mutex // protects the following fields
	// conn reads the ruleset (generation, table, chains, sets); sock sends the transactions.
	conn *gnft.Conn
	sock *socket
	// programmed is the kernel's table after our last transaction; nil means unknown, so the next sync is
	// full (at start, after a failure, after someone else changed the ruleset).
	programmed *kernelState
	fullReason string
	// gen is the nf_tables generation right after our last transaction: any other value means another
	// writer committed since.
	gen uint32
	// stale holds chains that are flushed and unreferenced, with the time they became stale.
	stale map[string]time.Time
	// sizeHint is the buffer size to start a full sync's batch with: the last full batch's size.
	sizeHint int
	// lastDesired is the ruleset of the last successful sync; syncing the same pointer again while the
	// generation is unchanged returns at once. Rulesets must not be modified after they are synced.
	lastDesired *nftables.Ruleset
}

// kernelState is what the table holds: the desired fixed chains by name, the fixed sets with their
// elements, and the Service groups of a grouped Ruleset.
type kernelState struct {
	// fixed are the chains outside any Service group, by name.
	fixed map[string]*nftables.Chain
	// sets are the sets outside any group, with their elements outside any group.
	sets map[string]*programmedSet
	// grouped is true for a grouped Ruleset; services are then its groups, sorted by Key. A group the
	// renderer reused is the same pointer, which is how a partial sync skips unchanged Services without
	// comparing their rules or elements.
	grouped  bool
	services []*nftables.ServiceRules
	// fixedChains and fixedSets are the slices fixed and sets were built from: a next ruleset with the
	// same slices has the same fixed part, which a partial sync then skips.
	fixedChains []*nftables.Chain
	fixedSets   []*nftables.Set
	// objects is the number of chains and sets, compared with the table's use count to notice deletions.
	objects uint32
}

// programmedSet is one set and its elements' data (verdicts or endpoints) by key.
type programmedSet struct {
	spec  *nftables.Set
	elems map[nftables.ElementKey]nftables.ElementData
}

// NewSyncer opens a netlink connection into the namespace at opts.NetNSPath. The first Sync is full.
func NewSyncer(opts Options) (*Syncer, error) {
	if opts.StaleChainDelay == 0 {
		opts.StaleChainDelay = time.Second
	}
	s := &Syncer{
		opts:       opts,
		log:        opts.Logger,
		table:      &gnft.Table{Name: cmp.Or(opts.Table, nftables.TableName), Family: gnft.TableFamilyIPv4},
		fullReason: "first sync",
		stale:      make(map[string]time.Time),
	}
	connOpts := []gnft.ConnOption{gnft.AsLasting()}
	if opts.NetNSPath != "" {
		f, err := os.Open(opts.NetNSPath)
		if err != nil {
			return nil, fmt.Errorf("failed to open network namespace %s: %w", opts.NetNSPath, err)
		}
		s.nsFD = f
		connOpts = append(connOpts, gnft.WithNetNSFd(int(f.Fd())))
	}
	conn, err := gnft.New(connOpts...)
	if err != nil {
		s.closeNS()
		return nil, fmt.Errorf("failed to open nftables netlink socket: %w", err)
	}
	sock, err := openSocket(s.nsFD)
	if err != nil {
		_ = conn.CloseLasting()
		s.closeNS()
		return nil, err
	}
	s.conn, s.sock = conn, sock
	return s, nil
}

// Close is part of Interface.
func (s *Syncer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := errors.Join(s.conn.CloseLasting(), s.sock.close())
	s.closeNS()
	return err
}

func (s *Syncer) closeNS() {
	if s.nsFD != nil {
		_ = s.nsFD.Close()
		s.nsFD = nil
	}
}

// Delete removes table ip vxflow (uninstall); the next Sync recreates it.
func (s *Syncer) Delete() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.programmed, s.fullReason = nil, "table deleted by Delete"
	s.stale = make(map[string]time.Time)
	b := newBatch(s.table.Name, 0, 256)
	b.addTable()
	m := b.nft(nftMsgDelTable, flagRequest)
	b.str(1 /* NFTA_TABLE_NAME */, s.table.Name)
	b.msgEnd(m)
	if err := s.sock.send(b); err != nil {
		return fmt.Errorf("failed to delete table ip %s: %w", s.table.Name, err)
	}
	return nil
}

// Sync is part of Interface. It runs one transaction: full when the kernel's table is unknown or was
// changed by someone else, partial otherwise. A failed transaction changes nothing (nf_tables batches are
// atomic) and makes the next sync full. The transaction carries the generation it was computed against,
// so a concurrent writer makes it fail with ERESTART instead of being silently overwritten; it is then
// recomputed.
func (s *Syncer) Sync(ctx context.Context, desired *nftables.Ruleset, triggerTimes ...time.Time) (Result, error) {
	if g := desired.FlattenedFrom(); g != nil {
		desired = g // the same table, with the Service groups that make a partial sync cheap
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	res, err := s.sync(ctx, desired, start)
	res.Duration = time.Since(start)
	s.record(res, err, desired, triggerTimes)
	return res, err
}

func (s *Syncer) sync(ctx context.Context, desired *nftables.Ruleset, now time.Time) (Result, error) {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		gen, err := s.conn.GetGen()
		if err != nil {
			s.invalidate("failed to read the nf_tables generation")
			return Result{}, fmt.Errorf("failed to read the nf_tables generation: %w", err)
		}
		if s.programmed != nil && gen.ID != s.gen {
			s.invalidate(s.driftReason(gen))
		}
		if s.programmed != nil && desired == s.lastDesired && len(s.stale) == 0 {
			// The periodic drift check: the same desired state and nobody else wrote: nothing to do.
			return Result{}, nil
		}
		tx := newTransaction(s.table.Name, gen.ID, s.batchSizeHint(desired))
		var next *kernelState
		var res Result
		if s.programmed == nil {
			res.Full, res.Reason = true, s.fullReason
			next, err = s.buildFull(tx, desired, now)
		} else {
			next, err = s.buildPartial(tx, desired, now)
			if errors.Is(err, errNeedFull) {
				s.invalidate(err.Error())
				continue
			}
		}
		if err != nil {
			s.invalidate("previous sync failed")
			return res, err
		}
		res.Messages = tx.messages()
		res.ChainsWritten, res.ChainsDeleted, res.RulesWritten = tx.chainsWritten, tx.chainsDeleted, tx.rules
		res.ElementsAdded, res.ElementsDeleted = tx.elemsAdded, tx.elemsDeleted
		if res.Messages == 0 {
			s.programmed, s.lastDesired = next, desired
			return res, nil
		}
		built := time.Now()
		err = s.sock.send(tx.b)
		res.KernelDuration = time.Since(built)
		s.log.V(4).Info("Committed nftables transaction", "build", built.Sub(now), "commit", res.KernelDuration,
			"messages", res.Messages, "bytes", len(tx.b.buf))
		if res.Full {
			s.sizeHint = len(tx.b.buf) + len(tx.b.buf)/8
		}
		if errors.Is(err, unix.ERESTART) && attempt < 3 {
			s.log.V(2).Info("Retried nftables transaction", "reason", "another writer committed meanwhile")
			continue
		}
		if err != nil {
			s.invalidate("previous sync failed")
			return res, fmt.Errorf("failed to commit the nftables transaction for table ip %s: %w", s.table.Name, err)
		}
		// The batch carried gen.ID, so the kernel accepted it only as the very next generation.
		s.gen = gen.ID + 1
		s.programmed, s.lastDesired = next, desired
		for name := range tx.deletedStale {
			delete(s.stale, name)
		}
		for name, since := range tx.newStale {
			s.stale[name] = since
		}
		return res, nil
	}
}

// batchSizeHint guesses the size of a full batch so that the buffer is allocated once: the last full
// batch's size, or an estimate from the ruleset's counts (about 300 bytes per rule as encoded).
func (s *Syncer) batchSizeHint(desired *nftables.Ruleset) int {
	if s.programmed != nil {
		return 4096
	}
	if s.sizeHint > 0 {
		return s.sizeHint
	}
	sets, chains, rules, elements := desired.Counts()
	return 4096 + sets*256 + chains*120 + rules*320 + elements*90
}

// errNeedFull asks for a full sync instead of a partial one.
var errNeedFull = errors.New("the table's layout changed (a set's type, a base chain, or a chain's group)")

// invalidate forgets the kernel's state, so that the next transaction rewrites the whole table.
func (s *Syncer) invalidate(reason string) {
	if s.programmed != nil {
		s.log.Info("Forgot the programmed nftables state", "reason", reason)
	}
	s.programmed, s.fullReason, s.lastDesired = nil, reason, nil
}

// driftReason explains a generation change by someone else, for logs and the drift metric.
func (s *Syncer) driftReason(gen *gnft.Gen) string {
	t, err := s.conn.ListTableOfFamily(s.table.Name, gnft.TableFamilyIPv4)
	switch {
	case err != nil || t == nil:
		return "table deleted"
	case t.Use != s.programmed.objects+uint32(len(s.stale)):
		return fmt.Sprintf("table changed: %d chains and sets instead of %d", t.Use, s.programmed.objects+uint32(len(s.stale)))
	}
	return fmt.Sprintf("ruleset changed by %s[%d]", gen.ProcComm, gen.ProcPID)
}

// buildFull queues a transaction that makes the table exactly desired whatever it holds now: existing
// chains are flushed and refilled rather than deleted, so packets see the old or the new ruleset and
// never an empty one, and affinity sets whose definition is unchanged keep their entries.
func (s *Syncer) buildFull(tx *transaction, desired *nftables.Ruleset, now time.Time) (*kernelState, error) {
	next := newKernelState(desired, nil)
	// Every set with all its elements (the groups' go with their sets' own) and every chain, in creation order.
	flat := desired.Flat()
	wantChains := make(map[string]*nftables.Chain, len(flat.Chains))
	for _, c := range flat.Chains {
		wantChains[c.Name] = c
	}
	wantSets := make(map[string]*nftables.Set, len(flat.Sets))
	for _, st := range flat.Sets {
		wantSets[st.Name] = st
	}
	existingChains := map[string]*gnft.Chain{}
	existingSets := map[string]*gnft.Set{}
	if t, err := s.conn.ListTableOfFamily(s.table.Name, gnft.TableFamilyIPv4); err == nil && t != nil {
		chains, err := s.conn.ListChainsOfTableFamily(gnft.TableFamilyIPv4)
		if err != nil {
			return nil, fmt.Errorf("failed to list chains: %w", err)
		}
		for _, c := range chains {
			if c.Table != nil && c.Table.Name == s.table.Name {
				existingChains[c.Name] = c
			}
		}
		sets, err := s.conn.GetSets(s.table)
		if err != nil {
			return nil, fmt.Errorf("failed to list sets: %w", err)
		}
		for _, st := range sets {
			existingSets[st.Name] = st
		}
	}
	tx.addTable()

	// Flush every existing chain first, so that nothing references what is replaced or removed below.
	newStale := map[string]bool{}
	for name, c := range existingChains {
		want, ok := wantChains[name]
		switch {
		case ok && !sameHook(c, want):
			tx.delChain(name)
		case ok:
			tx.flushChain(name)
		case c.Hooknum != nil:
			tx.delChain(name) // a base chain is never referenced
		default:
			tx.flushChain(name)
			newStale[name] = true
		}
	}
	// Sets: keep those whose definition matches, emptied unless the packet path fills them.
	keptDynamic := map[string]bool{}
	for name, st := range existingSets {
		want, ok := wantSets[name]
		switch {
		case ok && matchesKernelSet(st, want):
			if want.Dynamic() {
				keptDynamic[name] = true
			} else {
				tx.flushSet(want)
			}
		default:
			tx.delSet(name)
		}
	}
	for _, st := range flat.Sets {
		_, exists := existingSets[st.Name]
		if !exists || (!keptDynamic[st.Name] && !matchesKernelSet(existingSets[st.Name], st)) {
			tx.addSet(st)
		}
	}
	for _, c := range flat.Chains {
		if ec, ok := existingChains[c.Name]; !ok || !sameHook(ec, c) {
			tx.addChain(c)
		}
	}
	for _, st := range flat.Sets {
		tx.addElements(st, st.Elements)
	}
	for _, c := range flat.Chains {
		tx.addRules(c)
		tx.chainsWritten++
	}
	// Chains already stale for long enough are deleted now; the rest wait.
	// The stale list is rebuilt from what the table really holds.
	for name := range s.stale {
		tx.deletedStale[name] = true
	}
	for name := range newStale {
		since, ok := s.stale[name]
		if !ok {
			since = now
		}
		if now.Sub(since) >= s.opts.StaleChainDelay {
			tx.delChain(name)
		} else {
			tx.newStale[name] = since
		}
	}
	next.objects = uint32(len(flat.Sets) + len(flat.Chains))
	return next, nil
}

// buildPartial queues only the difference between what was programmed and desired: the fixed chains and
// sets are compared unless they are the very same slices, Service groups only when the renderer did not
// reuse them, and elements by key. With a grouped Ruleset it costs a pass over the groups' pointers plus
// the changed Services, whatever the size of the table.
func (s *Syncer) buildPartial(tx *transaction, desired *nftables.Ruleset, now time.Time) (*kernelState, error) {
	old := s.programmed
	if old.grouped != desired.Grouped() {
		return nil, errNeedFull // the elements were tracked the other way
	}
	next := newKernelState(desired, old)
	sameChains, sameSets := sameSlice(old.fixedChains, desired.Chains), sameSlice(old.fixedSets, desired.Sets)
	var rewrite []*nftables.Chain
	var delSets []string
	gone := func(c *nftables.Chain) {
		if _, fixed := next.fixed[c.Name]; fixed {
			return // a hand-built Ruleset lists every chain as fixed
		}
		tx.flushChain(c.Name)
		tx.newStale[c.Name] = now
	}
	added := func(c *nftables.Chain) {
		tx.addChain(c)
		rewrite = append(rewrite, c)
		if _, wasStale := s.stale[c.Name]; wasStale {
			tx.deletedStale[c.Name] = true // it exists, empty: no longer stale
		}
	}
	// Sets that appear; a set whose definition changed needs the referencing rules rewritten too,
	// which only a full sync does.
	if !sameSets {
		for _, st := range desired.Sets {
			if o, ok := old.sets[st.Name]; ok {
				if !sameSetSpec(o.spec, st) {
					return nil, errNeedFull
				}
				continue
			}
			tx.addSet(st)
		}
		for name := range old.sets {
			if _, ok := next.sets[name]; !ok {
				delSets = append(delSets, name)
			}
		}
	}
	if !sameChains {
		for _, c := range desired.Chains {
			o, ok := old.fixed[c.Name]
			switch {
			case !ok && c.Base != nil:
				return nil, errNeedFull
			case !ok:
				added(c)
			case (o.Base == nil) != (c.Base == nil) || (o.Base != nil && *o.Base != *c.Base):
				return nil, errNeedFull
			case !o.Equal(c):
				tx.flushChain(c.Name)
				rewrite = append(rewrite, c)
			}
		}
		for name, o := range old.fixed {
			if _, ok := next.fixed[name]; !ok {
				if o.Base != nil {
					return nil, errNeedFull
				}
				gone(o)
			}
		}
	}
	// Service groups: skipped when reused, compared chain by chain and element by element otherwise.
	d := groupDiff{old: old, next: next, dels: map[string][]nftables.ElementKey{}, adds: map[string][]nftables.Element{}}
	var err error
	eachChangedGroup(old.services, desired.Services, func(o, g *nftables.ServiceRules) {
		if err != nil {
			return
		}
		oldChains := map[string]*nftables.Chain{}
		oldSets := map[string]*nftables.Set{}
		if o != nil {
			for _, c := range o.Chains {
				oldChains[c.Name] = c
			}
			for _, st := range o.Sets {
				oldSets[st.Name] = st
			}
		}
		if g != nil {
			for _, st := range g.Sets {
				if os, ok := oldSets[st.Name]; ok {
					if !sameSetSpec(os, st) {
						err = errNeedFull
						return
					}
					delete(oldSets, st.Name)
					continue
				}
				tx.addSet(st)
			}
			for _, c := range g.Chains {
				oc, ok := oldChains[c.Name]
				_, isFixed := next.fixed[c.Name]
				switch {
				case !ok && isFixed:
					err = errNeedFull
					return
				case !ok:
					added(c)
				case !oc.Equal(c):
					tx.flushChain(c.Name)
					rewrite = append(rewrite, c)
				}
				delete(oldChains, c.Name)
			}
		}
		for _, oc := range oldChains {
			gone(oc)
		}
		for name := range oldSets {
			delSets = append(delSets, name)
		}
		err = d.elements(o, g)
	})
	if err != nil {
		return nil, err
	}
	// Elements of the sets' own (all of them for a flat Ruleset): deletions first (including changed
	// verdicts), then additions.
	if !sameSets {
		for _, st := range desired.Sets {
			if st.Dynamic() {
				continue
			}
			ns := next.sets[st.Name]
			var dels []nftables.ElementKey
			var adds []nftables.Element
			if o, ok := old.sets[st.Name]; ok {
				for k, v := range o.elems {
					if nv, ok := ns.elems[k]; !ok || nv != v {
						dels = append(dels, k)
					}
				}
				for _, e := range st.Elements {
					if ov, ok := o.elems[e.Key()]; !ok || ov != e.Data() {
						adds = append(adds, e)
					}
				}
			} else {
				adds = st.Elements
			}
			if st.Interval && (len(dels) > 0 || len(adds) > 0) {
				// Interval sets are encoded as ranges; rewrite them whole.
				tx.flushSet(st)
				dels, adds = nil, st.Elements
			}
			tx.delElements(st, dels)
			tx.addElements(st, adds)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(d.dels)) {
		tx.delElements(old.sets[name].spec, d.dels[name])
	}
	for _, name := range slices.Sorted(maps.Keys(d.adds)) {
		tx.addElements(next.sets[name].spec, d.adds[name])
	}
	for _, c := range rewrite {
		tx.addRules(c)
		tx.chainsWritten++
	}
	// Sets that disappear, now that no rule references them.
	for _, name := range delSets {
		tx.delSet(name)
	}
	// Stale chains are deleted once they have been unreferenced long enough, unless they came back.
	for name, t := range s.stale {
		if !tx.deletedStale[name] && now.Sub(t) >= s.opts.StaleChainDelay {
			tx.delChain(name)
			tx.deletedStale[name] = true
		}
	}
	sets, chains, _, _ := desired.Counts()
	next.objects = uint32(sets + chains)
	return next, nil
}

// eachChangedGroup walks two lists of groups sorted as their Services (model.CompareServiceKeys) and calls fn for each Service whose group is
// not the same pointer in both: o is nil for a Service added, g for one deleted. Equal pointers cost one
// comparison each; keys are compared only where the lists differ.
func eachChangedGroup(old, next []*nftables.ServiceRules, fn func(o, g *nftables.ServiceRules)) {
	i, j := 0, 0
	for i < len(old) || j < len(next) {
		switch {
		case i < len(old) && j < len(next) && old[i] == next[j]:
			i, j = i+1, j+1
		case j == len(next):
			fn(old[i], nil)
			i++
		case i == len(old):
			fn(nil, next[j])
			j++
		default:
			switch c := model.CompareServiceKeys(old[i].Key, next[j].Key); {
			case c < 0:
				fn(old[i], nil)
				i++
			case c > 0:
				fn(nil, next[j])
				j++
			default:
				fn(old[i], next[j])
				i, j = i+1, j+1
			}
		}
	}
}

// groupDiff collects the element changes of the changed groups, by set: the keys to delete (including
// those whose data changes) and the elements to add.
type groupDiff struct {
	old, next *kernelState
	dels      map[string][]nftables.ElementKey
	adds      map[string][]nftables.Element
}

// elements compares the elements of one Service's old and new group (either may be nil).
func (d *groupDiff) elements(o, g *nftables.ServiceRules) error {
	type setKey struct {
		set string
		key nftables.ElementKey
	}
	had := map[setKey]nftables.ElementData{}
	if o != nil {
		o.EachElement(func(set string, e nftables.Element) { had[setKey{set, e.Key()}] = e.Data() })
	}
	var err error
	if g != nil {
		g.EachElement(func(set string, e nftables.Element) {
			k := setKey{set, e.Key()}
			if data, ok := had[k]; ok && data == e.Data() {
				delete(had, k)
				return
			}
			if _, ok := d.next.sets[set]; !ok {
				err = fmt.Errorf("failed to find set %s of %s's elements in the ruleset", set, g.Key)
				return
			}
			d.adds[set] = append(d.adds[set], e)
		})
	}
	for k := range had {
		if _, ok := d.old.sets[k.set]; ok { // a set deleted takes its elements with it
			d.dels[k.set] = append(d.dels[k.set], k.key)
		}
	}
	return err
}

// sameSlice reports whether two slices are the very same (same array and length).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// newKernelState indexes a ruleset as the state the kernel will hold once it is programmed, sharing the
// indexes of prev where the ruleset has the same fixed slices.
func newKernelState(r *nftables.Ruleset, prev *kernelState) *kernelState {
	k := &kernelState{grouped: r.Grouped(), services: r.Services, fixedChains: r.Chains, fixedSets: r.Sets}
	if prev != nil && sameSlice(prev.fixedChains, r.Chains) {
		k.fixed = prev.fixed
	} else {
		k.fixed = make(map[string]*nftables.Chain, len(r.Chains))
		for _, c := range r.Chains {
			k.fixed[c.Name] = c
		}
	}
	if prev != nil && sameSlice(prev.fixedSets, r.Sets) {
		k.sets = prev.sets
		return k
	}
	k.sets = make(map[string]*programmedSet, len(r.Sets))
	for _, st := range r.Sets {
		ps := &programmedSet{spec: st}
		if len(st.Elements) > 0 {
			ps.elems = make(map[nftables.ElementKey]nftables.ElementData, len(st.Elements))
			for _, e := range st.Elements {
				ps.elems[e.Key()] = e.Data()
			}
		}
		k.sets[st.Name] = ps
	}
	return k
}

// sameHook reports whether an existing chain is the desired base chain (or both are regular chains).
func sameHook(have *gnft.Chain, want *nftables.Chain) bool {
	if want.Base == nil || have.Hooknum == nil || have.Priority == nil {
		return want.Base == nil && have.Hooknum == nil
	}
	h, ok := hookNumbers[want.Base.Hook]
	return ok && *have.Hooknum == h && int(*have.Priority) == want.Base.Priority &&
		string(have.Type) == string(want.Base.Type)
}

// record updates the metrics and logs the outcome of a sync.
func (s *Syncer) record(res Result, err error, desired *nftables.Ruleset, triggerTimes []time.Time) {
	m := s.opts.Metrics
	if err != nil {
		s.log.Error(err, "Failed to sync nftables", "table", s.table.Name, "full", res.Full)
		if m != nil {
			m.SyncFailures.Inc()
		}
		return
	}
	if res.Full {
		s.log.Info("Synced nftables fully", "reason", res.Reason, "messages", res.Messages, "duration", res.Duration)
	} else if res.Messages > 0 {
		s.log.V(2).Info("Synced nftables", "reason", "changes", "messages", res.Messages,
			"chainsWritten", res.ChainsWritten, "elementsAdded", res.ElementsAdded,
			"elementsDeleted", res.ElementsDeleted, "duration", res.Duration)
	}
	if m == nil {
		return
	}
	m.observe(res, desired, triggerTimes)
}
