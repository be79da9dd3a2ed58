package ovs

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/render/openflow"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// The same scenario runs against the Fake (a unit test) and the real Switch (an integration test), so the
// fake the agent's unit tests rely on behaves like OVS where it matters.

// conformanceHooks are the hand edits and failures the scenario inflicts on a switch.
type conformanceHooks struct {
	restartVSwitchd func()
	deleteFlow      func(f openflow.Flow)
	addPortDevice   func(name string) // creates the device behind a pod port, when the switch needs one
}

func runConformance(t *testing.T, s Interface, h conformanceHooks) {
	ctx := context.Background()
	if _, err := s.EnsurePodPort(ctx, "veth-x", nil); err == nil {
		t.Errorf("EnsurePodPort before EnsureBridge succeeded")
	}
	spec := BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450}
	if ch, err := s.EnsureBridge(ctx, spec); err != nil || len(ch) == 0 {
		t.Fatalf("EnsureBridge = %q, %v; want a creation", ch, err)
	}
	if ch, err := s.EnsureBridge(ctx, spec); err != nil || len(ch) != 0 {
		t.Fatalf("second EnsureBridge = %q, %v; want nothing", ch, err)
	}
	if _, err := s.EnsureBridge(ctx, BridgeSpec{DatapathType: "dpdk"}); err == nil {
		t.Errorf("EnsureBridge accepted datapath type dpdk")
	}

	h.addPortDevice("veth-a")
	h.addPortDevice("veth-b")
	a, errA := s.EnsurePodPort(ctx, "veth-a", map[string]string{"ip": "10.0.0.2"})
	b, errB := s.EnsurePodPort(ctx, "veth-b", map[string]string{"ip": "10.0.0.3"})
	if errA != nil || errB != nil || a < 3 || b < 3 || a == b {
		t.Fatalf("EnsurePodPort = %d, %v / %d, %v", a, errA, b, errB)
	}
	if again, err := s.EnsurePodPort(ctx, "veth-a", map[string]string{"ip": "10.0.0.2"}); err != nil || again != a {
		t.Errorf("EnsurePodPort again = %d, %v; want %d", again, err, a)
	}
	if err := s.DeletePort(ctx, "veth-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePort(ctx, "veth-b"); err != nil {
		t.Errorf("DeletePort of a missing port = %v", err)
	}
	ports, err := s.ListPodPorts(ctx)
	if err != nil || len(ports) != 1 || ports[0].Name != "veth-a" || ports[0].Ofport != a ||
		!maps.Equal(ports[0].ExternalIDs, map[string]string{"ip": "10.0.0.2"}) {
		t.Errorf("ListPodPorts = %+v, %v", ports, err)
	}

	// A requested ofport is granted when free, a second port asking for it gets another, and a repeated
	// call that asks for nothing keeps the number.
	h.addPortDevice("veth-c")
	h.addPortDevice("veth-d")
	if free, err := s.OfportFree(ctx, "veth-c", 40); err != nil || !free {
		t.Errorf("OfportFree(40) before any request = %v, %v; want true", free, err)
	}
	if c, err := s.EnsurePodPortAt(ctx, "veth-c", nil, 40); err != nil || c != 40 {
		t.Errorf("EnsurePodPortAt(veth-c, 40) = %d, %v; want 40", c, err)
	}
	if free, err := s.OfportFree(ctx, "veth-d", 40); err != nil || free {
		t.Errorf("OfportFree(veth-d, 40) = %v, %v; want false (veth-c has it)", free, err)
	}
	if free, err := s.OfportFree(ctx, "veth-c", 40); err != nil || !free {
		t.Errorf("OfportFree(veth-c, 40) = %v, %v; want true (its own)", free, err)
	}
	if d, err := s.EnsurePodPortAt(ctx, "veth-d", nil, 40); err != nil || d == 40 || d <= TunOfport {
		t.Errorf("EnsurePodPortAt(veth-d, 40) = %d, %v; want another pod ofport", d, err)
	}
	if c, err := s.EnsurePodPortAt(ctx, "veth-c", nil, 0); err != nil || c != 40 {
		t.Errorf("EnsurePodPortAt(veth-c, 0) again = %d, %v; want 40", c, err)
	}
	if _, err := s.EnsurePodPortAt(ctx, "veth-c", nil, TunOfport); err == nil {
		t.Errorf("EnsurePodPortAt accepted tun0's ofport")
	}
	for _, name := range []string{"veth-c", "veth-d"} {
		if err := s.DeletePort(ctx, name); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.SetBridgeExternalIDs(ctx, map[string]string{"k": "v", "gone": "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBridgeExternalIDs(ctx, map[string]string{"gone": ""}); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.BridgeExternalIDs(ctx); err != nil || !maps.Equal(ids, map[string]string{"k": "v"}) {
		t.Errorf("BridgeExternalIDs = %v, %v", ids, err)
	}

	desired := scaleFixture(2, 2).flows()
	sync := func(want SyncResult) {
		t.Helper()
		res, err := s.Sync(ctx, desired)
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		res.Duration = 0
		if res != want {
			t.Errorf("Sync = %+v, want %+v", res, want)
		}
		got, err := s.Dump(ctx)
		if err != nil || !slices.Equal(flowStrings(got), flowStrings(desired)) {
			t.Errorf("Dump after Sync differs from desired (%v)", err)
		}
	}
	total := len(desired)
	if d, _ := s.Drifted(ctx); !d {
		t.Errorf("Drifted before the first Sync = false")
	}
	sync(SyncResult{Added: total, Total: total})
	sync(SyncResult{Total: total})
	if d, _ := s.Drifted(ctx); d {
		t.Errorf("Drifted after Sync = true")
	}
	desired[3].Actions = "drop"
	sync(SyncResult{Modified: 1, Total: total})
	h.deleteFlow(desired[5])
	if d, _ := s.Drifted(ctx); !d {
		t.Errorf("Drifted after a hand delete = false")
	}
	sync(SyncResult{Added: 1, Total: total})
	removed := desired[len(desired)-1]
	desired = desired[:len(desired)-1]
	sync(SyncResult{Deleted: 1, Total: total - 1})
	desired = append(desired, removed)

	// SyncChanges trusts its memory: it sends what changed since the last sync and does not see a flow deleted
	// by hand, which the next Sync restores.
	sync(SyncResult{Added: 1, Total: total})
	h.deleteFlow(desired[6])
	desired[7].Actions = "drop"
	if res, err := s.SyncChanges(ctx, desired); err != nil || res.Modified != 1 || res.FlowMods() != 1 {
		t.Errorf("SyncChanges = %+v, %v; want one modification", res, err)
	}
	if got, _ := s.Dump(ctx); len(got) != total-1 {
		t.Errorf("after SyncChanges: %d flows, want %d (the hand-deleted one still missing)", len(got), total-1)
	}
	sync(SyncResult{Added: 1, Total: total})

	// A goto_table backwards is rejected by the switch, and with it the whole Sync.
	bad := slices.Clone(desired)
	bad[0].Actions = "drop"
	bad = append(bad, openflow.Flow{Table: 40, Priority: 1, Match: "ip", Actions: "goto_table:20"})
	if _, err := s.Sync(ctx, bad); err == nil || !strings.Contains(err.Error(), "nothing applied") {
		t.Errorf("Sync with a backwards goto_table = %v", err)
	}
	if got, _ := s.Dump(ctx); len(got) != total {
		t.Errorf("a rejected Sync changed the switch: %d flows, want %d", len(got), total)
	}
	if _, err := s.Sync(ctx, append(slices.Clone(desired), desired[0])); err == nil {
		t.Errorf("Sync with a duplicate key succeeded")
	}

	h.restartVSwitchd()
	if d, _ := s.Drifted(ctx); !d {
		t.Errorf("Drifted after an ovs-vswitchd restart = false")
	}
	sync(SyncResult{Added: total, Total: total, Reset: true})
	if ports, err := s.ListPodPorts(ctx); err != nil || len(ports) != 1 || ports[0].Ofport != a {
		t.Errorf("pod ports after an ovs-vswitchd restart = %+v, %v", ports, err)
	}
}

func TestFakeConformance(t *testing.T) {
	f := NewFake()
	runConformance(t, f, conformanceHooks{
		restartVSwitchd: f.RestartVSwitchd,
		deleteFlow:      func(fl openflow.Flow) { f.DeleteFlow(fl.Key()) },
		addPortDevice:   func(string) {},
	})
	if !strings.Contains(f.DumpText(), "table=253,priority=0 actions=note:01.0d.00.00.00.00\n") {
		t.Errorf("DumpText lacks the note flow:\n%s", f.DumpText())
	}
	f.FailNextSync(errors.New("boom"))
	if _, err := f.Sync(context.Background(), nil); err == nil || err.Error() != "boom" {
		t.Errorf("FailNextSync: Sync = %v", err)
	}
}

func TestSwitchConformance(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "conf")
	runConformance(t, s, conformanceHooks{
		restartVSwitchd: func() {
			n.StopVSwitchd()
			n.StartVSwitchd()
			n.WaitBridge(DefaultBridge, 10*time.Second)
		},
		deleteFlow: func(fl openflow.Flow) {
			n.Ofctl("--strict", "del-flows", DefaultBridge, fl.Key())
		},
		addPortDevice: func(name string) {
			n.MustRun("ip", "link", "add", name, "type", "veth", "peer", "name", name+"-p")
			n.MustRun("ip", "link", "set", name, "up")
		},
	})
}
