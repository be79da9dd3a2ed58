package ovs

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// Integration tests: a real ovsdb-server and ovs-vswitchd (userspace datapath) in a netns, started by
// internal/testutil/ovsnode; they need root.

// newTestSwitch starts an OVS node and returns a connected Switch for its br0.
func newTestSwitch(t testing.TB, label string) (*Switch, *ovsnode.Node) {
	t.Helper()
	n := ovsnode.Start(t, label)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, Config{DBEndpoint: n.DBEndpoint(), RunDir: n.RunDir, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s, n
}

// ensureTestBridge creates br0 on the userspace datapath and waits until it serves OpenFlow.
func ensureTestBridge(t testing.TB, s *Switch, n *ovsnode.Node) {
	t.Helper()
	if _, err := s.EnsureBridge(context.Background(), BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450}); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	n.WaitBridge(DefaultBridge, 10*time.Second)
}

// rowVersion returns the _version of an OVSDB row (ovsdb-server changes it with every write of the row),
// read with ovsdb-client since ovs-vsctl does not show it.
func rowVersion(t *testing.T, n *ovsnode.Node, table, name string) string {
	t.Helper()
	q := fmt.Sprintf(`["Open_vSwitch",{"op":"select","table":%q,"where":[["name","==",%q]],"columns":["_version"]}]`, table, name)
	out := n.MustRun("ovsdb-client", "transact", n.DBEndpoint(), q)
	if !strings.Contains(out, `"_version":["uuid"`) {
		t.Fatalf("no _version for %s %s: %s", table, name, out)
	}
	return strings.TrimSpace(out)
}

func TestEnsureBridge(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "brdg")
	ctx := context.Background()

	changes, err := s.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450})
	if err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	if len(changes) != 1 || !strings.HasPrefix(changes[0], "created bridge br0") {
		t.Errorf("first EnsureBridge changes = %q, want one creation", changes)
	}
	n.WaitBridge("br0", 10*time.Second)

	for _, c := range []struct{ args, want string }{
		{"get bridge br0 fail_mode", "secure"},
		{"get bridge br0 protocols", `[OpenFlow13]`},
		{"get bridge br0 datapath_type", "netdev"},
		{"get interface vxlan0 type", "vxlan"},
		{"get interface vxlan0 options", `{dst_port="4789", key=flow, remote_ip=flow}`},
		{"get interface vxlan0 ofport", "1"},
		{"get interface tun0 type", "internal"},
		{"get interface tun0 ofport", "2"},
		{"get interface tun0 mtu_request", "1450"},
	} {
		if got := strings.TrimSpace(n.Vsctl(strings.Fields(c.args)...)); got != c.want {
			t.Errorf("ovs-vsctl %s = %q, want %q", c.args, got, c.want)
		}
	}
	// tun0 is a tap device in the node's netns with the requested MTU.
	if out := n.MustRun("ip", "-o", "link", "show", "tun0"); !strings.Contains(out, "mtu 1450") {
		t.Errorf("tun0 link = %q, want mtu 1450", out)
	}

	// Idempotent: a second EnsureBridge (as after an agent restart) reports and writes nothing.
	versions := map[string]string{}
	for _, r := range [][2]string{{"Bridge", "br0"}, {"Interface", "vxlan0"}, {"Interface", "tun0"}, {"Port", "vxlan0"}} {
		versions[r[0]+"/"+r[1]] = rowVersion(t, n, r[0], r[1])
	}
	brUUID := strings.TrimSpace(n.Vsctl("get", "bridge", "br0", "_uuid"))
	changes, err = s.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450})
	if err != nil || len(changes) != 0 {
		t.Fatalf("second EnsureBridge = %q, %v; want no changes", changes, err)
	}
	// A new Switch (agent restart) sees the same.
	s2, err := New(ctx, Config{DBEndpoint: n.DBEndpoint(), RunDir: n.RunDir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if changes, err := s2.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450}); err != nil || len(changes) != 0 {
		t.Fatalf("EnsureBridge from a new client = %q, %v; want no changes", changes, err)
	}
	for r, v := range versions {
		kind, name, _ := strings.Cut(r, "/")
		if got := rowVersion(t, n, kind, name); got != v {
			t.Errorf("%s was written by an idempotent EnsureBridge (_version %s -> %s)", r, v, got)
		}
	}

	// Only what differs is updated: a new VXLAN port and MTU touch vxlan0's options and tun0's mtu_request.
	changes, err = s.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4790, TunMTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"set interface vxlan0 options=map[dst_port:4790 key:flow remote_ip:flow]",
		"set interface tun0 mtu_request=1400",
	}
	if strings.Join(changes, "\n") != strings.Join(want, "\n") {
		t.Errorf("changes = %q, want %q", changes, want)
	}
	if got := rowVersion(t, n, "Bridge", "br0"); got != versions["Bridge/br0"] {
		t.Errorf("bridge br0 was rewritten although it did not differ")
	}
	if got := strings.TrimSpace(n.Vsctl("get", "bridge", "br0", "_uuid")); got != brUUID {
		t.Errorf("bridge br0 was recreated: uuid %s -> %s", brUUID, got)
	}
	if got := strings.TrimSpace(n.Vsctl("get", "interface", "vxlan0", "options:dst_port")); got != `"4790"` {
		t.Errorf("vxlan0 dst_port = %s, want 4790", got)
	}

	// A hand edit is repaired by diff. The edit reaches the Switch's OVSDB cache asynchronously (a monitor
	// update), so the repair may come one EnsureBridge later, as it would in the agent's next sync.
	n.Vsctl("set", "bridge", "br0", "fail_mode=standalone")
	deadline := time.Now().Add(5 * time.Second)
	for {
		changes, err = s.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4790, TunMTU: 1400})
		if err != nil || len(changes) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || len(changes) != 1 || changes[0] != "set bridge br0 fail_mode=secure" {
		t.Errorf("repair changes = %q, %v", changes, err)
	}
	if got := strings.TrimSpace(n.Vsctl("get", "bridge", "br0", "fail_mode")); got != "secure" {
		t.Errorf("fail_mode after the repair = %s, want secure", got)
	}

	// Bridge external_ids (agent metadata) are merged, and an empty value deletes a key.
	if err := s.SetBridgeExternalIDs(ctx, map[string]string{"vxflow.io/round": "7", "other": "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBridgeExternalIDs(ctx, map[string]string{"other": ""}); err != nil {
		t.Fatal(err)
	}
	ids, err := s.BridgeExternalIDs(ctx)
	if err != nil || !maps.Equal(ids, map[string]string{"vxflow.io/round": "7"}) {
		t.Errorf("BridgeExternalIDs = %v, %v", ids, err)
	}
	if got := strings.TrimSpace(n.Vsctl("get", "bridge", "br0", "external_ids")); got != `{"vxflow.io/round"="7"}` {
		t.Errorf("external_ids in OVSDB = %s", got)
	}
}

func TestPodPorts(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "pods")
	ensureTestBridge(t, s, n)
	ctx := context.Background()

	// Host ends of veths that exist in the node netns, as the CNI plugin creates them.
	for _, v := range []string{"veth-a", "veth-b"} {
		n.MustRun("ip", "link", "add", v, "type", "veth", "peer", "name", v+"-p")
		n.MustRun("ip", "link", "set", v, "up")
	}
	ofA, err := s.EnsurePodPort(ctx, "veth-a", map[string]string{"sandbox": "abc", "ip": "10.128.0.2"})
	if err != nil {
		t.Fatalf("EnsurePodPort: %v", err)
	}
	ofB, err := s.EnsurePodPort(ctx, "veth-b", map[string]string{"sandbox": "def", "ip": "10.128.0.3"})
	if err != nil {
		t.Fatalf("EnsurePodPort: %v", err)
	}
	if ofA < 3 || ofB < 3 || ofA == ofB {
		t.Fatalf("ofports a=%d b=%d, want distinct and >= 3", ofA, ofB)
	}
	if got := strings.TrimSpace(n.Vsctl("get", "interface", "veth-a", "ofport")); got != strconv.Itoa(ofA) {
		t.Errorf("ovs-vsctl ofport of veth-a = %s, EnsurePodPort said %d", got, ofA)
	}
	ver := rowVersion(t, n, "Interface", "veth-a")
	again, err := s.EnsurePodPort(ctx, "veth-a", map[string]string{"sandbox": "abc", "ip": "10.128.0.2"})
	if err != nil || again != ofA {
		t.Fatalf("second EnsurePodPort = %d, %v; want %d", again, err, ofA)
	}
	if got := rowVersion(t, n, "Interface", "veth-a"); got != ver {
		t.Errorf("idempotent EnsurePodPort rewrote the interface")
	}

	ports, err := s.ListPodPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []PodPort{
		{Name: "veth-a", Ofport: ofA, ExternalIDs: map[string]string{"sandbox": "abc", "ip": "10.128.0.2"}},
		{Name: "veth-b", Ofport: ofB, ExternalIDs: map[string]string{"sandbox": "def", "ip": "10.128.0.3"}},
	}
	if !samePorts(ports, want) {
		t.Errorf("ListPodPorts = %+v, want %+v", ports, want)
	}

	// A port whose device does not exist fails with ovs-vswitchd's reason.
	if _, err := s.EnsurePodPort(ctx, "veth-missing", nil); err == nil || !strings.Contains(err.Error(), "could not add") {
		t.Errorf("EnsurePodPort of a missing device: err = %v", err)
	}
	if err := s.DeletePort(ctx, "veth-missing"); err != nil {
		t.Fatal(err)
	}

	if err := s.DeletePort(ctx, "veth-a"); err != nil {
		t.Fatalf("DeletePort: %v", err)
	}
	if err := s.DeletePort(ctx, "veth-a"); err != nil {
		t.Fatalf("second DeletePort: %v", err)
	}
	if out := n.Vsctl("list-ports", "br0"); strings.Contains(out, "veth-a") || !strings.Contains(out, "veth-b") {
		t.Errorf("list-ports after delete = %q", out)
	}
	ports, err = s.ListPodPorts(ctx)
	if err != nil || !samePorts(ports, want[1:]) {
		t.Errorf("ListPodPorts after delete = %+v, %v", ports, err)
	}
	if _, err := s.EnsurePodPort(ctx, "tun0", nil); err == nil {
		t.Errorf("EnsurePodPort(tun0) succeeded, want a refusal")
	}
}

func samePorts(a, b []PodPort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Ofport != b[i].Ofport || !maps.Equal(a[i].ExternalIDs, b[i].ExternalIDs) {
			return false
		}
	}
	return true
}
