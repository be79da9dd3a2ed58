package cli

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// NFTPacket is the first packet of a connection as it meets table ip vxflow.
type NFTPacket struct {
	Src, Dst         netip.Addr
	Proto            model.L4Proto
	SrcPort, DstPort uint16
	// Mark is the packet mark on arrival (normally 0).
	Mark uint32
}

// String prints the packet as proto src:port -> dst:port.
func (p NFTPacket) String() string {
	return fmt.Sprintf("%s %s -> %s", p.Proto, netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
}

// NFTRoute is the node's routing decision for a packet after destination NAT, which the tracer cannot make
// itself: whether it is for the node, and the address of the interface it leaves by (what masquerade uses).
type NFTRoute struct {
	Local    bool
	OutIface string
	OutAddr  netip.Addr
}

// NFTEnv are the node facts the tracer needs.
type NFTEnv struct {
	// LocalAddrs are the node's own addresses, for `fib saddr type local` and to tell input from forward.
	LocalAddrs []netip.Addr
	// Route decides where a packet with destination dst goes after prerouting or output.
	Route func(dst netip.Addr) NFTRoute
	// PreferEndpoint, when valid, makes the load-balancing choice land on this endpoint if it is a
	// candidate; otherwise the first candidate is taken.
	PreferEndpoint netip.AddrPort
	// LocallyGenerated is true for a packet sent by the node itself (output hook), false for one that
	// arrives on an interface (prerouting hook).
	LocallyGenerated bool
}

// NFTEvent is one rule that did something to the packet.
type NFTEvent struct {
	Hook  string `json:"hook"`
	Chain string `json:"chain"`
	Rule  string `json:"rule"`
	// What says what happened, for example "element 10.10.12.208 . tcp . 8080 : goto external-…".
	What string `json:"what,omitempty"`
}

// EndpointCandidate is one endpoint a service chain may choose, with its probability.
type EndpointCandidate struct {
	Chain       string         `json:"chain"`
	Endpoint    netip.AddrPort `json:"endpoint"`
	Probability float64        `json:"probability"`
	Chosen      bool           `json:"chosen"`
}

// Final verdicts of an NFTResult.
const (
	NFTAccept = "accept"
	NFTDrop   = "drop"
	NFTReject = "reject"
)

// NFTResult is the packet's way through table ip vxflow on one node.
type NFTResult struct {
	// Events are the rules that acted, in order.
	Events []NFTEvent `json:"events"`
	// Verdict is NFTAccept, NFTDrop or NFTReject.
	Verdict string `json:"verdict"`
	// DropEvent is the rule that dropped or rejected the packet.
	DropEvent *NFTEvent `json:"dropEvent,omitempty"`
	// MapElement is the verdict map element that matched the service address, MapName its map.
	MapElement string `json:"mapElement,omitempty"`
	MapName    string `json:"mapName,omitempty"`
	// ServiceChain is the per-service-port chain that chose the endpoint; Candidates its choices.
	ServiceChain string              `json:"serviceChain,omitempty"`
	Candidates   []EndpointCandidate `json:"candidates,omitempty"`
	// DNAT is the endpoint the packet was rewritten to, DNATEvent the rule that did it.
	DNAT      netip.AddrPort `json:"dnat,omitzero"`
	DNATEvent *NFTEvent      `json:"dnatEvent,omitempty"`
	// Marked is true when a rule set the masquerade mark bit.
	Marked bool `json:"marked"`
	// Masquerade is true when postrouting masqueraded the packet, MasqAddr its new source, MasqEvent the
	// rule.
	Masquerade bool       `json:"masquerade"`
	MasqAddr   netip.Addr `json:"masqueradeTo,omitzero"`
	MasqEvent  *NFTEvent  `json:"masqueradeEvent,omitempty"`
	// Route is the routing decision taken after prerouting or output.
	Route NFTRoute `json:"route"`
	// Packet is the packet as it leaves the node's netfilter (after DNAT and masquerade).
	Packet NFTPacket `json:"packet"`
}

// maxChainDepth bounds jumps, so that a loop in a listed ruleset cannot hang the tracer.
const maxChainDepth = 32

// nftTracer walks one packet through a ruleset.
type nftTracer struct {
	rs     *nftables.Ruleset
	env    NFTEnv
	pkt    NFTPacket
	res    *NFTResult
	dnated bool
	hook   string
	chains map[string]*nftables.Chain
	sets   map[string]*nftables.Set
}

// TraceNFT follows the first packet of a connection through table ip vxflow: the hooks it crosses
// (prerouting or output, then input or forward, then postrouting), every rule that acts on it, which map
// element and chains DNAT it, and whether it is marked and masqueraded. It evaluates only the statement
// shapes the renderer writes (the set is closed, see nftables.Stmt), so it is exact for them. Load
// balancing is not random here: the chosen endpoint is env.PreferEndpoint when it is a candidate, else the
// first, and every candidate is listed with its probability.
func TraceNFT(rs *nftables.Ruleset, pkt NFTPacket, env NFTEnv) *NFTResult {
	t := &nftTracer{rs: rs, env: env, pkt: pkt, res: &NFTResult{Verdict: NFTAccept},
		chains: map[string]*nftables.Chain{}, sets: map[string]*nftables.Set{}}
	for _, c := range rs.Chains {
		t.chains[c.Name] = c
	}
	for _, s := range rs.Sets {
		t.sets[s.Name] = s
	}
	first := nftables.HookPrerouting
	if env.LocallyGenerated {
		first = nftables.HookOutput
	}
	if !t.runHook(first) {
		return t.done()
	}
	route := NFTRoute{}
	if env.Route != nil {
		route = env.Route(t.pkt.Dst)
	}
	if slices.Contains(env.LocalAddrs, t.pkt.Dst) {
		route.Local = true
	}
	t.res.Route = route
	if !env.LocallyGenerated {
		next := nftables.HookForward
		if route.Local {
			next = nftables.HookInput
		}
		if !t.runHook(next) {
			return t.done()
		}
	}
	if !route.Local || env.LocallyGenerated {
		t.runHook(nftables.HookPostrouting)
	}
	return t.done()
}

func (t *nftTracer) done() *NFTResult {
	t.res.Packet = t.pkt
	t.res.markChosen()
	return t.res
}

// runHook evaluates the base chains of a hook in priority order; false when the packet was dropped.
func (t *nftTracer) runHook(hook nftables.Hook) bool {
	t.hook = string(hook)
	var base []*nftables.Chain
	for _, c := range t.rs.Chains {
		if c.Base != nil && c.Base.Hook == hook {
			base = append(base, c)
		}
	}
	slices.SortStableFunc(base, func(a, b *nftables.Chain) int { return cmp.Compare(a.Base.Priority, b.Base.Priority) })
	for _, c := range base {
		switch t.chain(c, 0) {
		case nftables.VerdictDrop:
			return false
		}
	}
	return true
}

// chain evaluates a chain and returns its outcome: VerdictAccept (stop this base chain), VerdictDrop (the
// packet is gone) or VerdictReturn (fell off the end or returned).
func (t *nftTracer) chain(c *nftables.Chain, depth int) nftables.VerdictKind {
	if depth > maxChainDepth {
		t.drop(c.Name, "", "chains nest deeper than the tracer follows (a loop?)", NFTDrop)
		return nftables.VerdictDrop
	}
	for _, r := range c.Rules {
		v := t.rule(c, r, depth)
		if v != 0 {
			return v
		}
	}
	return nftables.VerdictReturn
}

func (t *nftTracer) event(chain string, r nftables.Rule, what string) *NFTEvent {
	t.res.Events = append(t.res.Events, NFTEvent{Hook: t.hook, Chain: chain, Rule: r.String(), What: what})
	return &t.res.Events[len(t.res.Events)-1]
}

func (t *nftTracer) drop(chain, rule, what, verdict string) {
	t.res.Events = append(t.res.Events, NFTEvent{Hook: t.hook, Chain: chain, Rule: rule, What: what})
	e := t.res.Events[len(t.res.Events)-1]
	t.res.DropEvent, t.res.Verdict = &e, verdict
}

// rule evaluates one rule; 0 means "go on with the next rule".
func (t *nftTracer) rule(c *nftables.Chain, r nftables.Rule, depth int) nftables.VerdictKind {
	for _, s := range r.Stmts {
		switch s := s.(type) {
		case nftables.MatchAddr:
			if s.Prefix.Contains(t.addr(s.Field)) == s.Negate {
				return 0
			}
		case nftables.MatchAddrSet:
			if t.inSet(s.Set, t.addr(s.Field)) == s.Negate {
				return 0
			}
		case nftables.MatchProto:
			if t.pkt.Proto != s.Proto {
				return 0
			}
		case nftables.MatchDPort:
			if t.pkt.Proto != s.Proto || t.pkt.DstPort != s.Port {
				return 0
			}
		case nftables.MatchMark:
			want := uint32(0)
			if s.Set {
				want = s.Mask
			}
			if t.pkt.Mark&s.Mask != want {
				return 0
			}
		case nftables.MatchCtStateNew:
			// Traces follow the first packet of a connection.
		case nftables.MatchCtStatusDNAT:
			if !t.dnated {
				return 0
			}
		case nftables.MatchFibLocal:
			if !slices.Contains(t.env.LocalAddrs, t.addr(s.Field)) {
				return 0
			}
		case nftables.MatchNumgen:
			if !t.chooseBranch(c, r) {
				return 0
			}
		case nftables.Notrack, nftables.AffinityUpdate:
		case nftables.MarkSet:
			if s.Xor {
				t.pkt.Mark ^= s.Bits
			} else {
				t.pkt.Mark |= s.Bits
				t.res.Marked = true
			}
			t.event(c.Name, r, fmt.Sprintf("mark is now %#x", t.pkt.Mark))
		case nftables.Vmap:
			el, ok := t.lookup(s)
			if !ok {
				return 0
			}
			what := fmt.Sprintf("element %s", elementText(t.sets[s.Map], el))
			if s.Map == "service-ips" || s.Map == "service-nodeports" {
				t.res.MapElement, t.res.MapName = elementText(t.sets[s.Map], el), s.Map
			}
			t.event(c.Name, r, what)
			if v := t.verdict(c, r, el.Verdict, depth); v != 0 {
				return v
			}
			return 0
		case nftables.Verdict:
			if s.Kind == nftables.VerdictJump || s.Kind == nftables.VerdictGoto {
				t.event(c.Name, r, "")
			}
			return t.verdict(c, r, s, depth)
		case nftables.DNATMap:
			el, ok := t.pickMapped(s)
			if !ok {
				return 0 // a lookup miss ends the rule, as in the kernel
			}
			from := netip.AddrPortFrom(t.pkt.Dst, t.pkt.DstPort)
			t.pkt.Dst, t.pkt.DstPort = el.Target.Addr(), el.Target.Port()
			t.dnated = true
			t.res.DNAT = el.Target
			t.res.DNATEvent = t.event(c.Name, r, fmt.Sprintf("DNAT %s -> %s (element %d of @%s)", from, el.Target, el.Index, s.Map))
			return nftables.VerdictAccept
		case nftables.DNAT:
			from := netip.AddrPortFrom(t.pkt.Dst, t.pkt.DstPort)
			t.pkt.Dst, t.pkt.DstPort = s.Addr, s.Port
			t.dnated = true
			t.res.DNAT = netip.AddrPortFrom(s.Addr, s.Port)
			t.res.DNATEvent = t.event(c.Name, r, fmt.Sprintf("DNAT %s -> %s", from, t.res.DNAT))
			return nftables.VerdictAccept
		case nftables.Masquerade:
			route := t.res.Route
			t.res.Masquerade, t.res.MasqAddr = true, route.OutAddr
			what := "masquerade to the address of the outgoing interface"
			if route.OutAddr.IsValid() {
				what = fmt.Sprintf("masquerade %s -> %s (%s's address)", t.pkt.Src, route.OutAddr, orNone(route.OutIface))
				t.pkt.Src = route.OutAddr
			}
			if s.FullyRandom {
				what += ", source port fully random"
			}
			t.res.MasqEvent = t.event(c.Name, r, what)
			return nftables.VerdictAccept
		case nftables.Reject:
			how := "ICMP port unreachable"
			if s.TCPReset {
				if t.pkt.Proto != model.L4ProtoTCP {
					return 0 // `reject with tcp reset` only matches TCP
				}
				how = "TCP reset"
			}
			t.drop(c.Name, r.String(), "rejected with "+how+rejectWhy(r), NFTReject)
			return nftables.VerdictDrop
		default:
			t.event(c.Name, r, fmt.Sprintf("statement %q is not followed by the tracer", s))
			return 0
		}
	}
	return 0
}

// rejectWhy adds the rule's comment, which says why the renderer rejects.
func rejectWhy(r nftables.Rule) string {
	if r.Comment != "" {
		return ": " + r.Comment
	}
	return ""
}

// verdict applies a verdict found in rule r (directly or in a map element).
func (t *nftTracer) verdict(c *nftables.Chain, r nftables.Rule, v nftables.Verdict, depth int) nftables.VerdictKind {
	switch v.Kind {
	case nftables.VerdictAccept:
		return nftables.VerdictAccept
	case nftables.VerdictDrop:
		t.drop(c.Name, r.String(), "dropped"+rejectWhy(r), NFTDrop)
		return nftables.VerdictDrop
	case nftables.VerdictReturn:
		return nftables.VerdictReturn
	case nftables.VerdictJump, nftables.VerdictGoto:
		next, ok := t.chains[v.Chain]
		if !ok {
			t.drop(c.Name, r.String(), fmt.Sprintf("chain %s does not exist", v.Chain), NFTDrop)
			return nftables.VerdictDrop
		}
		if isServicePortChain(v.Chain) {
			t.res.ServiceChain = v.Chain
			t.res.Candidates = t.candidates(next)
		}
		out := t.chain(next, depth+1)
		switch {
		case out == nftables.VerdictDrop || out == nftables.VerdictAccept:
			return out
		case v.Kind == nftables.VerdictGoto:
			return nftables.VerdictReturn // a goto returns to the caller's caller
		}
	}
	return 0
}

// isServicePortChain reports whether a chain is a per-service-port policy chain (service-ns/name/proto/port
// or local-…), the one that picks an endpoint, as opposed to fixed chains such as service-endpoints-check.
func isServicePortChain(name string) bool {
	return (strings.HasPrefix(name, "service-") || strings.HasPrefix(name, "local-")) && strings.Count(name, "/") >= 3
}

func (t *nftTracer) addr(f nftables.AddrField) netip.Addr {
	if f == nftables.SAddr {
		return t.pkt.Src
	}
	return t.pkt.Dst
}

func (t *nftTracer) inSet(name string, a netip.Addr) bool {
	s, ok := t.sets[name]
	if !ok {
		return false
	}
	for _, e := range s.Elements {
		if e.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// lookup finds the packet's element in a verdict map.
func (t *nftTracer) lookup(v nftables.Vmap) (nftables.Element, bool) {
	s, ok := t.sets[v.Map]
	if !ok {
		return nftables.Element{}, false
	}
	for _, e := range s.Elements {
		if e.Proto != t.pkt.Proto || e.Port != t.pkt.DstPort {
			continue
		}
		if v.Key == nftables.VmapKeyAddrProtoPort && !e.Prefix.Contains(t.pkt.Dst) {
			continue
		}
		return e, true
	}
	return nftables.Element{}, false
}

// elementText prints an element as nft lists it.
func elementText(s *nftables.Set, e nftables.Element) string {
	key := fmt.Sprintf("%s . %d", e.Proto, e.Port)
	if s != nil && s.Type == nftables.SetTypeAddrProtoPortVerdict {
		key = fmt.Sprintf("%s . %s", prefixText(e.Prefix), key)
	}
	return key + " : " + e.Verdict.String()
}

func prefixText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// candidates lists the endpoints a service chain may choose, with the cascade's probabilities.
func (t *nftTracer) candidates(c *nftables.Chain) []EndpointCandidate {
	var out []EndpointCandidate
	remaining := 1.0
	for _, r := range c.Rules {
		var mod uint32
		var target string
		for _, s := range r.Stmts {
			switch s := s.(type) {
			case nftables.MatchNumgen:
				mod = s.Mod
			case nftables.Verdict:
				if s.Kind == nftables.VerdictGoto && strings.HasPrefix(s.Chain, "endpoint-") {
					target = s.Chain
				}
			case nftables.MatchAddrSet:
				target = "" // an affinity rule, not a choice
				mod = 0
			case nftables.DNATMap:
				// numgen picks each of the Mod indexes with the same probability; a missing element
				// keeps its share (the packet goes on to the next rule), which is not a candidate.
				for _, e := range t.mapped(s) {
					out = append(out, EndpointCandidate{Chain: fmt.Sprintf("@%s[%d]", s.Map, e.Index), Endpoint: e.Target,
						Probability: remaining / float64(s.Mod)})
				}
				return out
			}
		}
		if target == "" || slices.ContainsFunc(out, func(e EndpointCandidate) bool { return e.Chain == target }) {
			continue
		}
		p := remaining
		if mod > 0 {
			p = remaining / float64(mod)
		}
		remaining -= p
		out = append(out, EndpointCandidate{Chain: target, Endpoint: t.endpointOf(target), Probability: p})
	}
	return out
}

// mapped returns the endpoint map elements a DNATMap chooses from, in index order; missing ones are left out.
func (t *nftTracer) mapped(d nftables.DNATMap) []nftables.Element {
	s, ok := t.sets[d.Map]
	if !ok || s.Type != nftables.SetTypeEndpointMap {
		return nil
	}
	var out []nftables.Element
	for _, e := range s.Elements {
		if e.Index >= d.Offset && e.Index-d.Offset < d.Mod {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b nftables.Element) int { return int(int64(a.Index) - int64(b.Index)) })
	return out
}

// pickMapped decides a DNATMap's numgen: the preferred endpoint when it is one of the elements, else the
// element at the offset (numgen's 0); false when that element is missing (the kernel's lookup fails).
func (t *nftTracer) pickMapped(d nftables.DNATMap) (nftables.Element, bool) {
	els := t.mapped(d)
	if want := t.env.PreferEndpoint; want.IsValid() {
		for _, e := range els {
			if e.Target == want {
				return e, true
			}
		}
	}
	if len(els) == 0 || els[0].Index != d.Offset {
		return nftables.Element{}, false
	}
	return els[0], true
}

// endpointOf finds the DNAT target of an endpoint chain.
func (t *nftTracer) endpointOf(chain string) netip.AddrPort {
	c, ok := t.chains[chain]
	if !ok {
		return netip.AddrPort{}
	}
	for _, r := range c.Rules {
		for _, s := range r.Stmts {
			if d, ok := s.(nftables.DNAT); ok {
				return netip.AddrPortFrom(d.Addr, d.Port)
			}
		}
	}
	return netip.AddrPort{}
}

// chooseBranch decides a `numgen random mod N 0` match: true when its goto leads to the preferred
// endpoint, or, without a preference (or when the preferred one is not a candidate), for the first branch.
func (t *nftTracer) chooseBranch(c *nftables.Chain, r nftables.Rule) bool {
	target := ""
	for _, s := range r.Stmts {
		if v, ok := s.(nftables.Verdict); ok && v.Kind == nftables.VerdictGoto {
			target = v.Chain
		}
	}
	want := t.env.PreferEndpoint
	if want.IsValid() && slices.ContainsFunc(t.res.Candidates, func(e EndpointCandidate) bool { return e.Endpoint == want }) {
		return t.endpointOf(target) == want
	}
	return true
}

// markChosen flags the candidate the trace followed.
func (r *NFTResult) markChosen() {
	for i := range r.Candidates {
		r.Candidates[i].Chosen = r.DNAT.IsValid() && r.Candidates[i].Endpoint == r.DNAT
	}
}
