package nftables

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
	"github.com/vxflow/vxflow/internal/testutil/textdiff"
)

// TestRenderGroupedMatchesFresh applies random changes (rendertest.Churn, including Services that claim
// the same keys) and checks after each one that the Renderer's grouped Ruleset is the table a fresh
// Render gives, that Counts agrees with the flat shape, and that only the changed Services got new groups.
func TestRenderGroupedMatchesFresh(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		node    func(*model.ServiceNode)
		changed bool
	}{
		{"chains-changed-keys", Options{}, nil, true},
		{"shared-input-changed-keys", Options{SharedInput: true}, nil, true},
		{"endpoint-map-changed-keys", Options{EndpointMap: true}, nil, true},
		{"chains", Options{}, nil, false},
		{"inline", Options{InlineEndpoints: true}, nil, false},
		{"endpoint-map", Options{EndpointMap: true}, nil, false},
		{"endpoint-map-system-datapath", Options{EndpointMap: true}, func(n *model.ServiceNode) { n.Datapath = model.DatapathSystem }, false},
	} {
		for seed := uint64(1); seed <= 4; seed++ {
			t.Run(fmt.Sprintf("%s/seed-%d", tc.name, seed), func(t *testing.T) {
				churn := rendertest.NewChurn(seed)
				set := churn.ChurnSet(12)
				if tc.node != nil {
					tc.node(&set.Node)
				}
				rr := NewRenderer(tc.opts)
				prev := rr.RenderGrouped(set)
				shadowed := 0
				last := snapshot(set)
				for step := range 150 {
					if tc.opts.SharedInput {
						// What the Renderer keeps must not change: the churn writes into fresh copies.
						for i := range set.Services {
							set.Services[i] = set.Services[i].Clone()
						}
					}
					what := churn.Step(set)
					in := set
					if step%37 == 36 && !tc.changed {
						in = shuffled(set, seed) // another order than the model's: same table
					}
					if step == 100 {
						set.Node.VXLANPort++ // node facts change: everything is re-rendered
					}
					var got *Ruleset
					if tc.changed {
						keys := changedKeys(last, set)
						if step%5 == 0 && len(set.Services) > 0 {
							keys = append(keys, set.Services[0].Key()) // listed but unchanged
						}
						got = rr.RenderGroupedChanged(in, keys)
						last = snapshot(set)
					} else {
						got = rr.RenderGrouped(in)
					}
					want := NewRenderer(tc.opts).Render(in)
					if g, w := canonical(t, got), canonical(t, want); g != w {
						t.Fatalf("step %d (%s): incremental and fresh renders differ:\n%s", step, what, textdiff.Lines(w, g))
					}
					gs, gc, gr, ge := got.Counts()
					ws, wc, wr, we := want.Counts()
					if gs != ws || gc != wc || gr != wr || ge != we {
						t.Fatalf("step %d (%s): Counts %d %d %d %d, flat %d %d %d %d", step, what, gs, gc, gr, ge, ws, wc, wr, we)
					}
					if step != 100 {
						checkReused(t, prev, got)
					}
					for _, g := range got.Services {
						for _, e := range g.elements {
							if e.shadowed {
								shadowed++
							}
						}
					}
					prev = got
				}
				if rr.fallbacks > 0 {
					t.Errorf("%d calls with the exact changed keys fell back to comparing every Service", rr.fallbacks)
				}
				if shadowed == 0 {
					t.Errorf("no step had two Services claim one key: the churn misses the case")
				}
			})
		}
	}
}

// snapshot deep-copies the Services by key.
func snapshot(set *model.ServiceSet) map[string]model.Service {
	m := map[string]model.Service{}
	for i := range set.Services {
		m[set.Services[i].Key()] = set.Services[i].Clone()
	}
	return m
}

// changedKeys returns the keys of the Services added, deleted or changed since the snapshot.
func changedKeys(last map[string]model.Service, set *model.ServiceSet) []string {
	var keys []string
	seen := map[string]bool{}
	for i := range set.Services {
		s := &set.Services[i]
		seen[s.Key()] = true
		if o, ok := last[s.Key()]; !ok || !o.Equal(s) {
			keys = append(keys, s.Key())
		}
	}
	for k := range last {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	return keys
}

// shuffled returns a copy of set with its Services in a random order.
func shuffled(set *model.ServiceSet, seed uint64) *model.ServiceSet {
	c := *set
	c.Services = append([]model.Service(nil), set.Services...)
	r := rand.New(rand.NewPCG(seed, 7))
	r.Shuffle(len(c.Services), func(i, j int) { c.Services[i], c.Services[j] = c.Services[j], c.Services[i] })
	return &c
}

// checkReused fails the test for a Service that did not change but got a new group, unless it shares a
// key of a shared set with another Service (who holds the key may then have changed).
func checkReused(t *testing.T, prev, next *Ruleset) {
	t.Helper()
	type claim struct {
		set string
		key ElementKey
	}
	holders := map[claim]map[string]bool{}
	for _, rs := range []*Ruleset{prev, next} {
		for _, g := range rs.Services {
			for _, e := range g.elements {
				c := claim{e.set, e.element().Key()}
				if holders[c] == nil {
					holders[c] = map[string]bool{}
				}
				holders[c][g.Key] = true
			}
		}
	}
	old := map[string]*ServiceRules{}
	for _, g := range prev.Services {
		old[g.Key] = g
	}
	for _, g := range next.Services {
		o := old[g.Key]
		if o == nil || o == g || !o.svc.Equal(&g.svc) {
			continue
		}
		shares := false
		for _, e := range g.elements {
			shares = shares || len(holders[claim{e.set, e.element().Key()}]) > 1
		}
		if !shares {
			t.Errorf("unchanged Service %s got a new group", g.Key)
		}
	}
}

// canonical prints a ruleset with the endpoint maps resolved: the base indexes a Renderer hands out
// depend on its history, so each DNATMap rule is printed with the endpoints it selects, in order, and the
// maps themselves are checked to hold exactly the elements that rules select.
func canonical(t *testing.T, rs *Ruleset) string {
	t.Helper()
	flat := rs.Flat()
	maps := map[string]map[uint32]string{}
	out := &Ruleset{}
	for _, s := range flat.Sets {
		if s.Type != SetTypeEndpointMap {
			out.Sets = append(out.Sets, s)
			continue
		}
		m := map[uint32]string{}
		for _, e := range s.Elements {
			m[e.Index] = e.Target.String()
		}
		maps[s.Name] = m
	}
	used := 0
	for _, c := range flat.Chains {
		cc := &Chain{Name: c.Name, Base: c.Base}
		for _, r := range c.Rules {
			d, ok := r.Stmts[len(r.Stmts)-1].(DNATMap)
			if !ok {
				cc.Rules = append(cc.Rules, r)
				continue
			}
			if want := endpointMapName(d.Offset / EndpointMapStride % EndpointMapShards); d.Map != want {
				t.Fatalf("chain %s: base %d in map %s, want %s", c.Name, d.Offset, d.Map, want)
			}
			var targets []string
			for i := range d.Mod {
				tgt, ok := maps[d.Map][d.Offset+i]
				if !ok {
					t.Fatalf("chain %s: map %s lacks index %d", c.Name, d.Map, d.Offset+i)
				}
				targets = append(targets, tgt)
			}
			used += int(d.Mod)
			nr := Rule{Stmts: append(append([]Stmt(nil), r.Stmts[:len(r.Stmts)-1]...), resolvedDNATMap{strings.Join(targets, ",")}), Comment: r.Comment}
			cc.Rules = append(cc.Rules, nr)
		}
		out.Chains = append(out.Chains, cc)
	}
	total := 0
	for _, m := range maps {
		total += len(m)
	}
	if total != used {
		t.Fatalf("endpoint maps hold %d elements, rules select %d", total, used)
	}
	return out.String()
}

// resolvedDNATMap stands for a DNATMap rule in canonical's output.
type resolvedDNATMap struct{ targets string }

func (d resolvedDNATMap) String() string { return "dnat to one of " + d.targets }
func (resolvedDNATMap) isStmt()          {}

// TestRenderGroupedChangedFallsBack gives RenderGroupedChanged changes that do not fit (an added Service
// left out of the keys, a malformed key): it must compare every Service instead and still be right.
func TestRenderGroupedChangedFallsBack(t *testing.T) {
	set := rendertest.ScaleSet(30, 2)
	rr := NewRenderer(Options{})
	rr.RenderGroupedChanged(set, nil) // the first call renders everything
	extra := set.Services[3].Clone()
	extra.Name += "-extra"
	set.Services = append(set.Services, extra)
	rendertest.SortServices(set)
	for i, keys := range [][]string{nil, {"no-slash"}} {
		got := rr.RenderGroupedChanged(set, keys)
		if want := Render(set).String(); got.String() != want {
			t.Fatalf("case %d: incremental and fresh renders differ:\n%s", i, textdiff.Lines(want, got.String()))
		}
		if rr.fallbacks != i+1 {
			t.Errorf("case %d: got %d fallbacks, want %d", i, rr.fallbacks, i+1)
		}
		set.Services = set.Services[:len(set.Services)-1]
	}
}

// TestSetElementRoundTrip checks the compact storage of group elements: every shape the renderer makes
// comes back equal, and an address that does not fit four bytes is kept whole.
func TestSetElementRoundTrip(t *testing.T) {
	goTo := Verdict{Kind: VerdictGoto, Chain: "service-ns/a/tcp/http"}
	for _, e := range []Element{
		{Prefix: netip.MustParsePrefix("172.30.0.1/32")},
		{Prefix: netip.MustParsePrefix("10.0.0.1/32"), Proto: model.L4ProtoUDP, Port: 53, Verdict: goTo},
		{Proto: model.L4ProtoTCP, Port: 30080, Verdict: Verdict{Kind: VerdictDrop}},
		{Index: 16385, Target: netip.MustParseAddrPort("10.128.0.60:8080")},
		{Prefix: netip.MustParsePrefix("0.0.0.0/0")},
		{Prefix: netip.MustParsePrefix("fd00::1/128"), Port: 80},
		{Index: 1, Target: netip.MustParseAddrPort("[fd00::1]:80")},
	} {
		se := newSetElement(serviceIPsMap, e)
		if got := se.element(); got != e {
			t.Errorf("%+v came back as %+v", e, got)
		}
		other := newSetElement(serviceIPsMap, e)
		if !se.sameKey(&other) {
			t.Errorf("%+v: not the same key as itself", e)
		}
	}
}
