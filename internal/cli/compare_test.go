package cli

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
)

// TestCompareIgnoresEndpointMapSlots checks that a table whose Services got other endpoint map slots (an
// agent that saw a Service come and go) compares equal to a fresh rendering, and that a different
// endpoint does not.
func TestCompareIgnoresEndpointMapSlots(t *testing.T) {
	opts := nftables.Options{EndpointMap: true}
	full := rendertest.ScaleSet(4, 2)
	reduced := *full
	reduced.Services = slices.Clone(full.Services[1:])

	agent := nftables.NewRenderer(opts)
	agent.Render(full) // svc-0 takes the first slot and keeps the others from it
	live := agent.Render(&reduced)
	fresh := nftables.NewRenderer(opts).Render(&reduced)
	if live.String() == fresh.String() {
		t.Fatal("the test needs two renderings with different slots")
	}
	if a, b := cloneForCompare(live), cloneForCompare(fresh); a != b {
		t.Errorf("tables that differ only in endpoint map slots compare unequal:\n%s", lineDiff(b, a))
	}

	moved := reduced
	moved.Services = slices.Clone(reduced.Services)
	moved.Services[0].Ports = slices.Clone(moved.Services[0].Ports)
	moved.Services[0].Ports[0].Endpoints = slices.Clone(moved.Services[0].Ports[0].Endpoints)
	moved.Services[0].Ports[0].Endpoints[0].Addr = netip.MustParseAddr("10.131.255.254")
	other := nftables.NewRenderer(opts).Render(&moved)
	if cloneForCompare(other) == cloneForCompare(fresh) {
		t.Error("tables with different endpoints compare equal")
	}
}
