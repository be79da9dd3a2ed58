package nft

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
	"github.com/vxflow/vxflow/internal/testutil/textdiff"
)

// newTestSyncer creates a network namespace and a Syncer programming it; both go away in Cleanup.
func newTestSyncer(t *testing.T, label string) (*Syncer, string) {
	t.Helper()
	ovsnode.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("failed to find nft (apt-get install nftables): %v", err)
	}
	ns := ovsnode.NewNetNS(t, label)
	logger, _ := ktesting.NewTestContext(t)
	s, err := NewSyncer(Options{NetNSPath: ovsnode.NetNSPath(ns), Logger: logger})
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, ns
}

// mustSync syncs and fails the test on error.
func mustSync(t *testing.T, s *Syncer, r *nftables.Ruleset) Result {
	t.Helper()
	res, err := s.Sync(context.Background(), r)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return res
}

// nft runs nft inside the namespace (tests only: the applier itself never execs nft).
func nft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := ovsnode.RunIn(ns, "nft", args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// listTable returns `nft list table ip vxflow` in the namespace.
func listTable(t *testing.T, ns string) string {
	t.Helper()
	return nft(t, ns, "list", "table", "ip", nftables.TableName)
}

// requireSameTable compares the kernel's listing with the rendered text, modulo the order of blocks and of
// elements (hash sets and partial syncs reorder them) and the entries of dynamic sets.
func requireSameTable(t *testing.T, ns string, want *nftables.Ruleset) {
	t.Helper()
	got := normalizeListing(listTable(t, ns))
	exp := normalizeListing(want.String())
	if got != exp {
		t.Fatalf("kernel table differs from the rendered one:\n--- rendered\n+++ kernel\n%s", textdiff.Lines(exp, got))
	}
}

// normalizeListing parses `nft list table` text into blocks, sorts the elements inside each block and the
// blocks themselves, and drops the elements of dynamic sets and rule handles or counters if any.
func normalizeListing(s string) string {
	var blocks []string
	var cur []string
	var elems []string
	inElems, dynamic := false, false
	flush := func() {
		if len(cur) == 0 {
			return
		}
		if len(elems) > 0 && !dynamic {
			slices.Sort(elems)
			cur = append(cur, "elements = { "+strings.Join(elems, ", ")+" }")
		}
		blocks = append(blocks, strings.Join(cur, "\n"))
		cur, elems, dynamic = nil, nil, false
	}
	for _, raw := range strings.Split(s, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || strings.HasPrefix(line, "table ") || line == "}" && !strings.HasPrefix(raw, "\t"):
			continue
		case inElems || strings.HasPrefix(line, "elements = {"):
			body := strings.TrimPrefix(line, "elements = {")
			inElems = !strings.HasSuffix(body, "}")
			body = strings.TrimSuffix(body, "}")
			for _, e := range strings.Split(body, ",") {
				if e = strings.TrimSpace(e); e != "" {
					elems = append(elems, e)
				}
			}
		case strings.HasPrefix(line, "set ") || strings.HasPrefix(line, "map ") || strings.HasPrefix(line, "chain "):
			flush()
			cur = append(cur, line)
		case line == "}":
			flush()
		default:
			if strings.HasPrefix(line, "flags dynamic") {
				dynamic = true
			}
			if i := strings.Index(line, " # handle"); i >= 0 {
				line = line[:i]
			}
			cur = append(cur, line)
		}
	}
	flush()
	slices.Sort(blocks)
	return strings.Join(blocks, "\n\n") + "\n"
}
