package nft

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// feasibilityShape is the endpoint data map layout written by hand, loaded with nft -f: one shared map
// keyed by `numgen random mod N offset K` (K a per-Service-port base) whose data is address . port.
const feasibilityShape = `table ip epmcheck {
	map service-endpoints {
		typeof numgen random mod 1 : ip daddr . tcp dport
		elements = { 4096 : 10.128.0.2 . 8080, 4097 : 10.128.2.2 . 8080 }
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 172.30.0.10 tcp dport 80 goto svc
	}
	chain svc {
		meta l4proto tcp dnat ip to numgen random mod 2 offset 4096 map @service-endpoints
	}
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ct status dnat ip saddr 10.128.0.0/14 masquerade fully-random
	}
}
`

// TestEndpointMapShapeFeasibility proves that nft 1.0.6 and the kernel accept a named data map keyed by
// numgen with an offset as a DNAT target, that it spreads connections over its endpoints, and that
// replacing an element moves traffic to the new endpoint without touching any rule.
// Integration test: needs root.
func TestEndpointMapShapeFeasibility(t *testing.T) {
	tp := newTopology(t)
	serve(t, tp.podA, "pod-a", 8080)
	serve(t, tp.podB, "pod-b", 8080)
	serve(t, tp.podB, "pod-b-9090", 9090)
	f := filepath.Join(t.TempDir(), "shape.nft")
	if err := os.WriteFile(f, []byte(feasibilityShape), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := ovsnode.RunIn(tp.node, "nft", "-f", f); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	seen := map[string]int{}
	for range 40 {
		seen[mustDial(t, tp.podA, "tcp4", "172.30.0.10:80").server]++
	}
	if seen["pod-a"] == 0 || seen["pod-b"] == 0 {
		t.Fatalf("40 connections did not reach both endpoints: %v", seen)
	}
	// Replace endpoint 1 (pod-b:8080) by pod-b:9090: two element operations, no rule.
	if out, err := ovsnode.RunIn(tp.node, "nft", "delete element ip epmcheck service-endpoints { 4097 }; add element ip epmcheck service-endpoints { 4097 : 10.128.2.2 . 9090 }"); err != nil {
		t.Fatalf("nft element replace: %v\n%s", err, out)
	}
	seen = map[string]int{}
	for range 40 {
		seen[mustDial(t, tp.podA, "tcp4", "172.30.0.10:80").server]++
	}
	if seen["pod-a"] == 0 || seen["pod-b-9090"] == 0 || seen["pod-b"] != 0 {
		t.Fatalf("after replacing the element: %v, want pod-a and pod-b-9090 only", seen)
	}
}
