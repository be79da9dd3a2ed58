package ovs

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/apply/link"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// TestTwoNodeVXLAN is an integration test of the whole applier layer on the userspace datapath: two nodes,
// each its own OVS in its own netns, joined by an underlay veth whose addresses the native-tunneling layout
// moves onto br-ex; br0, tun0, sysctls and routes applied by internal/apply/{ovs,link}; one pod per node; the
// fixture's flows. It proves with ofproto/trace that a pod's packet to the remote subnet leaves vxlan0 for
// the remote node's IP with the pod's VNID, and then pings pod to pod and host to remote pod for real.
func TestTwoNodeVXLAN(t *testing.T) {
	ovsnode.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cluster, service := netip.MustParsePrefix("10.128.0.0/14"), netip.MustParsePrefix("172.30.0.0/16")
	nodes := []*vxlanNode{
		{label: "vxa", hostIP: netip.MustParsePrefix("192.168.100.1/24"), subnet: netip.MustParsePrefix("10.128.0.0/23"), podIP: netip.MustParseAddr("10.128.0.2"), vnid: 10},
		{label: "vxb", hostIP: netip.MustParsePrefix("192.168.100.2/24"), subnet: netip.MustParsePrefix("10.128.2.0/23"), podIP: netip.MustParseAddr("10.128.2.2"), vnid: 10},
	}
	for _, n := range nodes {
		n.ovs = ovsnode.Start(t, n.label)
	}
	// The underlay: a veth between the two node namespaces, the node IPs on it (as on a real NIC).
	a, b := nodes[0].ovs, nodes[1].ovs
	a.MustRun("ip", "link", "add", "ul0", "mtu", "1500", "type", "veth", "peer", "name", "ul0", "mtu", "1500", "netns", b.NetNS)
	for _, n := range nodes {
		n.ovs.MustRun("ip", "addr", "add", n.hostIP.String(), "dev", "ul0")
		n.ovs.MustRun("ip", "link", "set", "ul0", "up")
	}
	for i, n := range nodes {
		peer := nodes[1-i]
		n.setup(ctx, t, fixture{
			cluster: cluster, service: service,
			local:   fxNode{hostIP: n.hostIP.Addr(), subnet: n.subnet},
			remotes: []fxNode{{hostIP: peer.hostIP.Addr(), subnet: peer.subnet}},
		})
	}

	// Underlay first: OVS learns the peer's br-ex MAC from the ARP exchange, so the first VXLAN packet is not
	// dropped while OVS resolves it (lab.md, pitfall 5).
	a.MustRun("ping", "-c", "2", "-W", "2", nodes[1].hostIP.Addr().String())

	t.Run("trace pod to remote subnet leaves vxlan0 for the remote node", func(t *testing.T) {
		out := a.Appctl("ofproto/trace", "br0", fmt.Sprintf("in_port=%d,ip,dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,nw_ttl=64",
			nodes[0].ofport, podMAC(nodes[0].podIP), podMAC(nodes[1].podIP), nodes[0].podIP, nodes[1].podIP))
		dp := regexp.MustCompile(`(?m)^Datapath actions: (.*)$`).FindStringSubmatch(out)
		if dp == nil {
			t.Fatalf("no datapath actions in the trace:\n%s", out)
		}
		for _, want := range []string{
			"tnl_push(tnl_port(",
			"ipv4(src=192.168.100.1,dst=192.168.100.2,",
			"udp(src=0,dst=4789,",
			"vxlan(flags=0x8000000,vni=0xa)",
		} {
			if !strings.Contains(dp[1], want) {
				t.Errorf("datapath actions lack %q:\n%s", want, out)
			}
		}
		if !strings.Contains(out, "set_field:192.168.100.2->tun_dst") || !strings.Contains(out, "tunneling to 192.168.100.2 via br-ex") {
			t.Errorf("trace does not show the tunnel to node b via br-ex:\n%s", out)
		}
		t.Logf("Datapath actions: %s", dp[1])
	})

	t.Run("trace VXLAN from an unknown VTEP is dropped", func(t *testing.T) {
		out := b.Appctl("ofproto/trace", "br0", fmt.Sprintf("in_port=1,tun_id=0xa,tun_src=192.168.100.9,tun_dst=192.168.100.2,ip,nw_src=%s,nw_dst=%s",
			nodes[0].podIP, nodes[1].podIP))
		if !strings.Contains(out, "Datapath actions: drop") {
			t.Errorf("VXLAN from an unknown VTEP not dropped:\n%s", out)
		}
	})

	t.Run("trace spoofed source is dropped", func(t *testing.T) {
		out := a.Appctl("ofproto/trace", "br0", fmt.Sprintf("in_port=%d,ip,nw_src=10.128.0.99,nw_dst=%s", nodes[0].ofport, nodes[1].podIP))
		if !strings.Contains(out, "Datapath actions: drop") {
			t.Errorf("spoofed packet not dropped:\n%s", out)
		}
	})

	t.Run("ping pod to remote pod over VXLAN", func(t *testing.T) {
		requirePing(t, nodes[0].podNS, nodes[1].podIP.String(), 1422) // a full 1450-byte packet, DF
		// Both nodes accepted the packets in table 10 (VXLAN from the other node's IP).
		for i, n := range nodes {
			out := n.ovs.Ofctl("dump-flows", "br0", "table=10,tun_src="+nodes[1-i].hostIP.Addr().String())
			m := regexp.MustCompile(`n_packets=(\d+)`).FindStringSubmatch(out)
			if m == nil || m[1] == "0" {
				t.Errorf("node %s received no VXLAN from its peer: %s", n.label, out)
			}
		}
	})
	t.Run("ping host to remote pod via tun0", func(t *testing.T) {
		requirePing(t, a.NetNS, nodes[1].podIP.String(), 56)
	})
	t.Run("everything applied again changes nothing", func(t *testing.T) {
		for _, n := range nodes {
			if changes := n.setupOnce(ctx, t); len(changes) != 0 {
				t.Errorf("node %s: second apply changed %q", n.label, changes)
			}
		}
	})
}

// vxlanNode is one node of TestTwoNodeVXLAN.
type vxlanNode struct {
	label  string
	hostIP netip.Prefix
	subnet netip.Prefix
	podIP  netip.Addr
	vnid   int

	ovs    *ovsnode.Node
	sw     *Switch
	lm     *link.Manager
	fx     fixture
	podNS  string
	ofport int
}

// setup applies the node's whole configuration through the appliers, adds its pod and syncs its flows.
func (n *vxlanNode) setup(ctx context.Context, t *testing.T, fx fixture) {
	t.Helper()
	var err error
	n.sw, err = New(ctx, Config{DBEndpoint: n.ovs.DBEndpoint(), RunDir: n.ovs.RunDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.sw.Close)
	n.lm, err = link.NewInNetNS(ovsnode.NetNSPath(n.ovs.NetNS))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.lm.Close)
	n.fx = fx
	n.setupOnce(ctx, t)

	// The pod: a netns with eth0 (MAC 0a:58:<IP>, on-link cluster route, default via the gateway), the
	// host end of its veth a port of br0.
	n.podNS = ovsnode.NewNetNS(t, n.label+"pod")
	gw := fx.gateway().String()
	n.ovs.MustRun("ip", "link", "add", "veth-pod", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "mtu", "1450", "netns", n.podNS)
	n.ovs.MustRun("ip", "link", "set", "veth-pod", "up")
	for _, args := range [][]string{
		{"link", "set", "eth0", "address", podMAC(n.podIP)},
		{"addr", "add", netip.PrefixFrom(n.podIP, n.subnet.Bits()).String(), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", fx.cluster.String(), "dev", "eth0"},
		{"route", "add", "default", "via", gw},
	} {
		ovsnode.MustIP(t, n.podNS, args...)
	}
	n.ofport, err = n.sw.EnsurePodPort(ctx, "veth-pod", map[string]string{"ip": n.podIP.String()})
	if err != nil {
		t.Fatal(err)
	}
	n.fx.pods = []fxPod{{ip: n.podIP, ofport: n.ofport, vnid: n.vnid}}
	res, err := n.sw.Sync(ctx, n.fx.flows())
	if err != nil {
		t.Fatalf("Sync on %s: %v", n.label, err)
	}
	if res.Added != len(n.fx.flows()) {
		t.Errorf("first Sync on %s: %+v", n.label, res)
	}
}

// setupOnce applies the node-level configuration (everything but the pod) and returns all changes made.
func (n *vxlanNode) setupOnce(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var all []string
	add := func(what string, changes []string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s on %s: %v", what, n.label, err)
		}
		all = append(all, changes...)
	}
	changes, err := n.lm.EnsureSysctls(ctx, link.SysctlOptions{Tun: TunPort, UserspaceDatapath: true})
	add("EnsureSysctls", changes, err)
	changes, err = n.sw.EnsureUnderlayBridge(ctx, UnderlaySpec{Bridge: "br-ex", NIC: "ul0", DatapathType: DatapathNetdev})
	add("EnsureUnderlayBridge", changes, err)
	changes, err = n.lm.MoveAddresses(ctx, "ul0", "br-ex")
	add("MoveAddresses", changes, err)
	underlay, err := n.lm.UnderlayMTU(n.hostIP.Addr())
	if err != nil {
		t.Fatal(err)
	}
	mtu, err := link.PodMTU(0, underlay)
	if err != nil || mtu != 1450 {
		t.Fatalf("PodMTU over %d = %d, %v", underlay, mtu, err)
	}
	changes, err = n.sw.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: mtu})
	add("EnsureBridge", changes, err)
	gw, err := link.Gateway(n.subnet)
	if err != nil {
		t.Fatal(err)
	}
	changes, err = n.lm.EnsureTun(ctx, link.TunConfig{Name: TunPort, Gateway: gw, ClusterCIDRs: []netip.Prefix{n.fx.cluster},
		ServiceCIDR: n.fx.service, MTU: mtu})
	add("EnsureTun", changes, err)
	if n.ofport != 0 {
		res, err := n.sw.Sync(ctx, n.fx.flows())
		if err != nil {
			t.Fatal(err)
		}
		for range res.FlowMods() {
			all = append(all, "flow-mod")
		}
	}
	return all
}

// requirePing pings dst from the namespace with DF set and fails unless most replies come back.
func requirePing(t *testing.T, ns, dst string, size int) {
	t.Helper()
	out, _ := ovsnode.RunIn(ns, "ping", "-c", "5", "-i", "0.2", "-W", "2", "-M", "do", "-s", strconv.Itoa(size), dst)
	m := regexp.MustCompile(`(\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s from %s: %s", dst, ns, out)
	}
	if got, _ := strconv.Atoi(m[1]); got < 4 {
		t.Errorf("ping %s from %s: %s of 5 replies:\n%s", dst, ns, m[1], out)
	}
}
