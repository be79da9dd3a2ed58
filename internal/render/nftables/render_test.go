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
			got := Render(c.Build(t)).String()
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
