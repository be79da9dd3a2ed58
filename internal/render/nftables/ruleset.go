package nftables

import (
	"net/netip"
	"slices"
	"time"

	"github.com/vxflow/vxflow/internal/model"
)

// Ruleset is the desired content of table ip vxflow: the contract between Render and internal/apply/nft.
// Every set, chain and rule is a plain comparable value, so the applier can diff two Rulesets without the
// kernel, and String prints it the way `nft list table ip vxflow` lists it back.
//
// A Ruleset comes in one of two shapes. A flat one (Render, Renderer.Render, or built by hand) lists every
// set with all its elements and every chain in Sets and Chains, and has no Services. A grouped one
// (Renderer.RenderGrouped) lists in Sets and Chains only what belongs to no Service, and keeps each
// Service's chains, sets and elements in its Services group, so that a Renderer can hand out the same
// groups again and the applier can skip them: one Service changed costs O(that Service), not O(table).
// Flat converts a grouped Ruleset. A Ruleset must not be modified once it is handed to the applier.
type Ruleset struct {
	// Sets are the sets and maps, in the order they are created: the fixed ones first, then (flat shape
	// only) the Services' affinity sets. In the grouped shape a shared set's Elements are only those that
	// belong to no Service (node addresses, cluster CIDRs); the rest are in the Services groups.
	Sets []*Set
	// Chains are the chains, in the order they are created: the fixed ones (base chains first), then
	// (flat shape only) the Services' chains.
	Chains []*Chain
	// Services are the per-Service groups of a grouped Ruleset, sorted by Key; nil for a flat one. A
	// Renderer hands out the same *ServiceRules for a Service that did not change, which lets the applier
	// skip it without comparing its rules.
	Services []*ServiceRules

	// grouped marks the grouped shape (Services may be empty); svcCounts are the groups' totals.
	grouped   bool
	svcCounts counts
	// from is the grouped Ruleset a flat one was made from by Flat.
	from *Ruleset
}

// counts are the numbers Counts reports, kept per group so that a grouped Ruleset counts in O(1).
type counts struct {
	sets, chains, rules, elements int
}

func (c *counts) add(o counts, sign int) {
	c.sets += sign * o.sets
	c.chains += sign * o.chains
	c.rules += sign * o.rules
	c.elements += sign * o.elements
}

// Grouped reports whether the Services' chains, sets and elements are in Services rather than in Sets
// and Chains.
func (r *Ruleset) Grouped() bool {
	return r.grouped
}

// ServiceRules is what one Service renders to: its chains, its affinity sets and its elements in the
// shared sets and maps. A group is immutable once rendered.
type ServiceRules struct {
	// Key is the Service's namespace/name.
	Key string
	// Chains are the Service's chains (policy, external, firewall and endpoint chains of all ports).
	Chains []*Chain
	// Sets are the Service's affinity sets.
	Sets []*Set

	// svc is the Service this was rendered from.
	svc model.Service
	// owner is the Renderer's record of this Service, the same for every version of the group.
	owner *svcOwner
	// elements are the Service's entries in the shared sets and maps, each key once per set.
	elements []setElement
	// endpointMapChains are the policy chains holding an endpoint map base index (Options.EndpointMap).
	endpointMapChains []string
	// endpointMapShards are the shards of those chains' base indexes, in the same order.
	endpointMapShards []uint32
	// counts are this group's chains, sets, rules and effective elements.
	counts counts
	// renderedAt is the Renderer's render number that created this version of the group.
	renderedAt uint64
}

// EachElement calls fn for each of the Service's elements in the shared sets and maps, so that the applier
// can diff the elements of a changed Service alone. An element whose key an earlier Service (by Key)
// already holds in the same set is left out, as the kernel can hold each key once.
func (g *ServiceRules) EachElement(fn func(set string, e Element)) {
	for i := range g.elements {
		if e := &g.elements[i]; !e.shadowed {
			fn(e.set, e.element())
		}
	}
}

// setElement is an element destined to a named shared set or map, stored compactly (a quarter of an
// Element: a 10,000-Service table holds hundreds of thousands): IPv4 addresses as 4 bytes, the verdict
// chain and set names shared with the chains and the Renderer. An element that does not fit (never from a
// validated model) keeps the Element in full.
type setElement struct {
	set, chain       string
	addr, target     [4]byte
	index            uint32
	port, targetPort uint16
	// bits is the prefix length, -1 for no prefix.
	bits      int8
	proto     model.L4Proto
	verdict   VerdictKind
	hasTarget bool
	// shadowed is true when an earlier Service holds the same key in the set.
	shadowed bool
	full     *Element
}

// newSetElement packs e for set.
func newSetElement(set string, e Element) setElement {
	se := setElement{set: set, chain: e.Verdict.Chain, index: e.Index, port: e.Port, proto: e.Proto,
		verdict: e.Verdict.Kind, bits: -1}
	fits := true
	if e.Prefix.IsValid() {
		fits = e.Prefix.Addr().Is4()
		if fits {
			se.addr, se.bits = e.Prefix.Addr().As4(), int8(e.Prefix.Bits())
		}
	}
	if e.Target.IsValid() {
		fits = fits && e.Target.Addr().Is4()
		if fits {
			se.target, se.targetPort, se.hasTarget = e.Target.Addr().As4(), e.Target.Port(), true
		}
	}
	if !fits {
		full := e
		se.full = &full
	}
	return se
}

// element unpacks the element.
func (se *setElement) element() Element {
	if se.full != nil {
		return *se.full
	}
	e := Element{Proto: se.proto, Port: se.port, Index: se.index, Verdict: Verdict{Kind: se.verdict, Chain: se.chain}}
	if se.bits >= 0 {
		e.Prefix = netip.PrefixFrom(netip.AddrFrom4(se.addr), int(se.bits))
	}
	if se.hasTarget {
		e.Target = netip.AddrPortFrom(netip.AddrFrom4(se.target), se.targetPort)
	}
	return e
}

// sameKey reports whether two elements of one set have the same key.
func (se *setElement) sameKey(o *setElement) bool {
	if se.full != nil || o.full != nil {
		return se.element().Key() == o.element().Key()
	}
	return se.addr == o.addr && se.bits == o.bits && se.proto == o.proto && se.port == o.port && se.index == o.index
}

// Counts returns the number of sets, chains, rules and set elements, for metrics and logs. It costs
// O(fixed part) for a grouped Ruleset.
func (r *Ruleset) Counts() (sets, chains, rules, elements int) {
	for _, s := range r.Sets {
		elements += len(s.Elements)
	}
	for _, c := range r.Chains {
		rules += len(c.Rules)
	}
	c := r.svcCounts
	return len(r.Sets) + c.sets, len(r.Chains) + c.chains, rules + c.rules, elements + c.elements
}

// FlattenedFrom returns the grouped Ruleset that Flat made r from, nil if r was not made by Flat. The
// applier syncs that one instead, which keeps a Renderer.Render caller's syncs O(change) (the contents are
// the same; neither may be modified).
func (r *Ruleset) FlattenedFrom() *Ruleset {
	return r.from
}

// Flat returns the Ruleset in the flat shape: r itself if it is flat, otherwise a new Ruleset with every
// set (shared sets with all their elements), every chain and no Services, in the order they are created.
// It costs O(table); tools that walk the whole table (String, tracing) use it.
func (r *Ruleset) Flat() *Ruleset {
	if !r.grouped {
		return r
	}
	sets, chains, _, _ := r.Counts()
	out := &Ruleset{Sets: make([]*Set, 0, sets), Chains: make([]*Chain, 0, chains), from: r}
	byName := make(map[string]*Set, len(r.Sets))
	for _, s := range r.Sets {
		c := *s
		c.Elements = slices.Clone(s.Elements)
		out.Sets = append(out.Sets, &c)
		byName[c.Name] = &c
	}
	out.Chains = append(out.Chains, r.Chains...)
	for _, g := range r.Services {
		out.Chains = append(out.Chains, g.Chains...)
		out.Sets = append(out.Sets, g.Sets...)
		g.EachElement(func(set string, e Element) {
			if s := byName[set]; s != nil {
				s.Elements = append(s.Elements, e)
			}
		})
	}
	return out
}

// SetType is the key (and data) type of a set or map; the concatenations are the ones kube-proxy uses.
type SetType uint8

const (
	// SetTypeAddr is `type ipv4_addr`.
	SetTypeAddr SetType = iota
	// SetTypeAddrProtoPortVerdict is `type ipv4_addr . inet_proto . inet_service : verdict`.
	SetTypeAddrProtoPortVerdict
	// SetTypeProtoPortVerdict is `type inet_proto . inet_service : verdict`.
	SetTypeProtoPortVerdict
	// SetTypeEndpointMap is the data map `typeof numgen random mod 1 : ip daddr . tcp dport`: an endpoint
	// index (a Service port's base plus a numgen result) to the endpoint's address and port
	// (Options.EndpointMap).
	SetTypeEndpointMap
)

// IsMap reports whether sets of this type are maps (verdict or data).
func (t SetType) IsMap() bool {
	return t != SetTypeAddr
}

// HasVerdicts reports whether the map's data are verdicts, as opposed to endpoint addresses.
func (t SetType) HasVerdicts() bool {
	return t == SetTypeAddrProtoPortVerdict || t == SetTypeProtoPortVerdict
}

// Set is a named set or verdict map.
type Set struct {
	// Name is the set's name.
	Name string
	// Type is the key (and data) type.
	Type SetType
	// Interval marks an address set holding prefixes (flags interval).
	Interval bool
	// Timeout, when positive, makes the set dynamic with this timeout: elements are added by the packet
	// path (session affinity), never by the applier.
	Timeout time.Duration
	// Elements are the elements, sorted by key; empty for dynamic sets.
	Elements []Element
}

// Dynamic reports whether the packet path fills the set (flags dynamic,timeout).
func (s *Set) Dynamic() bool {
	return s.Timeout > 0
}

// Element is one set or map element. Which fields are used depends on the set's type: Prefix (an address
// is a /32) for SetTypeAddr; Prefix, Proto and Port for SetTypeAddrProtoPortVerdict; Proto and Port for
// SetTypeProtoPortVerdict; Index and Target for SetTypeEndpointMap. Verdict maps carry a Verdict.
type Element struct {
	Prefix  netip.Prefix
	Proto   model.L4Proto
	Port    uint16
	Index   uint32
	Verdict Verdict
	Target  netip.AddrPort
}

// ElementKey is what identifies an element inside its set: its key without the data.
type ElementKey struct {
	Prefix netip.Prefix
	Proto  model.L4Proto
	Port   uint16
	Index  uint32
}

// ElementData is what a map element maps its key to; the applier replaces an element whose data changed.
type ElementData struct {
	Verdict Verdict
	Target  netip.AddrPort
}

// Key returns the element's key.
func (e Element) Key() ElementKey {
	return ElementKey{Prefix: e.Prefix, Proto: e.Proto, Port: e.Port, Index: e.Index}
}

// Data returns the element's data.
func (e Element) Data() ElementData {
	return ElementData{Verdict: e.Verdict, Target: e.Target}
}

// compareElements orders elements by key, as String prints them.
func compareElements(a, b Element) int {
	if a.Index != b.Index {
		if a.Index < b.Index {
			return -1
		}
		return 1
	}
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	if a.Prefix.Bits() != b.Prefix.Bits() {
		return a.Prefix.Bits() - b.Prefix.Bits()
	}
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	return int(a.Port) - int(b.Port)
}

// ChainType is a base chain's type.
type ChainType string

const (
	// ChainTypeFilter is `type filter`.
	ChainTypeFilter ChainType = "filter"
	// ChainTypeNAT is `type nat`.
	ChainTypeNAT ChainType = "nat"
)

// Hook is a netfilter hook of the ip family.
type Hook string

const (
	// HookPrerouting is NF_INET_PRE_ROUTING.
	HookPrerouting Hook = "prerouting"
	// HookInput is NF_INET_LOCAL_IN.
	HookInput Hook = "input"
	// HookForward is NF_INET_FORWARD.
	HookForward Hook = "forward"
	// HookOutput is NF_INET_LOCAL_OUT.
	HookOutput Hook = "output"
	// HookPostrouting is NF_INET_POST_ROUTING.
	HookPostrouting Hook = "postrouting"
)

// BaseChain makes a chain a base chain attached to a hook; every vxflow base chain has policy accept, so
// that it never decides for other tables.
type BaseChain struct {
	Type     ChainType
	Hook     Hook
	Priority int
}

// Chain is a chain with its rules.
type Chain struct {
	// Name is the chain's name.
	Name string
	// Base is set for base chains, nil for regular chains.
	Base *BaseChain
	// Rules are the rules in order.
	Rules []Rule
}

// Equal reports whether two chains have the same name, hook and rules.
func (c *Chain) Equal(o *Chain) bool {
	if c.Name != o.Name || (c.Base == nil) != (o.Base == nil) || (c.Base != nil && *c.Base != *o.Base) {
		return false
	}
	return slices.EqualFunc(c.Rules, o.Rules, Rule.Equal)
}

// Rule is a sequence of statements, matches first, ending with at most one verdict or NAT statement, plus
// an optional comment.
type Rule struct {
	Stmts   []Stmt
	Comment string
}

// Equal reports whether two rules are the same statements and comment.
func (r Rule) Equal(o Rule) bool {
	return r.Comment == o.Comment && slices.Equal(r.Stmts, o.Stmts)
}

// rule builds a Rule from statements.
func rule(stmts ...Stmt) Rule {
	return Rule{Stmts: stmts}
}

// withComment returns r with a comment.
func (r Rule) withComment(c string) Rule {
	r.Comment = c
	return r
}

// Stmt is one statement of a rule. The set of statement types is closed: each is a comparable value type
// that prints as nft lists it and that internal/apply/nft compiles to the same expressions nft would.
type Stmt interface {
	// String returns the statement as `nft list` prints it.
	String() string
	isStmt()
}

// AddrField is a field of the IPv4 header holding an address.
type AddrField uint8

const (
	// SAddr is `ip saddr`.
	SAddr AddrField = iota
	// DAddr is `ip daddr`.
	DAddr
)

// MatchAddr matches an address field against a prefix (a /32 is an address): `ip saddr 10.0.0.0/8`.
type MatchAddr struct {
	Field  AddrField
	Negate bool
	Prefix netip.Prefix
}

// MatchAddrSet looks an address field up in a named set: `ip daddr != @cluster-cidrs`.
type MatchAddrSet struct {
	Field  AddrField
	Negate bool
	Set    string
}

// MatchProto matches the transport protocol: `meta l4proto tcp`.
type MatchProto struct {
	Proto model.L4Proto
}

// MatchDPort matches the transport protocol and destination port: `tcp dport 80`.
type MatchDPort struct {
	Proto model.L4Proto
	Port  uint16
}

// MatchMark tests one mark bit: `meta mark & 0x00000001 == 0x00000000` (Set false).
type MatchMark struct {
	Mask uint32
	Set  bool
}

// MatchCtStateNew matches the first packet of a connection: `ct state new`.
type MatchCtStateNew struct{}

// MatchCtStatusDNAT matches connections that were destination-NATed: `ct status dnat`.
type MatchCtStatusDNAT struct{}

// MatchFibLocal matches packets whose source or destination address is local to the node:
// `fib saddr type local`.
type MatchFibLocal struct {
	Field AddrField
}

// MatchNumgen is true with probability 1/Mod: `numgen random mod 3 0` (nft's listing of ... == 0).
type MatchNumgen struct {
	Mod uint32
}

// VmapKey is the key a verdict map is looked up with.
type VmapKey uint8

const (
	// VmapKeyAddrProtoPort is `ip daddr . meta l4proto . th dport`.
	VmapKeyAddrProtoPort VmapKey = iota
	// VmapKeyProtoPort is `meta l4proto . th dport`.
	VmapKeyProtoPort
)

// Vmap looks the packet up in a named verdict map and applies the verdict found:
// `ip daddr . meta l4proto . th dport vmap @service-ips`.
type Vmap struct {
	Key VmapKey
	Map string
}

// VerdictKind is what a verdict does.
type VerdictKind uint8

const (
	// VerdictAccept ends this table's processing of the packet.
	VerdictAccept VerdictKind = iota + 1
	// VerdictDrop drops the packet.
	VerdictDrop
	// VerdictReturn returns to the calling chain.
	VerdictReturn
	// VerdictJump calls a chain and continues here afterwards.
	VerdictJump
	// VerdictGoto continues in a chain without coming back.
	VerdictGoto
)

// Verdict is a verdict statement (`jump mark-for-masquerade`, `drop`), also used as map data.
type Verdict struct {
	Kind  VerdictKind
	Chain string
}

// MarkSet sets the masquerade bit (`meta mark set meta mark | 0x00000001`) or clears it with Xor.
type MarkSet struct {
	Bits uint32
	Xor  bool
}

// Masquerade source-NATs to the outgoing interface's address: `masquerade fully-random`.
type Masquerade struct {
	FullyRandom bool
}

// DNAT rewrites the destination to an endpoint: `dnat to 10.128.2.151:8080`; a MatchProto must precede it.
type DNAT struct {
	Addr netip.Addr
	Port uint16
}

// DNATMap rewrites the destination to the endpoint a random index selects in the shared endpoint map:
// `dnat ip to numgen random mod 3 offset 4096 map @service-endpoints` picks one of elements 4096..4098,
// each with probability 1/3. A MatchProto must precede it.
type DNATMap struct {
	Mod, Offset uint32
	Map         string
}

// Reject refuses the packet at once: a TCP reset (`reject with tcp reset`, only for TCP) or an ICMP port
// unreachable (`reject`), so that clients see "connection refused" rather than a timeout.
type Reject struct {
	TCPReset bool
}

// Notrack exempts the packet from connection tracking: `notrack`.
type Notrack struct{}

// AffinityUpdate records the packet's source address in a dynamic set: `update @affinity-X { ip saddr }`.
type AffinityUpdate struct {
	Set string
}

func (MatchAddr) isStmt()         {}
func (MatchAddrSet) isStmt()      {}
func (MatchProto) isStmt()        {}
func (MatchDPort) isStmt()        {}
func (MatchMark) isStmt()         {}
func (MatchCtStateNew) isStmt()   {}
func (MatchCtStatusDNAT) isStmt() {}
func (MatchFibLocal) isStmt()     {}
func (MatchNumgen) isStmt()       {}
func (Vmap) isStmt()              {}
func (Verdict) isStmt()           {}
func (MarkSet) isStmt()           {}
func (Masquerade) isStmt()        {}
func (DNAT) isStmt()              {}
func (DNATMap) isStmt()           {}
func (Reject) isStmt()            {}
func (Notrack) isStmt()           {}
func (AffinityUpdate) isStmt()    {}
