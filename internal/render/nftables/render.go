package nftables

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vxflow/vxflow/internal/model"
)

// Render returns the complete desired table ip vxflow for a validated ServiceSet. It is pure and
// deterministic: the same set always renders the same Ruleset.
//
// The layout follows kube-proxy's nftables mode (peers.md §1): verdict maps keyed by address . protocol .
// port dispatch ClusterIPs, ExternalIPs and LoadBalancer IPs (service-ips) and NodePorts (service-nodeports)
// to per-service-port chains, which pick a per-endpoint chain that DNATs. Two things differ on purpose:
//
//   - Load balancing uses no set at all: a service chain tries endpoint i of n with `numgen random mod
//     (n-i) 0`, which picks each endpoint with probability 1/n (iptables' statistic cascade). kube-proxy's
//     one anonymous numgen map per Service is what makes its transactions slow at scale (peers.md §7).
//   - Masquerade follows the datapath: on the userspace datapath every DNATed connection from a pod is
//     masqueraded, because OVS cannot see the host's conntrack and replies would bypass it.
//
// Egress from the cluster CIDRs to anywhere outside them is masqueraded to the node IP (OpenShift's
// OPENSHIFT-MASQUERADE), and VXLAN's UDP port is accepted and not tracked.
func Render(in *model.ServiceSet) *Ruleset {
	return NewRenderer(Options{}).Render(in)
}

// Options change how a Renderer lays out the per-Service rules.
type Options struct {
	// InlineEndpoints DNATs directly from a Service's policy chain (`numgen random mod 3 0 meta l4proto
	// tcp dnat to ...`) instead of going to one chain per endpoint, when no endpoint chain is needed: on
	// the userspace datapath (where hairpin traffic is masqueraded as DNATed pod traffic anyway) and
	// without session affinity (which records the choice per endpoint). It cuts the kernel objects of a
	// 10,000 x 10 table from 110,000 chains and 310,000 rules to 10,000 and 110,000, which makes a full
	// sync about 2.5 times and a change about 3 times faster in the kernel (docs/performance.md).
	InlineEndpoints bool
	// EndpointMap DNATs through one shared data map instead of per-endpoint rules or chains, when no
	// endpoint chain is needed (as for InlineEndpoints): each Service port's policy chain gets a base index
	// K and the single rule `meta l4proto tcp dnat ip to numgen random mod N offset K map
	// @service-endpoints`, and the map holds K+i : address . port for its N endpoints. An endpoint
	// replaced by another (same count) is then two element updates of a data map, which nf_tables commits
	// without re-validating the table; a count change rewrites that one rule. Bases are multiples of
	// EndpointMapStride, so a port with more endpoints than that falls back to InlineEndpoints' rules.
	EndpointMap bool
	// SharedInput promises that the Services given to the Renderer are never modified afterwards: a
	// changed Service comes as a new value with new slices, as model.ServiceBuilder makes them. The
	// Renderer then keeps each Service as it is, sharing its slices with the caller, instead of a deep
	// copy for the next comparison (about a tenth of what a Renderer retains, a quarter with EndpointMap).
	// It changes nothing in the rules.
	SharedInput bool
}

// EndpointMapShards is the number of endpoint maps the Service ports are spread over (by base index).
// Every rule that looks a map up is a binding of it, and the kernel checks each element added to a map
// against each of its bindings (and each binding against every element), so one map for 10,000 Service
// ports makes a full sync quadratic (a minute at 10,000 x 10); 1,024 maps keep each to a few bindings and
// a few hundred elements, while few enough sets keep the kernel's linear lookup of sets by name cheap.
const EndpointMapShards = 1024

// endpointMapNames are the shards' map names, shared by every element and rule that names one.
var endpointMapNames = func() []string {
	names := make([]string, EndpointMapShards)
	for i := range names {
		names[i] = serviceEndpointsMap + "-" + strconv.Itoa(i)
	}
	return names
}()

// endpointMapName names the endpoint map of a shard.
func endpointMapName(shard uint32) string {
	if int(shard) < len(endpointMapNames) {
		return endpointMapNames[shard]
	}
	return serviceEndpointsMap + "-" + strconv.Itoa(int(shard))
}

// EndpointMapStride is the distance between two Service ports' base indexes in the endpoint map, hence the
// most endpoints one Service port can have there.
const EndpointMapStride = 4096

// maxEndpointMapID is the largest base index divided by the stride that still fits numgen's 32 bits.
const maxEndpointMapID = 1<<32/EndpointMapStride - 1

// Renderer renders like Render but remembers what it rendered for each Service, and reuses it (the same
// *ServiceRules, chains and sets) when the Service is Equal to its previous version, so that a change to
// one Service costs a pass over the list plus that Service. The applier recognises reused groups by
// pointer and skips them. It keeps a deep copy of each Service (unless Options.SharedInput), so the caller
// may reuse its ServiceSet.
// A Renderer is not safe for concurrent use.
type Renderer struct {
	opts Options
	node model.ServiceNode
	// valid is false until the first render and after a change of node facts: everything is re-rendered.
	valid bool
	// renders counts RenderGrouped calls; a group's renderedAt tells whether this render created it.
	renders uint64
	// prev are the groups of the last render, sorted by Key.
	prev []*ServiceRules
	// fixedChains and baseSets are what depends on the node alone; fixedSets adds the endpoint maps in use.
	fixedChains []*Chain
	baseSets    []*Set
	fixedSets   []*Set
	// shards counts the policy chains per endpoint map shard; shardSets are the shards' (empty) sets.
	shards    map[uint32]int
	shardSets map[uint32]*Set
	// claims holds, for each key of a shared set other than the endpoint maps, the Service whose
	// element the set holds (the first by Key); contested lists every claimant of the rare keys that
	// several Services claim.
	claims    map[claimKey]*svcOwner
	contested map[claimKey][]*svcOwner
	// svcCounts are the totals of the groups in prev.
	svcCounts counts
	owners    uint64
	ids       endpointIDs
	// fallbacks counts RenderGroupedChanged calls whose changes did not fit (for tests).
	fallbacks int
}

// svcOwner is a Renderer's record of one Service across its versions: the identity that claims keys.
type svcOwner struct {
	key string
	// seq orders two owners of the same key (only with duplicate Services in the input).
	seq uint64
	// cur is the Service's current group, nil once the Service is gone.
	cur *ServiceRules
}

// before reports whether o comes before p in the Services order, which decides who holds a shared key.
func (o *svcOwner) before(p *svcOwner) bool {
	if c := model.CompareServiceKeys(o.key, p.key); c != 0 {
		return c < 0
	}
	return o.seq < p.seq
}

// claimKey identifies an element's key in one shared set, compactly.
type claimKey struct {
	set   uint8
	proto model.L4Proto
	bits  int8
	port  uint16
	addr  [4]byte
	index uint32
}

// sharedSetIDs numbers the shared sets whose keys Services can claim twice.
var sharedSetIDs = map[string]uint8{
	clusterIPsSet: 1, serviceIPsMap: 2, serviceNodePortsMap: 3, noEndpointServicesMap: 4,
	noEndpointNodePortsMap: 5, firewallIPsMap: 6,
}

// newClaimKey returns the claim key of an element, false for the endpoint maps, whose keys are unique by
// construction.
func newClaimKey(e *setElement) (claimKey, bool) {
	id, ok := sharedSetIDs[e.set]
	if !ok {
		return claimKey{}, false
	}
	if e.full != nil {
		k := claimKey{set: id, proto: e.full.Proto, bits: int8(e.full.Prefix.Bits()), port: e.full.Port, index: e.full.Index}
		if a := e.full.Prefix.Addr(); a.Is4() {
			k.addr = a.As4()
		}
		return k, true
	}
	return claimKey{set: id, proto: e.proto, bits: e.bits, port: e.port, addr: e.addr, index: e.index}, true
}

// endpointIDs hands out the endpoint map's base indexes (divided by the stride) by policy chain name and
// keeps them while a group uses the chain, so that an unchanged Service keeps its elements and its rule.
type endpointIDs struct {
	byChain map[string]*endpointID
	next    uint32
	free    []uint32
}

// endpointID is one chain's id and the number of groups using it (the old and new version of a Service
// while it is re-rendered).
type endpointID struct {
	id   uint32
	refs int
}

// get returns the chain's id, allocating one if needed; false when all are taken.
func (a *endpointIDs) get(chain string) (uint32, bool) {
	if e, ok := a.byChain[chain]; ok {
		e.refs++
		return e.id, true
	}
	if a.byChain == nil {
		a.byChain = make(map[string]*endpointID)
	}
	var id uint32
	switch {
	case len(a.free) > 0:
		id, a.free = a.free[len(a.free)-1], a.free[:len(a.free)-1]
	case a.next < maxEndpointMapID:
		a.next++
		id = a.next
	default:
		return 0, false
	}
	a.byChain[chain] = &endpointID{id: id, refs: 1}
	return id, true
}

// release drops one use of the chain's id and frees the id with the last one.
func (a *endpointIDs) release(chain string) {
	e, ok := a.byChain[chain]
	if !ok {
		return
	}
	if e.refs--; e.refs <= 0 {
		delete(a.byChain, chain)
		a.free = append(a.free, e.id)
	}
}

// NewRenderer returns a Renderer with an empty cache.
func NewRenderer(opts Options) *Renderer {
	return &Renderer{opts: opts}
}

// Render returns the complete desired table for in in the flat shape; see the package-level Render. It
// costs O(table) even when little changed: the agent uses RenderGrouped.
func (rr *Renderer) Render(in *model.ServiceSet) *Ruleset {
	return rr.RenderGrouped(in).Flat()
}

// RenderGrouped returns the complete desired table for in in the grouped shape (see Ruleset): the groups
// of unchanged Services are the ones the previous call returned, and the call costs a pass over the
// Services (comparing each with its previous version) plus the work for those that changed, which lets
// one endpoint change reach the kernel in milliseconds at 10,000 Services. The Services must be sorted by
// namespace and name (model.ServiceSet's order); another order gives the same table, only more slowly.
func (rr *Renderer) RenderGrouped(in *model.ServiceSet) *Ruleset {
	rr.prepare(in)
	out, todo, removed, ok := rr.match(in.Services, nil)
	if !ok {
		// Not sorted by key: match again through a sorted view (slower, same result).
		order := make([]*model.Service, len(in.Services))
		for i := range in.Services {
			order[i] = &in.Services[i]
		}
		slices.SortStableFunc(order, model.CompareServices)
		out, todo, removed, _ = rr.match(in.Services, order)
	}
	return rr.finish(out, todo, removed)
}

// RenderGroupedChanged is RenderGrouped for a caller that knows which Services changed since its previous
// render: changed must hold the key (namespace/name) of every Service added, deleted or modified since the
// input of the Renderer's previous call, in any order, and every other Service must be Equal to its
// previous version (model.ServiceBuilder.Update reports exactly these keys). It then touches only those
// Services, in O(len(changed) log n) plus a copy of the list of groups, which is what makes a change
// cheap at 10,000 Services: comparing every Service reads all of them from memory (milliseconds once they
// are out of the CPU's caches). A key listed that did not change costs a comparison; a Service left out
// keeps its previous rules, so when in doubt (after an error, periodically) call RenderGrouped. The
// Services must be sorted by key; the first call, new node facts, or changes that do not fit the previous
// list fall back to RenderGrouped.
func (rr *Renderer) RenderGroupedChanged(in *model.ServiceSet, changed []string) *Ruleset {
	if !rr.valid || !rr.node.Equal(&in.Node) {
		return rr.RenderGrouped(in)
	}
	out, todo, removed, ok := rr.matchChanged(in.Services, changed)
	if !ok {
		rr.fallbacks++
		return rr.RenderGrouped(in)
	}
	rr.prepare(in)
	return rr.finish(out, todo, removed)
}

// prepare starts a render: new node facts re-render everything.
func (rr *Renderer) prepare(in *model.ServiceSet) {
	rr.renders++
	if !rr.valid || !rr.node.Equal(&in.Node) {
		rr.node = in.Node
		rr.node.IPs, rr.node.ClusterCIDRs = slices.Clone(in.Node.IPs), slices.Clone(in.Node.ClusterCIDRs)
		rr.renderFixed()
		rr.valid = false // re-render every Service
	}
	if rr.claims == nil {
		rr.claims = make(map[claimKey]*svcOwner)
		rr.contested = make(map[claimKey][]*svcOwner)
		rr.shards = make(map[uint32]int)
		rr.shardSets = make(map[uint32]*Set)
	}
}

// finish renders the Services match found changed, updates the claims on shared keys, the endpoint map
// shards and the counts, and returns the grouped Ruleset.
func (rr *Renderer) finish(out []*ServiceRules, todo []toRender, removed []*ServiceRules) *Ruleset {
	var fresh []*ServiceRules
	for _, t := range todo {
		g := renderService(&rr.node, t.svc, rr.opts, &rr.ids)
		g.renderedAt = rr.renders
		if t.cand != nil {
			g.owner = t.cand.owner
		} else {
			rr.owners++
			g.owner = &svcOwner{key: g.Key, seq: rr.owners}
		}
		g.owner.cur = g
		out[t.pos] = g
		fresh = append(fresh, g)
	}
	rr.valid = true

	// Release what the old versions held, then let the new ones claim; Services that gain or lose a
	// shared key to another one get a new version of their group.
	var affected map[*svcOwner]bool
	touch := func(o *svcOwner) {
		if affected == nil {
			affected = make(map[*svcOwner]bool)
		}
		affected[o] = true
	}
	shardsChanged := false
	for _, o := range removed {
		if o.owner.cur == o {
			o.owner.cur = nil // deleted, not replaced
		}
		for i := range o.elements {
			if ck, ok := newClaimKey(&o.elements[i]); ok {
				rr.release(ck, o.owner, touch)
			}
		}
		for j, c := range o.endpointMapChains {
			rr.ids.release(c)
			shard := o.endpointMapShards[j]
			if rr.shards[shard]--; rr.shards[shard] <= 0 {
				delete(rr.shards, shard)
				shardsChanged = true
			}
		}
		rr.svcCounts.add(o.counts, -1)
	}
	for _, g := range fresh {
		for i := range g.elements {
			if ck, ok := newClaimKey(&g.elements[i]); ok {
				rr.claim(ck, g.owner, touch)
			}
		}
		for _, shard := range g.endpointMapShards {
			if rr.shards[shard]++; rr.shards[shard] == 1 {
				shardsChanged = true
			}
		}
	}
	for _, g := range fresh {
		rr.shadow(g)
		rr.svcCounts.add(g.counts, 1)
	}
	for o := range affected {
		g := o.cur
		if g == nil || g.renderedAt == rr.renders {
			continue // gone, or fresh and already up to date
		}
		ng := *g
		ng.elements = slices.Clone(g.elements)
		ng.renderedAt = rr.renders
		if !rr.shadow(&ng) {
			continue
		}
		rr.svcCounts.add(g.counts, -1)
		rr.svcCounts.add(ng.counts, 1)
		o.cur = &ng
		if i := slices.Index(out, g); i >= 0 { // rare: only Services sharing a key
			out[i] = &ng
		}
	}
	if shardsChanged || rr.fixedSets == nil {
		rr.rebuildFixedSets()
	}
	rr.prev = out
	return &Ruleset{Sets: rr.fixedSets, Chains: rr.fixedChains, Services: out, grouped: true, svcCounts: rr.svcCounts}
}

// toRender is a Service that RenderGrouped must render, at position pos of its output, with the group of
// its previous version if any.
type toRender struct {
	pos  int
	svc  *model.Service
	cand *ServiceRules
}

// match pairs the Services, in order (or in the order of the pointers in sorted when not nil), with the
// previous groups by key: it returns the output with the reusable groups in place, the Services to render,
// and the previous groups that are replaced or gone. It returns false, having changed nothing, when the
// Services are not sorted by key (a merge of two sorted lists needs both sorted).
func (rr *Renderer) match(in []model.Service, sorted []*model.Service) (out []*ServiceRules, todo []toRender, removed []*ServiceRules, ok bool) {
	out = make([]*ServiceRules, len(in))
	prev, k := rr.prev, 0
	for i := range in {
		s := &in[i]
		if sorted != nil {
			s = sorted[i]
		}
		var cand *ServiceRules
		for k < len(prev) {
			c := model.CompareServices(&prev[k].svc, s)
			if c < 0 {
				removed = append(removed, prev[k])
				k++
				continue
			}
			if c == 0 {
				cand = prev[k]
				k++
			}
			break
		}
		if cand != nil && rr.valid && cand.svc.Equal(s) {
			out[i] = cand
			continue
		}
		if cand == nil && sorted == nil && i > 0 && model.CompareServices(&in[i-1], s) >= 0 {
			return nil, nil, nil, false
		}
		if cand != nil {
			removed = append(removed, cand)
		}
		todo = append(todo, toRender{pos: i, svc: s, cand: cand})
	}
	removed = append(removed, prev[k:]...)
	return out, todo, removed, true
}

// matchChanged is match for RenderGroupedChanged: the previous groups are copied to the output in runs,
// and only the Services named in changed are looked at. It returns false, having changed nothing, when the
// input does not fit the previous list and changed (a key left out, or Services not sorted).
func (rr *Renderer) matchChanged(in []model.Service, changed []string) (out []*ServiceRules, todo []toRender, removed []*ServiceRules, ok bool) {
	keys := slices.Clone(changed)
	slices.SortFunc(keys, model.CompareServiceKeys)
	keys = slices.Compact(keys)
	prev := rr.prev
	out = make([]*ServiceRules, len(in))
	pi, oi := 0, 0
	for _, key := range keys {
		ns, name, found := strings.Cut(key, "/")
		if !found {
			return nil, nil, nil, false
		}
		pj, _ := slices.BinarySearchFunc(prev[pi:], key, func(g *ServiceRules, k string) int {
			return model.CompareServiceKeys(g.Key, k)
		})
		pj += pi
		if oi+pj-pi > len(in) {
			return nil, nil, nil, false
		}
		copy(out[oi:], prev[pi:pj])
		oi, pi = oi+pj-pi, pj
		var cand *ServiceRules
		if pi < len(prev) && prev[pi].svc.Namespace == ns && prev[pi].svc.Name == name {
			cand = prev[pi]
			pi++
		}
		if oi < len(in) && in[oi].Namespace == ns && in[oi].Name == name {
			s := &in[oi]
			switch {
			case cand != nil && cand.svc.Equal(s):
				out[oi] = cand
			default:
				if cand != nil {
					removed = append(removed, cand)
				}
				todo = append(todo, toRender{pos: oi, svc: s, cand: cand})
			}
			oi++
		} else if cand != nil {
			removed = append(removed, cand)
		}
	}
	if oi+len(prev)-pi != len(in) {
		return nil, nil, nil, false
	}
	copy(out[oi:], prev[pi:])
	// The runs copied must be the same Services: check where the runs meet the changes.
	for _, t := range todo {
		if t.pos > 0 && model.CompareServices(&in[t.pos-1], t.svc) >= 0 ||
			t.pos+1 < len(in) && model.CompareServices(t.svc, &in[t.pos+1]) >= 0 {
			return nil, nil, nil, false
		}
	}
	for i, g := range out {
		if g != nil && (i == 0 || out[i-1] == nil || i+1 == len(out) || out[i+1] == nil) && model.CompareServices(&g.svc, &in[i]) != 0 {
			return nil, nil, nil, false
		}
	}
	return out, todo, removed, true
}

// claim records that o's group has an element with key ck; touch is called for a Service that loses it.
func (rr *Renderer) claim(ck claimKey, o *svcOwner, touch func(*svcOwner)) {
	holder, ok := rr.claims[ck]
	if !ok {
		rr.claims[ck] = o
		return
	}
	list := rr.contested[ck]
	if list == nil {
		list = []*svcOwner{holder}
	}
	rr.contested[ck] = append(list, o)
	if o.before(holder) {
		rr.claims[ck] = o
		touch(holder)
	}
}

// release forgets o's claim on ck; touch is called for a Service that gains the key.
func (rr *Renderer) release(ck claimKey, o *svcOwner, touch func(*svcOwner)) {
	list, ok := rr.contested[ck]
	if !ok {
		if rr.claims[ck] == o {
			delete(rr.claims, ck)
		}
		return
	}
	if i := slices.Index(list, o); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	holder := rr.claims[ck]
	first := list[0]
	for _, x := range list[1:] {
		if x.before(first) {
			first = x
		}
	}
	if len(list) == 1 {
		delete(rr.contested, ck)
	} else {
		rr.contested[ck] = list
	}
	rr.claims[ck] = first
	if first != holder {
		touch(first)
	}
}

// shadow marks the group's elements whose key another Service holds, and recounts the group; it
// reports whether a mark changed.
func (rr *Renderer) shadow(g *ServiceRules) bool {
	changed := false
	elements := 0
	for i := range g.elements {
		e := &g.elements[i]
		shadowed := false
		if ck, ok := newClaimKey(e); ok {
			shadowed = rr.claims[ck] != g.owner
		}
		if shadowed != e.shadowed {
			e.shadowed, changed = shadowed, true
		}
		if !shadowed {
			elements++
		}
	}
	g.counts.elements = elements
	return changed
}

// renderFixed renders what depends on the node alone: the fixed chains and the fixed sets other than
// the endpoint maps.
func (rr *Renderer) renderFixed() {
	r := &renderer{
		node:   rr.node,
		opts:   rr.opts,
		chains: make(map[string]*Chain),
		sets:   make(map[string]*Set),
		keys:   make(map[string]map[ElementKey]bool),
	}
	r.fixed()
	rr.fixedChains, rr.baseSets, rr.fixedSets = r.rs.Chains, r.rs.Sets, nil
}

// rebuildFixedSets lists the fixed sets: the node's, then the endpoint maps in use by shard, created
// before any rule that looks them up.
func (rr *Renderer) rebuildFixedSets() {
	sets := make([]*Set, 0, len(rr.baseSets)+len(rr.shards))
	sets = append(sets, rr.baseSets...)
	for shard := range rr.shardSets {
		if rr.shards[shard] == 0 {
			delete(rr.shardSets, shard)
		}
	}
	for _, shard := range slices.Sorted(maps.Keys(rr.shards)) {
		s := rr.shardSets[shard]
		if s == nil {
			s = &Set{Name: endpointMapName(shard), Type: SetTypeEndpointMap}
			rr.shardSets[shard] = s
		}
		sets = append(sets, s)
	}
	rr.fixedSets = sets
}

// renderService renders one Service's chains, sets and map elements.
func renderService(node *model.ServiceNode, s *model.Service, opts Options, ids *endpointIDs) *ServiceRules {
	g := &ServiceRules{Key: s.Key()}
	if opts.SharedInput {
		g.svc = *s
	} else {
		g.svc = s.Clone()
	}
	f := &fragment{node: node, out: g}
	noEndpointChains := node.Datapath != model.DatapathSystem && s.AffinityTimeout == 0
	f.inline = (opts.InlineEndpoints || opts.EndpointMap) && noEndpointChains
	if opts.EndpointMap && noEndpointChains {
		f.ids = ids
	}
	// At most this many elements: sized once, as the group keeps them for its life.
	perPort := 4 + 2*len(s.ExternalIPs) + 3*len(s.LoadBalancerIPs)
	most := 0
	for j := range s.Ports {
		most += perPort
		if f.ids != nil {
			most += 2 * len(s.Ports[j].Endpoints) // Cluster and Local chains
		}
	}
	f.out.elements = make([]setElement, 0, most)
	for j := range s.Ports {
		f.servicePort(s, &s.Ports[j])
	}
	if cap(g.elements) > len(g.elements) {
		g.elements = slices.Clone(g.elements) // kept for the group's life: no spare capacity
	}
	g.counts = counts{sets: len(g.Sets), chains: len(g.Chains), elements: len(g.elements)}
	for _, c := range g.Chains {
		g.counts.rules += len(c.Rules)
	}
	return g
}

// fragment collects what one Service renders to.
type fragment struct {
	node *model.ServiceNode
	out  *ServiceRules
	// inline is true when the Service's endpoints get no chains of their own (Options.InlineEndpoints).
	inline bool
	// ids is set when the endpoints go to the shared endpoint map (Options.EndpointMap).
	ids *endpointIDs
}

func (f *fragment) addChain(name string) *Chain {
	c := &Chain{Name: name}
	f.out.Chains = append(f.out.Chains, c)
	return c
}

func (f *fragment) addSet(s *Set) {
	f.out.Sets = append(f.out.Sets, s)
}

// addElement adds an element unless the Service already has one with the same key in that set (every
// port adds the ClusterIP to cluster-ips): the first one wins, as in the table.
func (f *fragment) addElement(set string, e Element) {
	se := newSetElement(set, e)
	if _, shared := sharedSetIDs[set]; shared {
		for i := range f.out.elements {
			if o := &f.out.elements[i]; o.set == set && o.sameKey(&se) {
				return
			}
		}
	}
	f.out.elements = append(f.out.elements, se)
}

// renderer accumulates the ruleset; chains and sets are also indexed by name.
type renderer struct {
	node   model.ServiceNode
	opts   Options
	rs     Ruleset
	chains map[string]*Chain
	sets   map[string]*Set
	// keys holds each map's element keys, so that a key claimed twice (two Services listing the same
	// ExternalIP and port) keeps its first owner instead of making the whole transaction fail.
	keys map[string]map[ElementKey]bool
}

// addChain creates a chain at the end of the ruleset.
func (r *renderer) addChain(name string, base *BaseChain) *Chain {
	c := &Chain{Name: name, Base: base}
	r.rs.Chains = append(r.rs.Chains, c)
	return c
}

// addFixedChain creates a chain and indexes it by name for addRules.
func (r *renderer) addFixedChain(name string, base *BaseChain) *Chain {
	c := r.addChain(name, base)
	r.chains[name] = c
	return c
}

// addRules appends rules to a chain that exists.
func (r *renderer) addRules(chain string, rules ...Rule) {
	c := r.chains[chain]
	c.Rules = append(c.Rules, rules...)
}

// addSet creates a set at the end of the ruleset.
func (r *renderer) addSet(s *Set) {
	r.rs.Sets = append(r.rs.Sets, s)
	r.sets[s.Name] = s
	r.keys[s.Name] = make(map[ElementKey]bool)
}

// addElement adds an element unless its key is already taken in that set.
func (r *renderer) addElement(set string, e Element) {
	if r.keys[set][e.Key()] {
		return
	}
	r.keys[set][e.Key()] = true
	r.sets[set].Elements = append(r.sets[set].Elements, e)
}

// mark is the masquerade mark bit.
func (r *renderer) mark() uint32 {
	if r.node.MasqueradeMark == 0 {
		return model.DefaultMasqueradeMark
	}
	return r.node.MasqueradeMark
}

// fixed renders everything that does not depend on Services: sets and maps (empty), base chains with their
// jumps, and the fixed regular chains.
func (r *renderer) fixed() {
	cidrs := &Set{Name: clusterCIDRsSet, Type: SetTypeAddr, Interval: true}
	for _, p := range r.node.ClusterCIDRs {
		cidrs.Elements = append(cidrs.Elements, Element{Prefix: p})
	}
	r.addSet(cidrs)
	r.addSet(&Set{Name: nodePortIPsSet, Type: SetTypeAddr})
	for _, ip := range r.node.IPs {
		r.addElement(nodePortIPsSet, Element{Prefix: netip.PrefixFrom(ip, 32)})
	}
	r.addSet(&Set{Name: clusterIPsSet, Type: SetTypeAddr})
	r.addSet(&Set{Name: serviceIPsMap, Type: SetTypeAddrProtoPortVerdict})
	r.addSet(&Set{Name: serviceNodePortsMap, Type: SetTypeProtoPortVerdict})
	r.addSet(&Set{Name: noEndpointServicesMap, Type: SetTypeAddrProtoPortVerdict})
	r.addSet(&Set{Name: noEndpointNodePortsMap, Type: SetTypeProtoPortVerdict})
	r.addSet(&Set{Name: firewallIPsMap, Type: SetTypeAddrProtoPortVerdict})

	for _, b := range baseChains {
		r.addFixedChain(b.name, &BaseChain{Type: b.typ, Hook: b.hook, Priority: b.priority})
	}
	for _, j := range jumpChains {
		jump := Verdict{Kind: VerdictJump, Chain: j.to}
		if j.onlyNewCts {
			r.addRules(j.from, rule(MatchCtStateNew{}, jump))
		} else {
			r.addRules(j.from, rule(jump))
		}
	}
	vxlan := MatchDPort{Proto: model.L4ProtoUDP, Port: r.node.VXLANPort}
	r.addRules(rawPreroutingChain, rule(vxlan, Notrack{}))
	r.addRules(rawOutputChain, rule(vxlan, Notrack{}))
	r.addRules(filterInputChain, rule(vxlan, Verdict{Kind: VerdictAccept}))
	if r.node.Datapath != model.DatapathSystem {
		r.addRules(natPostroutingChain, rule(MatchCtStatusDNAT{}, MatchAddrSet{Field: SAddr, Set: clusterCIDRsSet},
			Masquerade{FullyRandom: true}).withComment("userspace datapath: replies to pods must come back through tun0"))
	}
	r.addRules(natPostroutingChain, rule(MatchAddrSet{Field: SAddr, Set: clusterCIDRsSet},
		MatchAddrSet{Field: DAddr, Negate: true, Set: clusterCIDRsSet}, Masquerade{FullyRandom: true}).
		withComment("pod traffic leaving the cluster"))

	r.addFixedChain(servicesChain, nil)
	r.addRules(servicesChain,
		rule(Vmap{Key: VmapKeyAddrProtoPort, Map: serviceIPsMap}),
		rule(MatchAddrSet{Field: DAddr, Set: nodePortIPsSet}, Vmap{Key: VmapKeyProtoPort, Map: serviceNodePortsMap}))
	r.addFixedChain(masqueradingChain, nil)
	r.addRules(masqueradingChain,
		rule(MatchMark{Mask: r.mark()}, Verdict{Kind: VerdictReturn}),
		rule(MarkSet{Bits: r.mark(), Xor: true}),
		rule(Masquerade{FullyRandom: true}))
	r.addFixedChain(markMasqChain, nil)
	r.addRules(markMasqChain, rule(MarkSet{Bits: r.mark()}))
	r.addFixedChain(serviceEndpointsCheckChain, nil)
	r.addRules(serviceEndpointsCheckChain, rule(Vmap{Key: VmapKeyAddrProtoPort, Map: noEndpointServicesMap}))
	r.addFixedChain(nodePortEndpointsCheckChain, nil)
	r.addRules(nodePortEndpointsCheckChain,
		rule(MatchAddrSet{Field: DAddr, Set: nodePortIPsSet}, Vmap{Key: VmapKeyProtoPort, Map: noEndpointNodePortsMap}))
	r.addFixedChain(firewallCheckChain, nil)
	r.addRules(firewallCheckChain, rule(Vmap{Key: VmapKeyAddrProtoPort, Map: firewallIPsMap}))
	r.addFixedChain(clusterIPsCheckChain, nil)
	r.addRules(clusterIPsCheckChain,
		rule(MatchAddrSet{Field: DAddr, Set: clusterIPsSet}, Reject{}).withComment("reject traffic to invalid ports of ClusterIPs"),
		rule(MatchAddr{Field: DAddr, Prefix: r.node.ServiceNetwork}, Verdict{Kind: VerdictDrop}).
			withComment("drop traffic to unallocated ClusterIPs"))
	r.addFixedChain(rejectChain, nil)
	r.addRules(rejectChain, rule(Reject{TCPReset: true}), rule(Reject{}))
}

// servicePort renders one Service port: its map elements, its policy, external and firewall chains and its
// endpoint chains, with kube-proxy's semantics for traffic policies and endpoints without a ready one.
func (f *fragment) servicePort(s *model.Service, p *model.ServicePort) {
	base := s.Namespace + "/" + s.Name + "/" + p.Protocol.String() + "/" + p.Name
	clusterChain := servicePolicyChainPrefix + base
	localChain := localPolicyChainPrefix + base
	extChain := externalChainPrefix + base
	fwChain := firewallChainPrefix + base
	eps := categorize(s, p, f.node.Name)

	usesClusterChain := len(eps.cluster) > 0 && usesClusterEndpoints(s, p)
	usesLocalChain := len(eps.local) > 0 && usesLocalEndpoints(s, p)
	internalChain, hasInternal := clusterChain, eps.hasAny
	if s.InternalPolicyLocal {
		internalChain, hasInternal = localChain, len(eps.local) > 0
	}
	extLocal := externalPolicyLocal(s, p)
	externalPolicy, hasExternal := clusterChain, eps.hasAny
	if extLocal {
		externalPolicy, hasExternal = localChain, len(eps.local) > 0
	}
	usesExtChain := eps.hasAny && s.ExternallyAccessible(p)
	usesFWChain := len(s.LoadBalancerIPs) > 0 && len(s.SourceRanges) > 0

	// No endpoint at all: reject at once. Endpoints elsewhere but none here for a Local policy: drop what
	// the external chain did not short-circuit, as kube-proxy does.
	var internalFilter, externalFilter Verdict
	if !eps.hasAny {
		internalFilter = Verdict{Kind: VerdictGoto, Chain: rejectChain}
		externalFilter = internalFilter
	} else {
		internalFilter = Verdict{Kind: VerdictDrop}
		externalFilter = internalFilter
	}

	chains := map[string]*Chain{}
	for _, name := range []struct {
		name string
		used bool
	}{{clusterChain, usesClusterChain}, {localChain, usesLocalChain}, {extChain, usesExtChain}, {fwChain, usesFWChain}} {
		if name.used {
			chains[name.name] = f.addChain(name.name)
		}
	}
	var epChains []*Chain
	if !f.inline {
		epChains = make([]*Chain, len(eps.reachable))
		for i, e := range eps.reachable {
			epChains[i] = f.addChain(endpointChainName(base, e))
		}
	}
	add := func(chain string, rules ...Rule) {
		c := chains[chain]
		c.Rules = append(c.Rules, rules...)
	}

	f.addElement(clusterIPsSet, Element{Prefix: netip.PrefixFrom(s.ClusterIP, 32)})
	svcKey := func(a netip.Addr) Element {
		return Element{Prefix: netip.PrefixFrom(a, 32), Proto: p.Protocol, Port: p.Port}
	}
	goTo := func(chain string) Verdict { return Verdict{Kind: VerdictGoto, Chain: chain} }
	withVerdict := func(e Element, v Verdict) Element { e.Verdict = v; return e }

	if hasInternal {
		f.addElement(serviceIPsMap, withVerdict(svcKey(s.ClusterIP), goTo(internalChain)))
	} else {
		f.addElement(noEndpointServicesMap, withVerdict(svcKey(s.ClusterIP), internalFilter))
	}
	for _, ip := range s.ExternalIPs {
		if eps.hasAny {
			f.addElement(serviceIPsMap, withVerdict(svcKey(ip), goTo(extChain)))
		}
		if !hasExternal {
			f.addElement(noEndpointServicesMap, withVerdict(svcKey(ip), externalFilter))
		}
	}
	for _, ip := range s.LoadBalancerIPs {
		if eps.hasAny {
			f.addElement(serviceIPsMap, withVerdict(svcKey(ip), goTo(extChain)))
		}
		if usesFWChain {
			f.addElement(firewallIPsMap, withVerdict(svcKey(ip), goTo(fwChain)))
		}
		if !hasExternal {
			f.addElement(noEndpointServicesMap, withVerdict(svcKey(ip), externalFilter))
		}
	}
	if p.NodePort != 0 {
		np := Element{Proto: p.Protocol, Port: p.NodePort}
		if eps.hasAny {
			f.addElement(serviceNodePortsMap, withVerdict(np, goTo(extChain)))
		}
		if !hasExternal {
			f.addElement(noEndpointNodePortsMap, withVerdict(np, externalFilter))
		}
	}

	if usesFWChain {
		f.firewall(chains[fwChain], s)
	}
	if hasInternal {
		// Off-cluster clients of a ClusterIP (the node itself, or a router sending the service network to
		// this node) are masqueraded so that replies come back here.
		add(internalChain, rule(MatchAddr{Field: DAddr, Prefix: netip.PrefixFrom(s.ClusterIP, 32)},
			MatchDPort{Proto: p.Protocol, Port: p.Port}, notFromPodStmt, jumpMasqStmt))
	}
	if usesExtChain {
		if !extLocal {
			// The endpoint may be on another node: masquerade so the reply comes back through this one.
			add(extChain, rule(jumpMasqStmt))
		} else {
			add(extChain,
				rule(MatchAddrSet{Field: SAddr, Set: clusterCIDRsSet}, goTo(clusterChain)).withComment("short-circuit pod traffic"),
				rule(MatchFibLocal{Field: SAddr}, jumpMasqStmt).withComment("masquerade local traffic"),
				rule(MatchFibLocal{Field: SAddr}, goTo(clusterChain)).withComment("short-circuit local traffic"))
		}
		if hasExternal {
			add(extChain, rule(goTo(externalPolicy)))
		}
	}
	// The endpoints' chain and affinity set names, built once and shared by every rule that names them.
	names := endpointNames{reachable: eps.reachable}
	if !f.inline {
		names.chains = make([]string, len(epChains))
		for i, c := range epChains {
			names.chains[i] = c.Name
		}
	}
	if s.AffinityTimeout > 0 {
		names.affinity = make([]string, len(eps.reachable))
		for i, e := range eps.reachable {
			names.affinity[i] = affinitySetName(base, e)
			f.addSet(&Set{Name: names.affinity[i], Type: SetTypeAddr, Timeout: s.AffinityTimeout})
		}
	}
	if usesClusterChain {
		f.loadBalance(chains[clusterChain], base, s, p.Protocol, eps.cluster, &names)
	}
	if usesLocalChain {
		f.loadBalance(chains[localChain], base, s, p.Protocol, eps.local, &names)
	}
	for i, e := range eps.reachable {
		if f.inline {
			break
		}
		c := epChains[i]
		if s.AffinityTimeout > 0 {
			c.Rules = []Rule{rule(MatchAddr{Field: SAddr, Prefix: netip.PrefixFrom(e.Addr, 32)}, jumpMasqStmt),
				rule(AffinityUpdate{Set: names.affinity[i]}),
				rule(MatchProto{Proto: p.Protocol}, DNAT{Addr: e.Addr, Port: e.Port})}
			continue
		}
		c.Rules = []Rule{rule(MatchAddr{Field: SAddr, Prefix: netip.PrefixFrom(e.Addr, 32)}, jumpMasqStmt),
			rule(MatchProto{Proto: p.Protocol}, DNAT{Addr: e.Addr, Port: e.Port})}
	}
}

// endpointNames are a Service port's reachable endpoints with their chain names (nil when inline) and
// affinity set names (nil without affinity), in the same order.
type endpointNames struct {
	reachable        []model.Endpoint
	chains, affinity []string
	next             int
}

// index returns the position of e among the reachable endpoints; the lists a policy chain balances over
// are in-order subsets of them, so the search goes on from the last position.
func (n *endpointNames) index(e model.Endpoint) int {
	for i := range n.reachable {
		j := (n.next + i) % len(n.reachable)
		if r := &n.reachable[j]; r.Addr == e.Addr && r.Port == e.Port {
			n.next = j + 1
			return j
		}
	}
	return -1
}

// chain returns e's endpoint chain name.
func (n *endpointNames) chain(base string, e model.Endpoint) string {
	if i := n.index(e); i >= 0 && n.chains != nil {
		return n.chains[i]
	}
	return endpointChainName(base, e)
}

// chainAndAffinitySet returns e's endpoint chain and affinity set names with one search for e.
func (n *endpointNames) chainAndAffinitySet(base string, e model.Endpoint) (chain, affinity string) {
	i := n.index(e)
	if i >= 0 && n.chains != nil {
		chain = n.chains[i]
	} else {
		chain = endpointChainName(base, e)
	}
	if i >= 0 && n.affinity != nil {
		affinity = n.affinity[i]
	} else {
		affinity = affinitySetName(base, e)
	}
	return chain, affinity
}

// affinitySet returns e's affinity set name.
func (n *endpointNames) affinitySet(base string, e model.Endpoint) string {
	if i := n.index(e); i >= 0 && n.affinity != nil {
		return n.affinity[i]
	}
	return affinitySetName(base, e)
}

// jumpMasqStmt and notFromPodStmt are statements many rules share, boxed once.
var (
	jumpMasqStmt   Stmt = Verdict{Kind: VerdictJump, Chain: markMasqChain}
	notFromPodStmt Stmt = MatchAddrSet{Field: SAddr, Negate: true, Set: clusterCIDRsSet}
)

// numgenStmts are the MatchNumgen statements of the usual endpoint counts, boxed once.
var numgenStmts = func() []Stmt {
	stmts := make([]Stmt, 65)
	for i := range stmts {
		stmts[i] = MatchNumgen{Mod: uint32(i)}
	}
	return stmts
}()

// numgenStmt returns MatchNumgen{Mod: mod}, shared when it can be.
func numgenStmt(mod uint32) Stmt {
	if int(mod) < len(numgenStmts) {
		return numgenStmts[mod]
	}
	return MatchNumgen{Mod: mod}
}

// loadBalance ends a policy chain with the choice of an endpoint: first a client's remembered endpoint when
// affinity is on, then a cascade in which endpoint i of n wins with probability 1/(n-i), so that each is
// chosen with probability 1/n, without any set.
func (f *fragment) loadBalance(c *Chain, base string, s *model.Service, proto model.L4Proto, eps []model.Endpoint, names *endpointNames) {
	n := len(eps)
	if s.AffinityTimeout > 0 {
		c.Rules = slices.Grow(c.Rules, 2*n)
		for _, e := range eps {
			chain, affinity := names.chainAndAffinitySet(base, e)
			c.Rules = append(c.Rules, rule(MatchAddrSet{Field: SAddr, Set: affinity}, Verdict{Kind: VerdictGoto, Chain: chain}))
		}
	}
	if f.ids != nil && n <= EndpointMapStride {
		if id, ok := f.ids.get(c.Name); ok {
			shard := id % EndpointMapShards
			f.out.endpointMapChains = append(f.out.endpointMapChains, c.Name)
			f.out.endpointMapShards = append(f.out.endpointMapShards, shard)
			base, m := id*EndpointMapStride, endpointMapName(shard)
			c.Rules = append(c.Rules, rule(MatchProto{Proto: proto}, DNATMap{Mod: uint32(n), Offset: base, Map: m}))
			for i, e := range eps {
				f.addElement(m, Element{Index: base + uint32(i), Target: netip.AddrPortFrom(e.Addr, e.Port)})
			}
			return
		}
	}
	c.Rules = slices.Grow(c.Rules, n)
	for i, e := range eps {
		var stmts []Stmt
		switch {
		case f.inline && i < n-1:
			stmts = []Stmt{numgenStmt(uint32(n - i)), MatchProto{Proto: proto}, DNAT{Addr: e.Addr, Port: e.Port}}
		case f.inline:
			stmts = []Stmt{MatchProto{Proto: proto}, DNAT{Addr: e.Addr, Port: e.Port}}
		case i < n-1:
			stmts = []Stmt{numgenStmt(uint32(n - i)), Verdict{Kind: VerdictGoto, Chain: names.chain(base, e)}}
		default:
			stmts = []Stmt{Verdict{Kind: VerdictGoto, Chain: names.chain(base, e)}}
		}
		c.Rules = append(c.Rules, Rule{Stmts: stmts})
	}
}

// firewall renders loadBalancerSourceRanges: sources inside a range go on, everything else is dropped.
// When a range holds a node IP, the LoadBalancer IPs themselves are allowed as sources too, because a
// VIP-style load balancer makes the node talk to the VIP from the VIP (kube-proxy does the same).
func (f *fragment) firewall(c *Chain, s *model.Service) {
	ret := Verdict{Kind: VerdictReturn}
	allowFromNode := false
	for _, src := range s.SourceRanges {
		c.Rules = append(c.Rules, rule(MatchAddr{Field: SAddr, Prefix: src}, ret))
		for _, ip := range f.node.IPs {
			allowFromNode = allowFromNode || src.Contains(ip)
		}
	}
	if allowFromNode {
		for _, ip := range s.LoadBalancerIPs {
			c.Rules = append(c.Rules, rule(MatchAddr{Field: SAddr, Prefix: netip.PrefixFrom(ip, 32)}, ret))
		}
	}
	c.Rules = append(c.Rules, rule(Verdict{Kind: VerdictDrop}))
}

// endpointChainName names an endpoint's chain: endpoint-ns/svc/proto/port__ip/port.
func endpointChainName(base string, e model.Endpoint) string {
	return endpointChainPrefix + base + "__" + e.Addr.String() + "/" + strconv.Itoa(int(e.Port))
}

// affinitySetName names an endpoint's session affinity set.
func affinitySetName(base string, e model.Endpoint) string {
	return affinitySetPrefix + base + "__" + e.Addr.String() + "/" + strconv.Itoa(int(e.Port))
}
