package ovs

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/render/openflow"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// Integration tests of flow Sync against a real ovs-vswitchd; a recordingExecer wrapped around the real one
// shows what was actually sent to the switch.

// newRecordedApplier returns a FlowApplier for the node's br0 that records every ovs-ofctl run.
func newRecordedApplier(n *ovsnode.Node) (*FlowApplier, *recordingExecer) {
	rec := &recordingExecer{inner: osExecer{}}
	return newFlowApplier(DefaultBridge, newOfctl(rec, n.RunDir, DefaultBridge, 20*time.Second)), rec
}

// flowStrings returns the flows as sorted ovs-ofctl lines, for comparing sets.
func flowStrings(flows []openflow.Flow) []string {
	out := make([]string, 0, len(flows))
	for _, f := range flows {
		out = append(out, f.String())
	}
	slices.Sort(out)
	return out
}

// requireFlows fails unless the bridge holds exactly want.
func requireFlows(t *testing.T, a *FlowApplier, want []openflow.Flow) {
	t.Helper()
	got, err := a.Dump(context.Background())
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	g, w := flowStrings(got), flowStrings(want)
	if !slices.Equal(g, w) {
		for _, l := range g {
			if !slices.Contains(w, l) {
				t.Errorf("unexpected flow on the switch: %s", l)
			}
		}
		for _, l := range w {
			if !slices.Contains(g, l) {
				t.Errorf("missing flow on the switch: %s", l)
			}
		}
		t.FailNow()
	}
}

// requireSync runs Sync and checks its counts and how many flow-mods went out in how many bundles.
func requireSync(t *testing.T, a *FlowApplier, rec *recordingExecer, desired []openflow.Flow, added, modified, deleted int) SyncResult {
	t.Helper()
	rec.reset()
	res, err := a.Sync(context.Background(), desired)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if res.Added != added || res.Modified != modified || res.Deleted != deleted || res.Total != len(desired) {
		t.Errorf("Sync = %+v, want added %d modified %d deleted %d total %d", res, added, modified, deleted, len(desired))
	}
	bundles := rec.bundles()
	switch mods := added + modified + deleted; {
	case mods == 0 && len(bundles) != 0:
		t.Errorf("Sync without changes sent %d bundles", len(bundles))
	case mods > 0 && (len(bundles) != 1 || len(bundles[0]) != mods):
		t.Errorf("Sync sent %d bundles (%v), want one of %d flow-mods", len(bundles), bundles, mods)
	}
	requireFlows(t, a, desired)
	return res
}

func TestSyncFlows(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "sync")
	ensureTestBridge(t, s, n)
	a, rec := newRecordedApplier(n)
	ctx := context.Background()

	fx := scaleFixture(3, 4)
	desired := fx.flows()
	if drifted, err := a.Drifted(ctx); err != nil || !drifted {
		t.Errorf("Drifted before the first Sync = %v, %v; want true", drifted, err)
	}
	requireSync(t, a, rec, desired, len(desired), 0, 0)
	if drifted, err := a.Drifted(ctx); err != nil || drifted {
		t.Errorf("Drifted after Sync = %v, %v; want false", drifted, err)
	}

	t.Run("unchanged set sends nothing", func(t *testing.T) {
		requireSync(t, a, rec, desired, 0, 0, 0)
		// An agent restart: a new applier with no memory dumps, diffs and sends nothing either.
		fresh, rec2 := newRecordedApplier(n)
		requireSync(t, fresh, rec2, desired, 0, 0, 0)
	})

	t.Run("one changed flow is one flow-mod", func(t *testing.T) {
		i := slices.IndexFunc(desired, func(f openflow.Flow) bool { return f.Table == 90 })
		desired[i].Actions = strings.Replace(desired[i].Actions, "172.16.0.1", "172.16.9.9", 1)
		requireSync(t, a, rec, desired, 0, 1, 0)
		desired[i].Cookie++ // a new owner round: cookie only
		requireSync(t, a, rec, desired, 0, 1, 0)
	})

	t.Run("flow deleted by hand is restored", func(t *testing.T) {
		n.Ofctl("--strict", "del-flows", "br0", "table=40,priority=100,arp,arp_tpa=10.0.0.3")
		if drifted, err := a.Drifted(ctx); err != nil || !drifted {
			t.Errorf("Drifted after a hand delete = %v, %v; want true", drifted, err)
		}
		requireSync(t, a, rec, desired, 1, 0, 0)
	})

	t.Run("flow added by hand is removed", func(t *testing.T) {
		n.Ofctl("add-flow", "br0", "table=30,priority=100,ip,nw_dst=192.0.2.0/24,actions=drop")
		requireSync(t, a, rec, desired, 0, 0, 1)
	})

	t.Run("deletes are strict", func(t *testing.T) {
		// Deleting table=30 priority=0 "ip" must not touch the more specific ip flows of table 30, which a
		// non-strict delete of "table=30,ip" would remove too.
		i := slices.IndexFunc(desired, func(f openflow.Flow) bool { return f.Table == 30 && f.Priority == 0 })
		removed := desired[i]
		desired = slices.Delete(desired, i, i+1)
		requireSync(t, a, rec, desired, 0, 0, 1)
		desired = append(desired, removed)
		requireSync(t, a, rec, desired, 1, 0, 0)
	})

	t.Run("removed node's flows are deleted", func(t *testing.T) {
		fx.remotes = fx.remotes[1:]
		desired = fx.flows()
		// remote 0 leaves (3 deletes); the others' cookies shift with their index (6 mods); the hand-edited
		// table 90 flow of remote 0 goes with it.
		requireSync(t, a, rec, desired, 0, 6, 3)
	})
}

func TestSyncAtomic(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "atomic")
	ensureTestBridge(t, s, n)
	a, rec := newRecordedApplier(n)
	desired := scaleFixture(2, 2).flows()
	requireSync(t, a, rec, desired, len(desired), 0, 0)

	for _, tc := range []struct {
		name, bad, wantErr string
	}{
		// Accepted by ovs-ofctl, rejected by the switch inside the bundle: the bundle is discarded.
		{"switch rejects", "group:99", "OFPBAC_BAD_OUT_GROUP"},
		// Rejected by ovs-ofctl's parser before anything is sent.
		{"parser rejects", "frobnicate:1", "frobnicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := slices.Clone(desired)
			next[len(next)-1].Actions = "drop"                                                                           // a modification
			next = slices.Delete(next, 0, 1)                                                                             // a delete
			next = append(next, openflow.Flow{Table: 30, Priority: 50, Match: "ip,nw_dst=1.2.3.4", Actions: "output:2"}) // a good add
			next = append(next, openflow.Flow{Table: 30, Priority: 50, Match: "ip,nw_dst=1.2.3.5", Actions: tc.bad})
			res, err := a.Sync(context.Background(), next)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "nothing applied") {
				t.Fatalf("Sync with an invalid flow = %+v, %v; want an error naming %s", res, err, tc.wantErr)
			}
			t.Logf("error: %v", err)
			requireFlows(t, a, desired) // unchanged: not even the good add, delete or modification
		})
	}
	// The applier is not left in a bad state.
	requireSync(t, a, rec, desired, 0, 0, 0)
}

func TestSyncAfterVSwitchdRestart(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "restart")
	ensureTestBridge(t, s, n)
	a, rec := newRecordedApplier(n)
	ctx := context.Background()
	desired := scaleFixture(5, 5).flows()
	requireSync(t, a, rec, desired, len(desired), 0, 0)

	n.StopVSwitchd()
	n.StartVSwitchd()
	n.WaitBridge("br0", 10*time.Second)

	drifted, err := a.Drifted(ctx)
	if err != nil || !drifted {
		t.Fatalf("Drifted after an ovs-vswitchd restart = %v, %v; want true", drifted, err)
	}
	res := requireSync(t, a, rec, desired, len(desired), 0, 0)
	if !res.Reset {
		t.Errorf("Sync after an ovs-vswitchd restart did not report Reset: %+v", res)
	}
	// The bridge and its ports survived in OVSDB; EnsureBridge has nothing to do.
	if changes, err := s.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450}); err != nil || len(changes) != 0 {
		t.Errorf("EnsureBridge after restart = %q, %v", changes, err)
	}
	if drifted, err := a.Drifted(ctx); err != nil || drifted {
		t.Errorf("Drifted after the resync = %v, %v", drifted, err)
	}
}
