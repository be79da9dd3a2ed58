package nftables

import (
	"flag"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
	"github.com/vxflow/vxflow/internal/testutil/textdiff"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestRenderGolden(t *testing.T) {
	for _, c := range rendertest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			got := NewRenderer(Options{InlineEndpoints: c.InlineEndpoints, EndpointMap: c.EndpointMap}).Render(c.Build(t)).String()
			for _, want := range c.Contains {
				if !strings.Contains(got, want) {
					t.Errorf("rendered ruleset lacks %q", want)
				}
			}
			path := rendertest.GoldenPath(c.Name)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("failed to read golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("rendered ruleset differs from %s (run with -update if intended):\n%s", path, textdiff.Lines(string(want), got))
			}
		})
	}
}

// TestRenderDeterministic renders the same input twice from differently ordered objects.
func TestRenderDeterministic(t *testing.T) {
	c := rendertest.Cases()[3]
	a := Render(c.Build(t)).String()
	for i, j := 0, len(c.Services)-1; i < j; i, j = i+1, j-1 {
		c.Services[i], c.Services[j] = c.Services[j], c.Services[i]
	}
	for _, es := range c.Slices {
		for i, j := 0, len(es.Endpoints)-1; i < j; i, j = i+1, j-1 {
			es.Endpoints[i], es.Endpoints[j] = es.Endpoints[j], es.Endpoints[i]
		}
	}
	if b := Render(c.Build(t)).String(); a != b {
		t.Errorf("rendering depends on input order:\n%s", textdiff.Lines(a, b))
	}
}

// TestRendererReuse renders twice with one Renderer, changing one Service in between: the result must be
// what Render gives, the unchanged Services must come back as the same groups and the changed one as new.
func TestRendererReuse(t *testing.T) {
	set := rendertest.ScaleSet(50, 3)
	rr := NewRenderer(Options{})
	first := rr.RenderGrouped(set)
	if got, want := first.String(), Render(set).String(); got != want {
		t.Fatalf("Renderer and Render differ:\n%s", textdiff.Lines(want, got))
	}
	set2 := rendertest.ScaleSet(50, 3)
	set2.Services[7].Ports[0].Endpoints = set2.Services[7].Ports[0].Endpoints[:2]
	second := rr.RenderGrouped(set2)
	if got, want := second.String(), Render(set2).String(); got != want {
		t.Fatalf("Renderer and Render differ after a change:\n%s", textdiff.Lines(want, got))
	}
	if len(second.Services) != 50 {
		t.Fatalf("got %d groups, want 50", len(second.Services))
	}
	for i, g := range second.Services {
		if reused := g == first.Services[i]; reused == (i == 7) {
			t.Errorf("group %d (%s): reused=%v", i, g.Key, reused)
		}
	}
	set2.Node.VXLANPort = 4790
	if third := rr.RenderGrouped(set2); third.Services[0] == second.Services[0] {
		t.Errorf("group reused across a change of node facts")
	}
}

// TestEndpointMapStableIndexes checks what makes an endpoint change cheap with Options.EndpointMap: a
// replaced endpoint changes only the Service's map element (its chains stay equal), every other Service
// keeps its base index, and the index of a deleted Service is reused by a later one.
func TestEndpointMapStableIndexes(t *testing.T) {
	rr := NewRenderer(Options{EndpointMap: true})
	set := rendertest.ScaleSet(20, 3)
	first := rr.RenderGrouped(set)
	if got, want := first.String(), NewRenderer(Options{EndpointMap: true}).Render(set).String(); got != want {
		t.Fatalf("Renderer and a fresh Renderer differ:\n%s", textdiff.Lines(want, got))
	}
	set2 := rendertest.ScaleSet(20, 3)
	set2.Services[5].Ports[0].Endpoints[1].Addr = netip.MustParseAddr("10.131.255.254")
	second := rr.RenderGrouped(set2)
	for i, g := range second.Services {
		if i != 5 {
			if g != first.Services[i] {
				t.Errorf("group %d not reused", i)
			}
			continue
		}
		if g == first.Services[i] || len(g.Chains) != len(first.Services[i].Chains) {
			t.Fatalf("group 5: got %d chains, reused=%v", len(g.Chains), g == first.Services[i])
		}
		for j, c := range g.Chains {
			if !c.Equal(first.Services[i].Chains[j]) {
				t.Errorf("chain %s changed for an endpoint replacement:\n%v\n%v", c.Name, first.Services[i].Chains[j].Rules, c.Rules)
			}
		}
	}
	elems := func(rs *Ruleset) map[ElementKey]ElementData {
		m := map[ElementKey]ElementData{}
		for _, s := range rs.Flat().Sets {
			if strings.HasPrefix(s.Name, serviceEndpointsMap+"-") {
				for _, e := range s.Elements {
					m[e.Key()] = e.Data()
				}
			}
		}
		return m
	}
	a, b := elems(first), elems(second)
	changed := 0
	for k, v := range a {
		if b[k] != v {
			changed++
		}
	}
	if len(a) != 60 || len(b) != 60 || changed != 1 {
		t.Fatalf("got %d and %d elements with %d changed, want 60, 60 and 1", len(a), len(b), changed)
	}
	// Delete Service 3, then add a new one: it takes Service 3's index.
	offset := func(rs *Ruleset, key string) uint32 {
		for _, g := range rs.Services {
			if g.Key == key {
				for _, r := range g.Chains[0].Rules {
					if d, ok := r.Stmts[len(r.Stmts)-1].(DNATMap); ok {
						return d.Offset
					}
				}
			}
		}
		t.Fatalf("no DNATMap rule for %s", key)
		return 0
	}
	old := offset(second, set2.Services[3].Key())
	removed := set2.Services[3]
	set2.Services = append(set2.Services[:3], set2.Services[4:]...)
	rr.RenderGrouped(set2)
	removed.Name = "svc-new"
	set2.Services = append(set2.Services, removed)
	if got := offset(rr.RenderGrouped(set2), removed.Key()); got != old {
		t.Errorf("new Service got offset %d, want the freed %d", got, old)
	}
}
