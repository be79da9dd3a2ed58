package openflow

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/testutil/textdiff"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the rendered flows")

func makeTestHostSubnet(name, hostIP, subnet string) v1alpha1.HostSubnet {
	return v1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(time.Unix(0, 0))},
		Spec:       v1alpha1.HostSubnetSpec{Host: name, HostIP: hostIP, Subnet: subnet},
	}
}

func makeTestPod(ns, name, ip string, ofport int32) model.LocalPod {
	return model.LocalPod{Namespace: ns, Name: name, SandboxID: "sandbox-" + name, IP: netip.MustParseAddr(ip), OFPort: ofport}
}

// makeTestInput is node1 of a three-node cluster with two pods, on the userspace datapath; the mutators
// change it into the other golden cases.
func makeTestInput(mutate ...func(*model.NodeInput)) model.NodeInput {
	in := model.NodeInput{
		ClusterNetwork: &v1alpha1.ClusterNetwork{
			ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
			Spec: v1alpha1.ClusterNetworkSpec{
				ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
				ServiceNetwork:  "172.30.0.0/16",
				VXLANPort:       4789,
				Mode:            v1alpha1.NetworkModeSubnet,
			},
		},
		HostSubnets: []v1alpha1.HostSubnet{
			makeTestHostSubnet("node1", "192.168.100.1", "10.128.0.0/23"),
			makeTestHostSubnet("node2", "192.168.100.2", "10.128.2.0/23"),
			makeTestHostSubnet("node3", "192.168.100.3", "10.128.4.0/23"),
		},
		NodeName: "node1",
		Facts:    model.NodeFacts{NodeIP: netip.MustParseAddr("192.168.100.1"), UnderlayMTU: 1500, Datapath: model.DatapathNetdev},
		Pods: []model.LocalPod{
			makeTestPod("default", "pod-a", "10.128.0.2", 3),
			makeTestPod("default", "pod-c", "10.128.0.3", 4),
		},
	}
	for _, m := range mutate {
		m(&in)
	}
	return in
}

func mustView(t testing.TB, in model.NodeInput) *model.NodeView {
	t.Helper()
	v, err := model.BuildNodeView(in)
	if err != nil {
		t.Fatalf("BuildNodeView() error = %v", err)
	}
	if len(v.Skipped) > 0 {
		t.Fatalf("BuildNodeView() skipped %v", v.Skipped)
	}
	return v
}

func mustRender(t testing.TB, in model.NodeInput) FlowSet {
	t.Helper()
	fs, err := Render(mustView(t, in))
	if err != nil {
		t.Fatalf("Render() error = %v", err)
	}
	return fs
}

var (
	oneNode        = func(in *model.NodeInput) { in.HostSubnets = in.HostSubnets[:1] }
	nodeRemoved    = func(in *model.NodeInput) { in.HostSubnets = in.HostSubnets[:2] }
	systemDatapath = func(in *model.NodeInput) { in.Facts.Datapath = model.DatapathSystem }
	podAdded       = func(in *model.NodeInput) {
		in.Pods = append(in.Pods, makeTestPod("web", "pod-new", "10.128.1.200", 7))
	}
	twoClusterNetworks = func(in *model.NodeInput) {
		in.ClusterNetwork.Spec.ClusterNetworks = append(in.ClusterNetwork.Spec.ClusterNetworks,
			v1alpha1.ClusterNetworkEntry{CIDR: "10.200.0.0/16", HostPrefix: 24})
		in.HostSubnets = append(in.HostSubnets, makeTestHostSubnet("node4", "192.168.100.4", "10.200.7.0/24"))
	}
	customPort = func(in *model.NodeInput) { in.ClusterNetwork.Spec.VXLANPort = 8472 }
)

// goldenCases are the rendered flow sets kept in testdata/<name>.golden.
var goldenCases = []struct {
	name   string
	mutate []func(*model.NodeInput)
}{
	{name: "one-node", mutate: []func(*model.NodeInput){oneNode}},
	{name: "three-nodes", mutate: nil},
	{name: "three-nodes-system", mutate: []func(*model.NodeInput){systemDatapath}},
	{name: "node-removed", mutate: []func(*model.NodeInput){nodeRemoved}},
	{name: "pod-added", mutate: []func(*model.NodeInput){podAdded}},
	{name: "pod-added-system", mutate: []func(*model.NodeInput){podAdded, systemDatapath}},
	{name: "two-cluster-networks-system", mutate: []func(*model.NodeInput){twoClusterNetworks, systemDatapath, customPort}},
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got := mustRender(t, makeTestInput(tc.mutate...)).String()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatalf("failed to write %s: %v", path, err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("failed to read %s (run with -update to create it): %v", path, err)
			}
			if got != string(want) {
				t.Errorf("Render() differs from %s (run with -update after checking):\n%s", path, textdiff.Lines(string(want), got))
			}
		})
	}
}

// flowDiff returns the flows only in a and only in b, compared by Key, Cookie and Actions (what the applier
// compares).
func flowDiff(a, b FlowSet) (onlyA, onlyB []Flow) {
	for _, f := range a {
		if !slices.Contains(b, f) {
			onlyA = append(onlyA, f)
		}
	}
	for _, f := range b {
		if !slices.Contains(a, f) {
			onlyB = append(onlyB, f)
		}
	}
	return onlyA, onlyB
}

// TestRenderChangesOnlyTheOwnersFlows checks that adding or removing one object changes exactly that
// object's flows, all carrying its cookie: the applier's diff then sends nothing else.
func TestRenderChangesOnlyTheOwnersFlows(t *testing.T) {
	base := mustRender(t, makeTestInput())
	baseSystem := mustRender(t, makeTestInput(systemDatapath))
	tests := []struct {
		name        string
		base        FlowSet
		mutate      []func(*model.NodeInput)
		wantCookie  uint64
		wantRemoved int
		wantAdded   int
	}{
		{name: "node removed", base: base, mutate: []func(*model.NodeInput){nodeRemoved},
			wantCookie: RemoteNodeCookie(netip.MustParsePrefix("10.128.4.0/23")), wantRemoved: 3},
		{name: "pod added", base: base, mutate: []func(*model.NodeInput){podAdded},
			wantCookie: PodCookie(netip.MustParseAddr("10.128.1.200")), wantAdded: 4},
		{name: "pod added, system datapath", base: baseSystem, mutate: []func(*model.NodeInput){podAdded, systemDatapath},
			wantCookie: PodCookie(netip.MustParseAddr("10.128.1.200")), wantAdded: 5},
		{name: "node added", base: base, mutate: []func(*model.NodeInput){func(in *model.NodeInput) {
			in.HostSubnets = append(in.HostSubnets, makeTestHostSubnet("node9", "192.168.100.9", "10.128.18.0/23"))
		}}, wantCookie: RemoteNodeCookie(netip.MustParsePrefix("10.128.18.0/23")), wantAdded: 3},
		{name: "pod removed", base: base, mutate: []func(*model.NodeInput){func(in *model.NodeInput) { in.Pods = in.Pods[1:] }},
			wantCookie: PodCookie(netip.MustParseAddr("10.128.0.2")), wantRemoved: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			removed, added := flowDiff(tt.base, mustRender(t, makeTestInput(tt.mutate...)))
			if len(removed) != tt.wantRemoved || len(added) != tt.wantAdded {
				t.Fatalf("removed %d, added %d flows; want %d, %d:\n-%v\n+%v", len(removed), len(added), tt.wantRemoved, tt.wantAdded, removed, added)
			}
			for _, f := range slices.Concat(removed, added) {
				if f.Cookie != tt.wantCookie {
					t.Errorf("changed flow %q has cookie %s, want %s", f, DescribeCookie(f.Cookie), DescribeCookie(tt.wantCookie))
				}
			}
		})
	}
}

// TestRenderShape checks properties every rendered set must have, on every golden case and a large one.
func TestRenderShape(t *testing.T) {
	cases := map[string]model.NodeInput{"large": makeLargeInput(1000, 250, model.DatapathSystem)}
	for _, tc := range goldenCases {
		cases[tc.name] = makeTestInput(tc.mutate...)
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			view := mustView(t, in)
			fs, err := Render(view)
			if err != nil {
				t.Fatalf("Render() error = %v", err)
			}
			keys := map[string]bool{}
			lastDrop := map[uint8]bool{}
			catchAll := map[[2]int]string{}      // table, priority -> the empty-match flow there
			perPriority := map[[2]int][]string{} // table, priority -> every flow there
			for _, f := range fs {
				tp := [2]int{int(f.Table), int(f.Priority)}
				perPriority[tp] = append(perPriority[tp], f.String())
				if f.Match == "" {
					catchAll[tp] = f.String()
				}
				if keys[f.Key()] {
					t.Errorf("key %s is not unique", f.Key())
				}
				keys[f.Key()] = true
				if _, ok := LookupTable(f.Table); !ok {
					t.Errorf("flow %q is in table %d, outside the pipeline", f, f.Table)
				}
				if CookieRound(f.Cookie) != PipelineRound {
					t.Errorf("flow %q has round %d, want %d", f, CookieRound(f.Cookie), PipelineRound)
				}
				if owner := CookieOwner(view, f.Cookie); strings.HasPrefix(owner, "stale") {
					t.Errorf("flow %q has cookie owned by nobody in the view: %s", f, owner)
				}
				if f.Priority == 0 && f.Match == "" && f.Actions == drop {
					lastDrop[f.Table] = true
				}
			}
			for tp, f := range catchAll {
				if len(perPriority[tp]) > 1 {
					t.Errorf("catch-all %q shares its priority with flows it overlaps, so OVS may pick either: %q", f, perPriority[tp])
				}
			}
			for _, tbl := range Pipeline {
				if tbl == EgressTable || tbl == VersionTable || (tbl == DNATReturnTable && view.Datapath != model.DatapathSystem) {
					continue
				}
				if !lastDrop[tbl.ID] {
					t.Errorf("table %s does not end with a priority-0 drop", tbl.Name)
				}
			}
			nodeFlowCount := len(fs) - 3*len(view.RemoteNodes) - podFlowCount(view)*len(view.LocalPods)
			if c := countCategory(fs, CategoryNode); c != nodeFlowCount {
				t.Errorf("%d node flows, want %d (3 per remote node, %d per pod, the rest per node)", c, nodeFlowCount, podFlowCount(view))
			}
		})
	}
}

func podFlowCount(v *model.NodeView) int {
	if v.Datapath == model.DatapathSystem {
		return 5
	}
	return 4
}

func countCategory(fs FlowSet, cat CookieCategory) int {
	n := 0
	for _, f := range fs {
		if CookieCategoryOf(f.Cookie) == cat {
			n++
		}
	}
	return n
}

// makeLargeInput is node0 with nodes-1 remote nodes (a /23 each in 10.0.0.0/8) and pods local pods, for the
// shape test and the benchmark.
func makeLargeInput(nodes, pods int, dp model.DatapathType) model.NodeInput {
	in := makeTestInput(func(in *model.NodeInput) {
		in.ClusterNetwork.Spec.ClusterNetworks = []v1alpha1.ClusterNetworkEntry{{CIDR: "10.0.0.0/8", HostPrefix: 23}}
		in.HostSubnets = nil
		in.Pods = nil
		in.NodeName = "node0"
		in.Facts.NodeIP = netip.MustParseAddr("192.168.0.1")
		in.Facts.Datapath = dp
	})
	for i := range nodes {
		name := fmt.Sprintf("node%d", i)
		in.HostSubnets = append(in.HostSubnets, makeTestHostSubnet(name,
			fmt.Sprintf("192.168.%d.%d", i/250, i%250+1), fmt.Sprintf("10.%d.%d.0/23", i/128, i%128*2)))
	}
	for i := range pods {
		in.Pods = append(in.Pods, makeTestPod("bench", fmt.Sprintf("pod%d", i), fmt.Sprintf("10.0.%d.%d", i/250, i%250+2), int32(i+3)))
	}
	return in
}

func TestRenderErrors(t *testing.T) {
	if _, err := Render(nil); err == nil {
		t.Errorf("Render(nil) error = nil, want an error")
	}
	// A hand-built view with the same remote node twice cannot be applied: its flows collide.
	v := mustView(t, makeTestInput())
	v.RemoteNodes = append(v.RemoteNodes, v.RemoteNodes[0])
	_, err := Render(v)
	if err == nil || !strings.Contains(err.Error(), "share the key table=10,priority=100,tun_src=192.168.100.2") {
		t.Errorf("Render(duplicate remote node) error = %v, want a shared-key error", err)
	}
}

func TestMatchString(t *testing.T) {
	mac := model.PodMAC(netip.MustParseAddr("10.0.0.1"))
	tests := []struct {
		m    match
		want string
	}{
		{match{}, ""},
		{match{ctState: "-trk", proto: "ip"}, "ct_state=-trk,ip"},
		{match{proto: "ip", inPort: 2, nwSrc: netip.MustParsePrefix("10.128.2.0/23"), nwDst: netip.MustParsePrefix("10.128.0.0/14")},
			"ip,in_port=2,nw_src=10.128.2.0/23,nw_dst=10.128.0.0/14"},
		{match{proto: "arp", inPort: 5, dlSrc: mac, nwSrc: host(netip.MustParseAddr("10.0.0.1")), nwDst: netip.MustParsePrefix("10.0.0.0/24"), arpSha: mac},
			"arp,in_port=5,dl_src=0a:58:0a:00:00:01,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/24,arp_sha=0a:58:0a:00:00:01"},
		{match{proto: "ip", regs: []regMatch{{SourceVNIDReg, 0}, {DestVNIDReg, 7}}, tunSrc: netip.MustParseAddr("192.168.100.2"), inPort: 1},
			"ip,reg0=0,reg1=0x7,tun_src=192.168.100.2,in_port=1"},
		{match{proto: "udp", tpDst: 4789}, "udp,tp_dst=4789"},
	}
	for _, tt := range tests {
		if got := tt.m.String(); got != tt.want {
			t.Errorf("match%+v.String() = %q, want %q", tt.m, got, tt.want)
		}
	}
}

func TestActions(t *testing.T) {
	tests := []struct{ got, want string }{
		{loadReg(0, SourceVNIDReg), "load:0->NXM_NX_REG0[]"},
		{loadReg(3, DestPortReg), "load:0x3->NXM_NX_REG2[]"},
		{moveTunIDToReg(SourceVNIDReg), "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[]"},
		{moveRegToTunID(SourceVNIDReg), "move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31]"},
		{outputReg(DestPortReg), "output:NXM_NX_REG2[]"},
		{conntrackNAT(LocalIPTable), "ct(table=70,nat)"},
		{note([]byte{0, 1, 2}), "note:00.01.02.00.00.00"},
		{note([]byte{1, 2, 3, 4, 5, 6, 7}), "note:01.02.03.04.05.06.07.00.00.00.00.00.00.00"},
		{note(nil), "note:00.00.00.00.00.00"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestTableName(t *testing.T) {
	tests := map[uint8]string{0: "Classifier", 10: "VXLANIngress", 90: "RemoteIP", 253: "Version", 7: "table7"}
	for id, want := range tests {
		if got := TableName(id); got != want {
			t.Errorf("TableName(%d) = %q, want %q", id, got, want)
		}
	}
	seen := map[uint8]bool{}
	for _, tbl := range Pipeline {
		if seen[tbl.ID] || tbl.Name == "" || tbl.Purpose == "" {
			t.Errorf("pipeline table %+v is duplicated or undocumented", tbl)
		}
		seen[tbl.ID] = true
	}
}

func TestDescribeCookie(t *testing.T) {
	tests := []struct {
		cookie uint64
		want   string
	}{
		{NodeCookie(), "round 1, node"},
		{RemoteNodeCookie(netip.MustParsePrefix("10.128.4.0/23")), "round 1, remote node of subnet 10.128.4.0"},
		{PodCookie(netip.MustParseAddr("10.128.0.2")), "round 1, pod 10.128.0.2"},
		{0, "no cookie (not written by vxflow)"},
		{0x0000_00ff_0000_0001, "foreign cookie 0xff00000001"},
		{0x0002_0900_0000_0005, "round 2, category9 object 0x5"},
	}
	for _, tt := range tests {
		if got := DescribeCookie(tt.cookie); got != tt.want {
			t.Errorf("DescribeCookie(%#x) = %q, want %q", tt.cookie, got, tt.want)
		}
	}
	if got, want := NodeCookie(), uint64(0x0001_0100_0000_0000); got != want {
		t.Errorf("NodeCookie() = %#x, want %#x", got, want)
	}
	if got, want := PodCookie(netip.MustParseAddr("10.128.0.2")), uint64(0x0001_0300_0a80_0002); got != want {
		t.Errorf("PodCookie(10.128.0.2) = %#x, want %#x", got, want)
	}
}

func TestCookieOwner(t *testing.T) {
	v := mustView(t, makeTestInput())
	tests := []struct {
		cookie uint64
		want   string
	}{
		{NodeCookie(), "Node node1"},
		{RemoteNodeCookie(netip.MustParsePrefix("10.128.2.0/23")), "HostSubnet node2"},
		{PodCookie(netip.MustParseAddr("10.128.0.3")), "Pod default/pod-c"},
		{PodCookie(netip.MustParseAddr("10.128.0.99")), "stale: round 1, pod 10.128.0.99"},
		{RemoteNodeCookie(netip.MustParsePrefix("10.128.2.0/23")) &^ CookieRoundMask, "stale: round 0, remote node of subnet 10.128.2.0"},
	}
	for _, tt := range tests {
		if got := CookieOwner(v, tt.cookie); got != tt.want {
			t.Errorf("CookieOwner(%#x) = %q, want %q", tt.cookie, got, tt.want)
		}
	}
}

// BenchmarkRender renders 1,000 remote nodes and 250 pods from API objects (BuildNodeView + Render), the
// issue's scale target.
func BenchmarkRender(b *testing.B) {
	// 10.0.0.0/8 holds 32,768 /23s; makeLargeInput numbers them 10.<i/128>.<(i%128)*2>.0.
	in := makeLargeInput(1001, 250, model.DatapathSystem)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		v, err := model.BuildNodeView(in)
		if err != nil {
			b.Fatal(err)
		}
		fs, err := Render(v)
		if err != nil {
			b.Fatal(err)
		}
		n = len(fs)
	}
	b.ReportMetric(float64(n), "flows")
}

// FuzzRender feeds arbitrary API values and facts through BuildNodeView and Render: nothing may panic, and
// every view BuildNodeView accepts must render to a set with unique keys.
func FuzzRender(f *testing.F) {
	f.Add("10.128.0.0/14", int32(23), "172.30.0.0/16", "10.128.2.0/23", "192.168.100.2", "10.128.2.0/23", "192.168.100.3", "10.128.0.2", int32(3), int32(4789), 1500, true)
	f.Add("10.0.0.0/8", int32(30), "10.0.0.0/8", "10.0.0.0/30", "0.0.0.0", "10.0.0.4/30", "192.168.100.1", "10.128.1.255", int32(2), int32(0), 0, false)
	f.Fuzz(func(t *testing.T, cidr string, hostPrefix int32, svc, subnet2, hostIP2, subnet3, hostIP3, podIP string, ofport, vxlanPort int32, underlay int, system bool) {
		in := makeTestInput(func(in *model.NodeInput) {
			in.ClusterNetwork.Spec.ClusterNetworks[0] = v1alpha1.ClusterNetworkEntry{CIDR: cidr, HostPrefix: hostPrefix}
			in.ClusterNetwork.Spec.ServiceNetwork = svc
			in.ClusterNetwork.Spec.VXLANPort = vxlanPort
			in.HostSubnets[1].Spec.Subnet, in.HostSubnets[1].Spec.HostIP = subnet2, hostIP2
			in.HostSubnets[2].Spec.Subnet, in.HostSubnets[2].Spec.HostIP = subnet3, hostIP3
			in.Facts.UnderlayMTU = underlay
			if system {
				in.Facts.Datapath = model.DatapathSystem
			}
			if ip, err := netip.ParseAddr(podIP); err == nil {
				in.Pods = append(in.Pods, model.LocalPod{Namespace: "fuzz", Name: "pod", IP: ip, OFPort: ofport})
			}
		})
		v, err := model.BuildNodeView(in)
		if err != nil {
			if v != nil || !model.IsInvalidInput(err) {
				t.Fatalf("BuildNodeView() = %v, %v: want no view and an InvalidInputError", v, err)
			}
			return
		}
		if _, err := Render(v); err != nil {
			t.Fatalf("Render() of an accepted view failed: %v", err)
		}
	})
}
