package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/ipam"
)

type requestQueue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// Pool is the controller's live view of which HostSubnet holds which subnet, fed straight by the HostSubnet
// and ClusterNetwork informers. Reconcilers read verdicts from it, and it wakes them whenever a verdict they
// report may have changed, so a reconcile never runs on a view older than the event that caused it.
// The allocator does not use it to hand out subnets: it re-reads the API (see subnetAllocator).
type Pool struct {
	mu      sync.Mutex
	ledger  *ipam.Ledger
	net     network
	present bool
	netErr  error
	// generation is the ClusterNetwork generation net was parsed from.
	generation int64
	// hsQueues and cnQueues are the work queues of the HostSubnet and ClusterNetwork controllers.
	hsQueues []requestQueue
	cnQueues []requestQueue
	// onFreed runs, outside the lock, when capacity came back (a holder left or the ranges changed).
	onFreed []func()
	synced  []toolscache.InformerSynced
}

// verdict is what the pool says about one HostSubnet.
type verdict struct {
	claim ipam.Claim
	// conflict is nil when the HostSubnet holds its subnet.
	conflict *ipam.ConflictError
	// noNetwork is set when there is no usable ClusterNetwork default to judge against.
	noNetwork bool
}

// poolSummary is what the ClusterNetwork status is computed from.
type poolSummary struct {
	present          bool
	netErr           error
	generation       int64
	ranges           []ipam.Range
	total, allocated uint64
	// losers are the refused HostSubnets, sorted by name.
	losers []refused
}

// refused is one HostSubnet the pool refused, and why.
type refused struct {
	name   string
	subnet netip.Prefix
	reason ipam.Reason
}

// NewPool returns an empty pool; Register connects it to the informers.
func NewPool() *Pool {
	l, _ := ipam.NewLedger(nil, nil) // No ranges: nothing to validate.
	return &Pool{ledger: l}
}

// Register adds the pool's handlers to the HostSubnet and ClusterNetwork informers of c.
func (p *Pool) Register(ctx context.Context, c cache.Cache) error {
	cnInf, err := c.GetInformer(ctx, &vxflowv1alpha1.ClusterNetwork{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("failed to get the ClusterNetwork informer: %w", err)
	}
	reg, err := cnInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.clusterNetworkChanged(obj, false) },
		UpdateFunc: func(_, obj any) { p.clusterNetworkChanged(obj, false) },
		DeleteFunc: func(obj any) { p.clusterNetworkChanged(obj, true) },
	})
	if err != nil {
		return fmt.Errorf("failed to watch ClusterNetworks: %w", err)
	}
	p.synced = append(p.synced, reg.HasSynced)
	hsInf, err := c.GetInformer(ctx, &vxflowv1alpha1.HostSubnet{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("failed to get the HostSubnet informer: %w", err)
	}
	reg, err = hsInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.hostSubnetChanged(obj) },
		UpdateFunc: func(_, obj any) { p.hostSubnetChanged(obj) },
		DeleteFunc: p.hostSubnetDeleted,
	})
	if err != nil {
		return fmt.Errorf("failed to watch HostSubnets: %w", err)
	}
	p.synced = append(p.synced, reg.HasSynced)
	return nil
}

// Synced reports whether the pool has seen every object the informers listed at start; verdicts given
// before that could favour a younger HostSubnet whose older rival was not delivered yet.
func (p *Pool) Synced() bool {
	if len(p.synced) == 0 {
		return false
	}
	for _, s := range p.synced {
		if !s() {
			return false
		}
	}
	return true
}

// OnFreed registers fn to run whenever capacity may have come back.
func (p *Pool) OnFreed(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onFreed = append(p.onFreed, fn)
}

// hostSubnetSource feeds the HostSubnet controller with the names whose verdict may have changed.
func (p *Pool) hostSubnetSource() source.Source {
	return source.Func(func(ctx context.Context, q requestQueue) error {
		p.addQueue(ctx, &p.hsQueues, q)
		return nil
	})
}

// clusterNetworkSource wakes the ClusterNetwork controller whenever capacity or conflicts may have changed.
func (p *Pool) clusterNetworkSource() source.Source {
	return source.Func(func(ctx context.Context, q requestQueue) error {
		p.addQueue(ctx, &p.cnQueues, q)
		return nil
	})
}

func (p *Pool) addQueue(ctx context.Context, list *[]requestQueue, q requestQueue) {
	p.mu.Lock()
	*list = append(*list, q)
	p.mu.Unlock()
	go func() {
		<-ctx.Done()
		p.mu.Lock()
		*list = slices.DeleteFunc(*list, func(x requestQueue) bool { return x == q })
		p.mu.Unlock()
	}()
}

func (p *Pool) clusterNetworkChanged(obj any, deleted bool) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj, deleted = d.Obj, true
	}
	cn, ok := obj.(*vxflowv1alpha1.ClusterNetwork)
	if !ok || cn.Name != vxflowv1alpha1.ClusterNetworkName {
		return
	}
	p.mu.Lock()
	if !deleted && p.present && cn.Generation == p.generation {
		// A status write (ours) or a metadata change: the ranges are what they were.
		p.mu.Unlock()
		return
	}
	before := p.loserSet()
	var n network
	var err error
	if !deleted {
		n, err = parseNetwork(&cn.Spec)
	}
	wasPresent := p.present
	p.present, p.netErr, p.generation = !deleted, err, cn.Generation
	if err == nil {
		p.net = n
	} else {
		p.net = network{}
	}
	if serr := p.ledger.SetRanges(p.net.ranges); serr != nil {
		// parseNetwork validated the same ranges; keep the error visible all the same.
		p.netErr = serr
	}
	names := p.changedLosers(before, netip.Prefix{}, true)
	if wasPresent != p.present || err != nil {
		// Every verdict's wording depends on whether there is a network at all.
		for _, c := range p.ledger.Claims() {
			names = append(names, c.Name)
		}
	}
	p.mu.Unlock()
	p.notify(names, true)
}

func (p *Pool) hostSubnetChanged(obj any) {
	hs, ok := obj.(*vxflowv1alpha1.HostSubnet)
	if !ok {
		return
	}
	c := claimOf(hs)
	p.mu.Lock()
	old, had := p.ledger.Claim(c.Name)
	if had && old == c {
		p.mu.Unlock()
		return
	}
	before := p.loserSet()
	_, usedBefore := p.ledger.Capacity()
	p.ledger.Upsert(c)
	_, usedAfter := p.ledger.Capacity()
	names := append(p.changedLosers(before, c.Subnet, false), c.Name)
	if had && old.Subnet != c.Subnet {
		names = append(names, p.changedLosers(before, old.Subnet, false)...)
	}
	p.mu.Unlock()
	p.notify(names, usedAfter < usedBefore)
}

func (p *Pool) hostSubnetDeleted(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	hs, ok := obj.(*vxflowv1alpha1.HostSubnet)
	if !ok {
		return
	}
	p.mu.Lock()
	old, had := p.ledger.Claim(hs.Name)
	if !had {
		p.mu.Unlock()
		return
	}
	before := p.loserSet()
	p.ledger.Remove(hs.Name)
	names := p.changedLosers(before, old.Subnet, false)
	p.mu.Unlock()
	p.notify(names, true)
}

func (p *Pool) loserSet() map[string]struct{} {
	out := map[string]struct{}{}
	for _, n := range p.ledger.Losers() {
		out[n] = struct{}{}
	}
	return out
}

// changedLosers lists the claims whose verdict may read differently now: those that became or stopped being
// losers, and losers (before or now) whose subnet overlaps near, or every loser when all is set.
func (p *Pool) changedLosers(before map[string]struct{}, near netip.Prefix, all bool) []string {
	var names []string
	now := p.loserSet()
	touches := func(n string) bool {
		if all {
			return true
		}
		c, _ := p.ledger.Claim(n)
		return near.IsValid() && c.Subnet.IsValid() && c.Subnet.Overlaps(near)
	}
	for n := range before {
		if _, still := now[n]; !still || touches(n) {
			names = append(names, n)
		}
	}
	for n := range now {
		if _, was := before[n]; !was || touches(n) {
			names = append(names, n)
		}
	}
	return names
}

// notify wakes the controllers and, when capacity may have come back, the allocator.
func (p *Pool) notify(names []string, freed bool) {
	p.mu.Lock()
	hs, cn, hooks := slices.Clone(p.hsQueues), slices.Clone(p.cnQueues), slices.Clone(p.onFreed)
	total, used := p.ledger.Capacity()
	p.mu.Unlock()
	subnetsTotal.Set(float64(total))
	subnetsAllocated.Set(float64(used))
	for _, q := range hs {
		for _, n := range names {
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: n}})
		}
	}
	for _, q := range cn {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: vxflowv1alpha1.ClusterNetworkName}})
	}
	if freed {
		for _, fn := range hooks {
			fn()
		}
	}
}

// Verdict returns what the pool says about the HostSubnet called name; ok is false when the pool has not
// seen it.
func (p *Pool) Verdict(name string) (verdict, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.ledger.Claim(name)
	if !ok {
		return verdict{}, false
	}
	v := verdict{claim: c, noNetwork: !p.present || p.netErr != nil}
	v.conflict, _ = p.ledger.Verdict(name)
	return v, true
}

// Summary returns capacity, ranges and refused HostSubnets for the ClusterNetwork status.
func (p *Pool) Summary() poolSummary {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := poolSummary{present: p.present, netErr: p.netErr, generation: p.generation, ranges: p.ledger.Ranges()}
	s.total, s.allocated = p.ledger.Capacity()
	for _, n := range p.ledger.Losers() {
		c, _ := p.ledger.Claim(n)
		ce, _ := p.ledger.Verdict(n)
		r := refused{name: n, subnet: c.Subnet, reason: ipam.ReasonOverlap}
		if ce != nil {
			r.reason = ce.Reason
		}
		s.losers = append(s.losers, r)
	}
	return s
}

// Network returns the parsed ClusterNetwork, and false when there is none usable.
func (p *Pool) Network() (network, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.net, p.present && p.netErr == nil
}
