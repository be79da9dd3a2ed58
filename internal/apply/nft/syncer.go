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

// Syncer programs table ip vxflow in one network namespace over netlink (google/nftables), keeping an
// in-memory copy of what it programmed so that a partial sync sends only changed elements and chains.
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

// kernelState is what the table holds: desired chains by name and sets with their elements.
type kernelState struct {
	// fixed are the chains outside any Service group, by name.
	fixed map[string]*nftables.Chain
	// groups are the Services' chains and sets, by Service; a group the renderer reused is the same
	// pointer, which is how a partial sync skips unchanged Services without comparing their rules.
	groups map[string]*nftables.ServiceRules
	// sets are the sets outside any group, with their elements.
	sets map[string]*programmedSet
	// objects is the number of chains and sets, compared with the table's use count to notice deletions.
	objects uint32
	// byGroup is true when the endpoint maps' elements are tracked through the Service groups (a rendered
	// Ruleset) rather than in sets (a hand-built one).
	byGroup bool
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
	m := b.nft(2 /* NFT_MSG_DELTABLE */, flagRequest, "delete table", s.table.Name)
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
	next := newKernelState(desired)
	wantChains := make(map[string]*nftables.Chain, len(desired.Chains))
	for _, c := range desired.Chains {
		wantChains[c.Name] = c
	}
	wantSets := make(map[string]*nftables.Set, len(desired.Sets))
	for _, st := range desired.Sets {
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
	for _, st := range desired.Sets {
		_, exists := existingSets[st.Name]
		if !exists || (!keptDynamic[st.Name] && !matchesKernelSet(existingSets[st.Name], st)) {
			tx.addSet(st)
		}
	}
	for _, c := range desired.Chains {
		if ec, ok := existingChains[c.Name]; !ok || !sameHook(ec, c) {
			tx.addChain(c)
		}
	}
	for _, st := range desired.Sets {
		tx.addElements(st, st.Elements)
	}
	for _, c := range desired.Chains {
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
	next.objects = uint32(len(desired.Chains) + len(desired.Sets))
	return next, nil
}

// buildPartial queues only the difference between what was programmed and desired: the fixed chains and
// sets are compared, Service groups only when the renderer did not reuse them, and map elements by key.
func (s *Syncer) buildPartial(tx *transaction, desired *nftables.Ruleset, now time.Time) (*kernelState, error) {
	old := s.programmed
	next := newKernelState(desired)
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
	for _, st := range desired.FixedSets() {
		if o, ok := old.sets[st.Name]; ok {
			if !sameSetSpec(o.spec, st) {
				return nil, errNeedFull
			}
			continue
		}
		tx.addSet(st)
	}
	for _, c := range desired.FixedChains() {
		o, ok := old.fixed[c.Name]
		switch {
		case !ok && (c.Base != nil || inOldGroup(old, c.Name)):
			// A chain moving between the fixed part and a Service group (a hand-built Ruleset after a
			// rendered one) is rare enough to leave to a full sync.
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
	for name := range old.sets {
		if _, ok := next.sets[name]; !ok {
			delSets = append(delSets, name)
		}
	}
	// Service groups: skipped when reused, compared chain by chain otherwise.
	for _, g := range desired.Services {
		o := old.groups[g.Key]
		if o == g {
			continue
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
		for _, st := range g.Sets {
			if os, ok := oldSets[st.Name]; ok {
				if !sameSetSpec(os, st) {
					return nil, errNeedFull
				}
				delete(oldSets, st.Name)
				continue
			}
			tx.addSet(st)
		}
		for _, c := range g.Chains {
			oc, ok := oldChains[c.Name]
			_, wasFixed := old.fixed[c.Name]
			switch {
			case !ok && wasFixed:
				return nil, errNeedFull
			case !ok:
				added(c)
			case !oc.Equal(c):
				tx.flushChain(c.Name)
				rewrite = append(rewrite, c)
			}
			delete(oldChains, c.Name)
		}
		for _, oc := range oldChains {
			gone(oc)
		}
		for name := range oldSets {
			delSets = append(delSets, name)
		}
	}
	for key, o := range old.groups {
		if _, ok := next.groups[key]; !ok {
			for _, c := range o.Chains {
				gone(c)
			}
			for _, st := range o.Sets {
				if _, fixed := next.sets[st.Name]; !fixed {
					delSets = append(delSets, st.Name)
				}
			}
		}
	}
	// Elements of the shared maps and sets: deletions first (including changed verdicts), then additions.
	// The endpoint maps' elements are compared per changed Service group instead.
	if old.byGroup != next.byGroup && (old.hasEndpointMap() || next.hasEndpointMap()) {
		return nil, errNeedFull // the elements were tracked the other way
	}
	epDels, epAdds := endpointMapDiff(old, next, desired)
	for _, st := range desired.FixedSets() {
		if st.Dynamic() {
			continue
		}
		if next.byGroup && st.Type == nftables.SetTypeEndpointMap {
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
	for _, name := range slices.Sorted(maps.Keys(epDels)) {
		tx.delElements(old.sets[name].spec, epDels[name])
	}
	for _, name := range slices.Sorted(maps.Keys(epAdds)) {
		tx.addElements(next.sets[name].spec, epAdds[name])
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
	next.objects = uint32(len(desired.Chains) + len(desired.Sets))
	return next, nil
}

// endpointMapDiff compares the endpoint map elements of the Service groups that changed (a reused group has
// the same elements), returning the keys to delete and the elements to add, by map. An element whose data
// changed is in both.
func endpointMapDiff(old, next *kernelState, desired *nftables.Ruleset) (map[string][]nftables.ElementKey, map[string][]nftables.Element) {
	if !next.byGroup {
		return nil, nil
	}
	isMap := func(k *kernelState, set string) bool {
		ps, ok := k.sets[set]
		return ok && ps.spec.Type == nftables.SetTypeEndpointMap
	}
	type held struct {
		set  string
		data nftables.ElementData
	}
	dels, adds := map[string][]nftables.ElementKey{}, map[string][]nftables.Element{}
	for _, g := range desired.Services {
		o := old.groups[g.Key]
		if o == g {
			continue
		}
		had := map[nftables.ElementKey]held{}
		if o != nil {
			o.EachElement(func(set string, e nftables.Element) {
				if isMap(old, set) {
					had[e.Key()] = held{set, e.Data()}
				}
			})
		}
		g.EachElement(func(set string, e nftables.Element) {
			if !isMap(next, set) {
				return
			}
			if h, ok := had[e.Key()]; ok && h.set == set && h.data == e.Data() {
				delete(had, e.Key())
				return
			}
			adds[set] = append(adds[set], e)
		})
		for k, h := range had {
			dels[h.set] = append(dels[h.set], k)
		}
	}
	for key, o := range old.groups {
		if _, ok := next.groups[key]; ok {
			continue
		}
		o.EachElement(func(set string, e nftables.Element) {
			if isMap(old, set) {
				dels[set] = append(dels[set], e.Key())
			}
		})
	}
	return dels, adds
}

// hasEndpointMap reports whether the state holds an endpoint map.
func (k *kernelState) hasEndpointMap() bool {
	for _, ps := range k.sets {
		if ps.spec.Type == nftables.SetTypeEndpointMap {
			return true
		}
	}
	return false
}

// inOldGroup reports whether a chain belonged to one of the previously programmed Service groups.
func inOldGroup(old *kernelState, name string) bool {
	for _, g := range old.groups {
		for _, c := range g.Chains {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// newKernelState indexes a ruleset as the state the kernel will hold once it is programmed.
func newKernelState(r *nftables.Ruleset) *kernelState {
	fixedChains, fixedSets := r.FixedChains(), r.FixedSets()
	k := &kernelState{
		fixed:   make(map[string]*nftables.Chain, len(fixedChains)),
		groups:  make(map[string]*nftables.ServiceRules, len(r.Services)),
		sets:    make(map[string]*programmedSet, len(fixedSets)),
		byGroup: r.Services != nil,
	}
	for _, c := range fixedChains {
		k.fixed[c.Name] = c
	}
	for _, g := range r.Services {
		k.groups[g.Key] = g
	}
	for _, st := range fixedSets {
		if k.byGroup && st.Type == nftables.SetTypeEndpointMap {
			k.sets[st.Name] = &programmedSet{spec: st}
			continue
		}
		ps := &programmedSet{spec: st, elems: make(map[nftables.ElementKey]nftables.ElementData, len(st.Elements))}
		for _, e := range st.Elements {
			ps.elems[e.Key()] = e.Data()
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
