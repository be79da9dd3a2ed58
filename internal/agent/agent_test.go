package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// fakeLinks records what the agent asked of the kernel.
type fakeLinks struct {
	mtu     int
	applied *model.NodeView
	err     error
}

func (f *fakeLinks) MoveAddresses(context.Context, string, string) ([]string, error) { return nil, nil }
func (f *fakeLinks) UnderlayMTU(netip.Addr) (int, error)                             { return f.mtu, nil }
func (f *fakeLinks) Apply(_ context.Context, v *model.NodeView) ([]string, error) {
	f.applied = v
	return nil, f.err
}

// fakeNFT keeps the last ruleset it was given.
type fakeNFT struct{ last *nftables.Ruleset }

func (f *fakeNFT) Sync(_ context.Context, rs *nftables.Ruleset, _ ...time.Time) (nft.Result, int, error) {
	f.last = rs
	return nft.Result{}, 7, nil
}

func makeTestHostSubnet(name, hostIP, subnet string) *v1alpha1.HostSubnet {
	return &v1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1, CreationTimestamp: metav1.Now()},
		Spec:       v1alpha1.HostSubnetSpec{Host: name, HostIP: hostIP, Subnet: subnet},
	}
}

func testClusterNetwork() *v1alpha1.ClusterNetwork {
	return &v1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
		Spec: v1alpha1.ClusterNetworkSpec{
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
			ServiceNetwork:  "172.30.0.0/16", VXLANPort: 4789, Mode: v1alpha1.NetworkModeSubnet,
		},
	}
}

type testAgent struct {
	*Agent
	client client.Client
	ovs    *ovs.Fake
	links  *fakeLinks
	nft    *fakeNFT
}

func newTestAgent(t *testing.T, objs ...client.Object) *testAgent {
	t.Helper()
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.HostSubnet{}).Build()
	ta := &testAgent{client: c, ovs: ovs.NewFake(), links: &fakeLinks{mtu: 1500}, nft: &fakeNFT{}}
	ta.Agent, err = New(Config{NodeName: "node1", NodeIP: netip.MustParseAddr("192.168.100.11"), Datapath: model.DatapathNetdev},
		c, c, ta.ovs, ta.links, ta.nft, NewMetrics(prometheus.NewRegistry()), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ta.Services().SetSource(noServices{}, nil)
	return ta
}

func TestSyncProgramsTheNodeAndReports(t *testing.T) {
	ctx := context.Background()
	ta := newTestAgent(t, testClusterNetwork(),
		makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"),
		makeTestHostSubnet("node2", "192.168.100.12", "10.128.2.0/23"))
	if err := ta.Sync(ctx); err != nil {
		t.Fatalf("Sync failed: %v", err)
	}
	if err := ta.Services().Sync(ctx); err != nil {
		t.Fatalf("the Service sync failed: %v", err)
	}
	view := ta.View()
	if view == nil || view.MTU != 1450 || len(view.RemoteNodes) != 1 {
		t.Fatalf("the agent's view is %+v, want MTU 1450 and one remote node", view)
	}
	want, err := openflow.Render(view)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := ta.ovs.Dump(ctx)
	if len(got) != len(want) {
		t.Errorf("br0 has %d flows after the sync, want the %d rendered ones", len(got), len(want))
	}
	if ta.links.applied != view {
		t.Errorf("tun0 and routes were not configured from the synced view")
	}
	if ta.nft.last == nil {
		t.Errorf("the nftables ruleset was not applied")
	}
	if b := ta.ovs.Bridge(); b == nil || b.TunMTU != 1450 || b.VXLANDstPort != 4789 || b.DatapathType != "netdev" {
		t.Errorf("br0 was ensured as %+v, want tun0 MTU 1450, VXLAN port 4789, netdev", b)
	}

	hs := &v1alpha1.HostSubnet{}
	if err := ta.client.Get(ctx, client.ObjectKey{Name: "node1"}, hs); err != nil {
		t.Fatal(err)
	}
	cond := findCondition(hs.Status.Conditions, v1alpha1.ConditionProgrammed)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != ReasonProgrammed {
		t.Fatalf("Programmed condition is %+v, want True/Programmed", cond)
	}
	if a := hs.Status.Agent; a == nil || int(a.Flows) != len(want) || a.NFTRules != 7 || a.MTU != 1450 || a.StateHash == "" {
		t.Errorf("status.agent is %+v, want %d flows, 7 rules, MTU 1450 and a hash", hs.Status.Agent, len(want))
	}

	// Nothing changed: the next sync sends no flow-mods.
	before, _ := ta.ovs.Dump(ctx)
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := ta.ovs.Dump(ctx)
	if len(before) != len(after) {
		t.Errorf("an idle sync changed br0 from %d to %d flows", len(before), len(after))
	}
}

func TestSyncRepairsAFlowDeletedByHand(t *testing.T) {
	ctx := context.Background()
	ta := newTestAgent(t, testClusterNetwork(),
		makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"),
		makeTestHostSubnet("node2", "192.168.100.12", "10.128.2.0/23"))
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	flows, _ := ta.ovs.Dump(ctx)
	if !ta.ovs.DeleteFlow(flows[0].Key()) {
		t.Fatal("failed to delete a flow from the fake switch")
	}
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	again, _ := ta.ovs.Dump(ctx)
	if len(again) != len(flows) {
		t.Errorf("after the repair br0 has %d flows, want %d", len(again), len(flows))
	}
}

func TestSyncWithoutItsHostSubnetWaits(t *testing.T) {
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node2", "192.168.100.12", "10.128.2.0/23"))
	err := ta.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "has not allocated this node a subnet yet") {
		t.Fatalf("Sync without the node's HostSubnet returned %v", err)
	}
	if flows, _ := ta.ovs.Dump(context.Background()); len(flows) != 0 {
		t.Errorf("the agent programmed %d flows without knowing its subnet", len(flows))
	}
}

func TestSyncReportsAnUnderlayTooSmall(t *testing.T) {
	ctx := context.Background()
	cn := testClusterNetwork()
	mtu := int32(1500)
	cn.Spec.MTU = &mtu
	ta := newTestAgent(t, cn, makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"))
	if err := ta.Sync(ctx); err == nil {
		t.Fatal("Sync accepted an MTU of 1500 on a 1500 underlay")
	}
	hs := &v1alpha1.HostSubnet{}
	if err := ta.client.Get(ctx, client.ObjectKey{Name: "node1"}, hs); err != nil {
		t.Fatal(err)
	}
	cond := findCondition(hs.Status.Conditions, v1alpha1.ConditionProgrammed)
	if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != ReasonInvalidConfiguration || !strings.Contains(cond.Message, "1500") {
		t.Errorf("Programmed condition is %+v, want False/InvalidConfiguration naming the MTU", cond)
	}
}

func TestPodAttachWaitsForTheSync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"))
	runner := NewRunner(time.Millisecond, time.Hour, 10*time.Millisecond, ta.Sync)
	pods := NewPodStore(runner.Trigger)
	ta.SetPodStore(pods)
	go runner.Run(ctx)
	net := CNINetwork{Agent: ta.Agent, Pods: pods}
	pod := model.LocalPod{Namespace: "ns", Name: "web", SandboxID: "abc", IP: netip.MustParseAddr("10.128.0.5"), OFPort: 3}
	if err := net.PodAttached(ctx, pod); err != nil {
		t.Fatalf("PodAttached failed: %v", err)
	}
	if ok, err := net.PodFlowsPresent(ctx, pod); err != nil || !ok {
		t.Fatalf("the pod's flows are not on br0 after PodAttached returned (ok=%v, err=%v)", ok, err)
	}
	if err := net.PodDetached(ctx, "abc"); err != nil {
		t.Fatalf("PodDetached failed: %v", err)
	}
	flows, _ := ta.ovs.Dump(ctx)
	for _, f := range flows {
		if f.Cookie == openflow.PodCookie(pod.IP) {
			t.Errorf("a flow of the detached pod is still on br0: %s", f)
		}
	}
	if err := net.PodDetached(ctx, "unknown"); err != nil {
		t.Errorf("PodDetached of an unknown sandbox failed: %v", err)
	}
}

func TestPodAttachReportsAFailedSync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"))
	ta.links.err = errors.New("tun0 is missing")
	runner := NewRunner(time.Millisecond, time.Hour, time.Hour, ta.Sync)
	pods := NewPodStore(runner.Trigger)
	ta.SetPodStore(pods)
	go runner.Run(ctx)
	err := CNINetwork{Agent: ta.Agent, Pods: pods}.PodAttached(ctx, model.LocalPod{
		Namespace: "ns", Name: "web", SandboxID: "abc", IP: netip.MustParseAddr("10.128.0.5"), OFPort: 3})
	if err == nil || !strings.Contains(err.Error(), "tun0 is missing") {
		t.Fatalf("PodAttached returned %v, want the sync's error", err)
	}
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

func TestStatusReportsANonDefaultNFTLayout(t *testing.T) {
	ctx := context.Background()
	ta := newTestAgent(t, testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"))
	ta.cfg.InlineEndpoints = true
	if err := ta.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	hs := &v1alpha1.HostSubnet{}
	if err := ta.client.Get(ctx, client.ObjectKey{Name: "node1"}, hs); err != nil {
		t.Fatal(err)
	}
	if hs.Status.Agent == nil || hs.Status.Agent.NFTLayout != "InlineEndpoints" {
		t.Errorf("status.agent = %+v, want nftLayout InlineEndpoints so vxflowctl renders the same table", hs.Status.Agent)
	}
}
