package nftables

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"

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
}

// EndpointMapShards is the number of endpoint maps the Service ports are spread over (by base index).
// Every rule that looks a map up is a binding of it, and the kernel checks each element added to a map
// against each of its bindings (and each binding against every element), so one map for 10,000 Service
// ports makes a full sync quadratic (a minute at 10,000 x 10); 1,024 maps keep each to a few bindings and
// a few hundred elements, while few enough sets keep the kernel's linear lookup of sets by name cheap.
const EndpointMapShards = 1024

// endpointMapName names the endpoint map of a shard.
func endpointMapName(shard uint32) string {
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
// pointer and skips them. It keeps a deep copy of each Service, so the caller may reuse its ServiceSet.
// A Renderer is not safe for concurrent use.
type Renderer struct {
	opts  Options
	node  model.ServiceNode
	cache map[string]*ServiceRules
	ids   endpointIDs
}

// endpointIDs hands out the endpoint map's base indexes (divided by the stride) by policy chain name and
// keeps them while the chain exists, so that an unchanged Service keeps its elements and its rule.
type endpointIDs struct {
	byChain map[string]uint32
	next    uint32
	free    []uint32
}

// get returns the chain's id, allocating one if needed; false when all are taken.
func (a *endpointIDs) get(chain string) (uint32, bool) {
	if id, ok := a.byChain[chain]; ok {
		return id, true
	}
	if a.byChain == nil {
		a.byChain = make(map[string]uint32)
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
	a.byChain[chain] = id
	return id, true
}

// keepOnly releases the ids of chains not in used, for reuse by later renders.
func (a *endpointIDs) keepOnly(used map[string]bool) {
	for chain, id := range a.byChain {
		if !used[chain] {
			delete(a.byChain, chain)
			a.free = append(a.free, id)
		}
	}
}

// NewRenderer returns a Renderer with an empty cache.
func NewRenderer(opts Options) *Renderer {
	return &Renderer{opts: opts}
}

// Render returns the complete desired table for in; see the package-level Render.
func (rr *Renderer) Render(in *model.ServiceSet) *Ruleset {
	if rr.cache == nil || !rr.node.Equal(&in.Node) {
		rr.cache = make(map[string]*ServiceRules)
		rr.node = in.Node
		rr.node.IPs, rr.node.ClusterCIDRs = slices.Clone(in.Node.IPs), slices.Clone(in.Node.ClusterCIDRs)
	}
	r := &renderer{
		node:   in.Node,
		opts:   rr.opts,
		chains: make(map[string]*Chain),
		sets:   make(map[string]*Set),
		keys:   make(map[string]map[ElementKey]bool),
	}
	r.fixed()
	next := make(map[string]*ServiceRules, len(in.Services))
	r.rs.Services = make([]*ServiceRules, 0, len(in.Services))
	var usedIDs map[string]bool
	var usedShards map[uint32]int
	if rr.opts.EndpointMap {
		usedIDs, usedShards = make(map[string]bool), make(map[uint32]int)
	}
	for i := range in.Services {
		s := &in.Services[i]
		g := rr.cache[s.Key()]
		if g == nil || !g.svc.Equal(s) {
			g = renderService(&in.Node, s, rr.opts, &rr.ids)
		}
		for j, c := range g.endpointMapChains {
			usedIDs[c] = true
			usedShards[g.endpointMapShards[j]] += g.endpointMapCounts[j]
		}
		r.rs.Services = append(r.rs.Services, g)
	}
	// The endpoint maps in use are fixed sets, created before any rule that looks them up.
	for _, shard := range slices.Sorted(maps.Keys(usedShards)) {
		r.addSet(&Set{Name: endpointMapName(shard), Type: SetTypeEndpointMap, Elements: make([]Element, 0, usedShards[shard])})
	}
	r.rs.fixedChains, r.rs.fixedSets = len(r.rs.Chains), len(r.rs.Sets)
	for _, g := range r.rs.Services {
		next[g.Key] = g
		r.rs.Chains = append(r.rs.Chains, g.Chains...)
		r.rs.Sets = append(r.rs.Sets, g.Sets...)
		for _, e := range g.elements {
			r.addElement(e.set, e.elem)
		}
	}
	rr.cache = next
	if rr.opts.EndpointMap {
		rr.ids.keepOnly(usedIDs)
	}
	return &r.rs
}

// renderService renders one Service's chains, sets and map elements.
func renderService(node *model.ServiceNode, s *model.Service, opts Options, ids *endpointIDs) *ServiceRules {
	f := &fragment{node: node, out: &ServiceRules{Key: s.Key(), svc: s.Clone()}}
	noEndpointChains := node.Datapath != model.DatapathSystem && s.AffinityTimeout == 0
	f.inline = (opts.InlineEndpoints || opts.EndpointMap) && noEndpointChains
	if opts.EndpointMap && noEndpointChains {
		f.ids = ids
	}
	for j := range s.Ports {
		f.servicePort(s, &s.Ports[j])
	}
	return f.out
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

func (f *fragment) addElement(set string, e Element) {
	f.out.elements = append(f.out.elements, setElement{set: set, elem: e})
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
	if s := r.sets[set]; s.Type == SetTypeEndpointMap {
		// Base indexes are unique per policy chain: no key can be claimed twice.
		s.Elements = append(s.Elements, e)
		return
	}
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
	jumpMasq := Verdict{Kind: VerdictJump, Chain: markMasqChain}
	if hasInternal {
		// Off-cluster clients of a ClusterIP (the node itself, or a router sending the service network to
		// this node) are masqueraded so that replies come back here.
		add(internalChain, rule(MatchAddr{Field: DAddr, Prefix: netip.PrefixFrom(s.ClusterIP, 32)},
			MatchDPort{Proto: p.Protocol, Port: p.Port}, MatchAddrSet{Field: SAddr, Negate: true, Set: clusterCIDRsSet}, jumpMasq))
	}
	if usesExtChain {
		if !extLocal {
			// The endpoint may be on another node: masquerade so the reply comes back through this one.
			add(extChain, rule(jumpMasq))
		} else {
			add(extChain,
				rule(MatchAddrSet{Field: SAddr, Set: clusterCIDRsSet}, goTo(clusterChain)).withComment("short-circuit pod traffic"),
				rule(MatchFibLocal{Field: SAddr}, jumpMasq).withComment("masquerade local traffic"),
				rule(MatchFibLocal{Field: SAddr}, goTo(clusterChain)).withComment("short-circuit local traffic"))
		}
		if hasExternal {
			add(extChain, rule(goTo(externalPolicy)))
		}
	}
	if s.AffinityTimeout > 0 {
		for _, e := range eps.reachable {
			f.addSet(&Set{Name: affinitySetName(base, e), Type: SetTypeAddr, Timeout: s.AffinityTimeout})
		}
	}
	if usesClusterChain {
		f.loadBalance(chains[clusterChain], base, s, p.Protocol, eps.cluster)
	}
	if usesLocalChain {
		f.loadBalance(chains[localChain], base, s, p.Protocol, eps.local)
	}
	for i, e := range eps.reachable {
		if f.inline {
			break
		}
		c := epChains[i]
		c.Rules = make([]Rule, 0, 3)
		c.Rules = append(c.Rules, rule(MatchAddr{Field: SAddr, Prefix: netip.PrefixFrom(e.Addr, 32)}, jumpMasq))
		if s.AffinityTimeout > 0 {
			c.Rules = append(c.Rules, rule(AffinityUpdate{Set: affinitySetName(base, e)}))
		}
		c.Rules = append(c.Rules, rule(MatchProto{Proto: p.Protocol}, DNAT{Addr: e.Addr, Port: e.Port}))
	}
}

// loadBalance ends a policy chain with the choice of an endpoint: first a client's remembered endpoint when
// affinity is on, then a cascade in which endpoint i of n wins with probability 1/(n-i), so that each is
// chosen with probability 1/n, without any set.
func (f *fragment) loadBalance(c *Chain, base string, s *model.Service, proto model.L4Proto, eps []model.Endpoint) {
	if s.AffinityTimeout > 0 {
		for _, e := range eps {
			c.Rules = append(c.Rules, rule(MatchAddrSet{Field: SAddr, Set: affinitySetName(base, e)},
				Verdict{Kind: VerdictGoto, Chain: endpointChainName(base, e)}))
		}
	}
	n := len(eps)
	if f.ids != nil && n <= EndpointMapStride {
		if id, ok := f.ids.get(c.Name); ok {
			shard := id % EndpointMapShards
			f.out.endpointMapChains = append(f.out.endpointMapChains, c.Name)
			f.out.endpointMapShards = append(f.out.endpointMapShards, shard)
			f.out.endpointMapCounts = append(f.out.endpointMapCounts, n)
			base, m := id*EndpointMapStride, endpointMapName(shard)
			c.Rules = append(c.Rules, rule(MatchProto{Proto: proto}, DNATMap{Mod: uint32(n), Offset: base, Map: m}))
			for i, e := range eps {
				f.addElement(m, Element{Index: base + uint32(i), Target: netip.AddrPortFrom(e.Addr, e.Port)})
			}
			return
		}
	}
	for i, e := range eps {
		var stmts []Stmt
		if i < n-1 {
			stmts = append(stmts, MatchNumgen{Mod: uint32(n - i)})
		}
		if f.inline {
			stmts = append(stmts, MatchProto{Proto: proto}, DNAT{Addr: e.Addr, Port: e.Port})
		} else {
			stmts = append(stmts, Verdict{Kind: VerdictGoto, Chain: endpointChainName(base, e)})
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
