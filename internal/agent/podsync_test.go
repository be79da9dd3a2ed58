package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// startPodPath connects a pod store to SyncPods through its own runner, as cmd/vxflow-agent does.
func startPodPath(ctx context.Context, ta *testAgent) CNINetwork {
	runner := NewRunner(0, time.Hour, time.Hour, ta.SyncPods)
	pods := NewPodStore(runner.Trigger)
	ta.SetPodStore(pods)
	go runner.Run(ctx)
	return CNINetwork{Agent: ta.Agent, Pods: pods}
}

func podFlowCount(t *testing.T, ta *testAgent, ip netip.Addr) int {
	t.Helper()
	flows, err := ta.ovs.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if f.Cookie == openflow.PodCookie(ip) {
			n++
		}
	}
	return n
}

// TestPodPathAppliesOnlyThePodsFlows is a unit test on the fake switch: after a full sync, a pod's ADD and
// DEL are programmed by SyncPods from memory (a flow deleted by hand stays missing, proof that nothing was
// dumped) and the next full Sync repairs the hand edit.
func TestPodPathAppliesOnlyThePodsFlows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"),
		makeTestHostSubnet("node2", "192.168.100.12", "10.128.2.0/23"))
	net := startPodPath(ctx, ta)
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := ta.ovs.Dump(ctx)
	if !ta.ovs.DeleteFlow(before[0].Key()) {
		t.Fatal("failed to delete a flow by hand")
	}
	pod := model.LocalPod{Namespace: "ns", Name: "web", SandboxID: "abc", IP: netip.MustParseAddr("10.128.0.5"), OFPort: 4}
	if err := net.PodAttached(ctx, pod); err != nil {
		t.Fatalf("PodAttached failed: %v", err)
	}
	perPod := podFlowCount(t, ta, pod.IP)
	if perPod == 0 {
		t.Fatal("the pod has no flows after PodAttached returned")
	}
	after, _ := ta.ovs.Dump(ctx)
	if want := len(before) - 1 + perPod; len(after) != want {
		t.Errorf("after the pod path br0 has %d flows, want %d (the hand-deleted one still missing)", len(after), want)
	}
	// A repeated ADD is how a runtime repairs what CHECK found: it compares with the switch.
	if err := net.PodAttached(ctx, pod); err != nil {
		t.Fatalf("the repeated PodAttached failed: %v", err)
	}
	if again, _ := ta.ovs.Dump(ctx); len(again) != len(before)+perPod {
		t.Errorf("after a repeated ADD br0 has %d flows, want %d (repaired)", len(again), len(before)+perPod)
	}
	if v := ta.View(); v == nil || len(v.LocalPods) != 1 {
		t.Errorf("the published view does not hold the pod: %+v", v)
	}
	if err := net.PodDetached(ctx, "abc"); err != nil {
		t.Fatalf("PodDetached failed: %v", err)
	}
	if n := podFlowCount(t, ta, pod.IP); n != 0 {
		t.Errorf("%d flows of the detached pod are still on br0", n)
	}
	if !ta.ovs.DeleteFlow(before[1].Key()) {
		t.Fatal("failed to delete a flow by hand")
	}
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if repaired, _ := ta.ovs.Dump(ctx); len(repaired) != len(before) {
		t.Errorf("after the full sync br0 has %d flows, want %d", len(repaired), len(before))
	}
}

// TestPodPathWithoutAFullSyncRunsOne is a unit test: an ADD that comes before the agent's first sync is
// served by a full sync.
func TestPodPathWithoutAFullSyncRunsOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"))
	net := startPodPath(ctx, ta)
	pod := model.LocalPod{Namespace: "ns", Name: "web", SandboxID: "abc", IP: netip.MustParseAddr("10.128.0.5"), OFPort: 3}
	if err := net.PodAttached(ctx, pod); err != nil {
		t.Fatalf("PodAttached failed: %v", err)
	}
	if ok, err := net.PodFlowsPresent(ctx, pod); err != nil || !ok {
		t.Errorf("the pod's flows are not on br0 (ok=%v, err=%v)", ok, err)
	}
}

// TestPodPathReportsAFailedApply is a unit test: a bundle the switch rejects fails the ADD with its reason,
// and the next request programs the pod.
func TestPodPathReportsAFailedApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"))
	net := startPodPath(ctx, ta)
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ta.ovs.FailNextSync(errors.New("bundle rejected"))
	pod := model.LocalPod{Namespace: "ns", Name: "web", SandboxID: "abc", IP: netip.MustParseAddr("10.128.0.5"), OFPort: 3}
	if err := net.PodAttached(ctx, pod); err == nil || !strings.Contains(err.Error(), "bundle rejected") {
		t.Fatalf("PodAttached = %v, want the apply's error", err)
	}
	if err := net.PodAttached(ctx, pod); err != nil {
		t.Fatalf("the repeated PodAttached failed: %v", err)
	}
	if ok, err := net.PodFlowsPresent(ctx, pod); err != nil || !ok {
		t.Errorf("the pod's flows are not on br0 (ok=%v, err=%v)", ok, err)
	}
}
