package nftables

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestRenderGolden(t *testing.T) {
	for _, c := range rendertest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			got := NewRenderer(Options{InlineEndpoints: c.InlineEndpoints}).Render(c.Build(t)).String()
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
				t.Errorf("rendered ruleset differs from %s (run with -update if intended):\n%s", path, lineDiff(string(want), got))
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
		t.Errorf("rendering depends on input order:\n%s", lineDiff(a, b))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	in := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if g[l] == 0 {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if w[l] == 0 {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// TestRendererReuse renders twice with one Renderer, changing one Service in between: the result must be
// what Render gives, the unchanged Services must come back as the same groups and the changed one as new.
func TestRendererReuse(t *testing.T) {
	set := rendertest.ScaleSet(50, 3)
	rr := NewRenderer(Options{})
	first := rr.Render(set)
	if got, want := first.String(), Render(set).String(); got != want {
		t.Fatalf("Renderer and Render differ:\n%s", lineDiff(want, got))
	}
	set2 := rendertest.ScaleSet(50, 3)
	set2.Services[7].Ports[0].Endpoints = set2.Services[7].Ports[0].Endpoints[:2]
	second := rr.Render(set2)
	if got, want := second.String(), Render(set2).String(); got != want {
		t.Fatalf("Renderer and Render differ after a change:\n%s", lineDiff(want, got))
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
	if third := rr.Render(set2); third.Services[0] == second.Services[0] {
		t.Errorf("group reused across a change of node facts")
	}
}
