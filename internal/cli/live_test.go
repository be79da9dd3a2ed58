package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/cli/nodeaccess"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// This file proves trace on a real two-node overlay built the way the lab builds one (lab.md part A §3):
// each node is a private Open vSwitch (userspace datapath) in its own network namespace, the node IP on
// br-ex, br0 with vxlan0 and tun0, a pod per node in its own namespace, the flows and the nftables table
// rendered by the agent's renderers for these objects, and a veth underlay between the nodes. It needs
// root; every namespace, process and file is removed when the test ends. With -update it also records the
// ofproto/trace outputs under testdata/ofproto-trace/, which the pure parser tests read.

// liveObjects are the lab's API objects; OFPORT_CLIENT and OFPORT_WEB are replaced by the ofports OVS
// assigned. node3 exists only as a HostSubnet: its VTEP never answers, as for a node that is down.
const liveObjects = `
apiVersion: network.vxflow.io/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterNetworks: [{cidr: 10.128.0.0/14, hostPrefix: 23}]
  serviceNetwork: 172.30.0.0/16
  vxlanPort: 4789
---
apiVersion: network.vxflow.io/v1alpha1
kind: HostSubnet
metadata: {name: node1}
spec: {host: node1, hostIP: 192.168.100.1, subnet: 10.128.0.0/23}
status: {agent: {mtu: 1450, datapathType: netdev}}
---
apiVersion: network.vxflow.io/v1alpha1
kind: HostSubnet
metadata: {name: node2}
spec: {host: node2, hostIP: 192.168.100.2, subnet: 10.128.2.0/23}
status: {agent: {mtu: 1450, datapathType: netdev}}
---
apiVersion: network.vxflow.io/v1alpha1
kind: HostSubnet
metadata: {name: node3}
spec: {host: node3, hostIP: 192.168.100.3, subnet: 10.128.4.0/23}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo, annotations: {network.vxflow.io/ofport: "OFPORT_CLIENT"}}
spec: {nodeName: node1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.128.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: demo, labels: {app: web}, annotations: {network.vxflow.io/ofport: "OFPORT_WEB"}}
spec: {nodeName: node2, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.128.2.20}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: LoadBalancer
  clusterIP: 172.30.0.80
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}]
status:
  loadBalancer: {ingress: [{ip: 192.168.100.208}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.128.2.20], nodeName: node2, conditions: {ready: true}}]
ports: [{name: http, protocol: TCP, port: 8080}]
`

// liveNode is one node of the lab.
type liveNode struct {
	name   string
	ip     string
	gw     string
	subnet string
	ovs    *ovsnode.Node
	sw     *ovs.Switch
}

// liveLab is the two-node overlay.
type liveLab struct {
	nodes      map[string]*liveNode
	podNS      map[string]string // pod name -> its network namespace
	ports      map[string]int    // pod name -> its ofport
	st         *ClusterState
	access     *nodeaccess.Exec
	noFlowsOut string // node2's ofproto/trace before any flow was installed
}

func mustCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runCmd(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("failed to run %s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startLiveLab builds the lab; the caller must be root.
func startLiveLab(t *testing.T) *liveLab {
	t.Helper()
	ovsnode.RequireRoot(t)
	for _, b := range []string{"nft", "ethtool"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("failed to find %s (install nftables and ethtool): %v", b, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	lab := &liveLab{nodes: map[string]*liveNode{}, podNS: map[string]string{}, ports: map[string]int{}}
	for _, n := range []*liveNode{
		{name: "node1", ip: "192.168.100.1", gw: "10.128.0.1", subnet: "10.128.0.0/23"},
		{name: "node2", ip: "192.168.100.2", gw: "10.128.2.1", subnet: "10.128.2.0/23"},
	} {
		n.ovs = ovsnode.Start(t, "ctl"+n.name[len(n.name)-1:])
		lab.nodes[n.name] = n
	}
	n1, n2 := lab.nodes["node1"], lab.nodes["node2"]
	mustCmd(t, "ip", "link", "add", "ul0", "netns", n1.ovs.NetNS, "type", "veth", "peer", "name", "ul0", "netns", n2.ovs.NetNS)

	for _, n := range []*liveNode{n1, n2} {
		in := func(args ...string) string { t.Helper(); return n.ovs.MustRun(args[0], args[1:]...) }
		in("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.default.arp_ignore=1",
			"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0")
		sw, err := ovs.New(ctx, ovs.Config{DBEndpoint: n.ovs.DBEndpoint(), RunDir: n.ovs.RunDir, Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sw.Close)
		n.sw = sw
		if _, err := sw.EnsureUnderlayBridge(ctx, ovs.UnderlaySpec{Bridge: "br-ex", NIC: "ul0", DatapathType: ovs.DatapathNetdev}); err != nil {
			t.Fatal(err)
		}
		if _, err := sw.EnsureBridge(ctx, ovs.BridgeSpec{DatapathType: ovs.DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450}); err != nil {
			t.Fatal(err)
		}
		n.ovs.WaitBridge("br0", 20*time.Second)
		n.ovs.WaitBridge("br-ex", 20*time.Second)
		waitLink(t, n.ovs, "tun0")
		in("ip", "addr", "add", n.ip+"/24", "dev", "br-ex")
		in("ip", "link", "set", "br-ex", "up")
		in("ip", "link", "set", "ul0", "up")
		in("ip", "link", "set", "tun0", "mtu", "1450", "up")
		in("ip", "addr", "add", n.gw+"/23", "dev", "tun0")
		in("ip", "route", "add", "10.128.0.0/14", "dev", "tun0")
		in("ip", "route", "add", "172.30.0.0/16", "dev", "tun0")
	}
	lab.ports["client"] = lab.addPod(ctx, t, n1, "client", "demo", "10.128.0.10", "10.128.0.1")
	lab.ports["web-0"] = lab.addPod(ctx, t, n2, "web-0", "demo", "10.128.2.20", "10.128.2.1")

	lab.access = &nodeaccess.Exec{Nodes: map[string]nodeaccess.ExecNode{}, Timeout: 20 * time.Second}
	for _, n := range []*liveNode{n1, n2} {
		lab.access.Nodes[n.name] = nodeaccess.ExecNode{Prefix: []string{"ip", "netns", "exec", n.ovs.NetNS},
			Env: map[string]string{"OVS_RUNDIR": n.ovs.RunDir}}
	}
	// A bridge the agent has not programmed yet: no flow at all.
	out, err := lab.access.OFProtoTrace(ctx, "node2", nodeaccess.TraceRequest{Bridge: "br0",
		Flow: fmt.Sprintf("in_port=%d,tcp,nw_src=10.128.2.20,nw_dst=10.128.0.10,tp_src=8080,tp_dst=40000", lab.ports["web-0"])})
	if err != nil {
		t.Fatal(err)
	}
	lab.noFlowsOut = out

	objs := strings.NewReplacer("OFPORT_CLIENT", fmt.Sprint(lab.ports["client"]), "OFPORT_WEB", fmt.Sprint(lab.ports["web-0"])).Replace(liveObjects)
	st := &ClusterState{Sources: map[string]Source{}, Ignored: map[string]int{}}
	if errs := st.addFile("live.yaml", []byte(objs)); len(errs) > 0 {
		t.Fatal(errs)
	}
	st.sort()
	lab.st = st
	for _, n := range []*liveNode{n1, n2} {
		lab.program(ctx, t, n, model.DatapathNetdev)
	}
	// Pre-seed the tunnel neighbours (lab.md pitfall 5), so that the first traced packet is not the one
	// OVS drops while it ARPs.
	mac1, mac2 := linkMAC(t, n1.ovs, "br-ex"), linkMAC(t, n2.ovs, "br-ex")
	n1.ovs.Appctl("tnl/neigh/set", "br-ex", n2.ip, mac2)
	n2.ovs.Appctl("tnl/neigh/set", "br-ex", n1.ip, mac1)
	return lab
}

// program renders node n's state for the lab's objects and applies it: flows with the OVS applier, the
// nftables table with nft -f.
func (lab *liveLab) program(ctx context.Context, t *testing.T, n *liveNode, dp model.DatapathType) *NodeState {
	t.Helper()
	ns, err := RenderNode(lab.st, RenderOptions{Node: n.name, Datapath: dp, UnderlayMTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Skipped) > 0 {
		t.Fatalf("render skipped %v", ns.Skipped)
	}
	if _, err := ovs.NewFlowApplier("br0", n.ovs.RunDir, 20*time.Second).Sync(ctx, ns.Flows); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.ovs.NetNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("flush ruleset\n" + ns.Ruleset.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to load the nftables table on %s: %v: %s", n.name, err, out)
	}
	return ns
}

// addPod creates a pod namespace with eth0 (MAC from the IP, MTU 1450, checksum offload off as the CNI
// plugin does), plugs its veth into br0 and returns the ofport OVS assigned.
func (lab *liveLab) addPod(ctx context.Context, t *testing.T, n *liveNode, name, namespace, ip, gw string) int {
	t.Helper()
	pns := ovsnode.NewNetNS(t, "pod")
	lab.podNS[name] = pns
	host := "veth-" + name
	mac := model.PodMAC(netip.MustParseAddr(ip)).String()
	mustCmd(t, "ip", "link", "add", host, "netns", n.ovs.NetNS, "type", "veth", "peer", "name", "eth0", "netns", pns)
	for _, args := range [][]string{
		{"ip", "-n", pns, "link", "set", "eth0", "address", mac, "mtu", "1450", "up"},
		{"ip", "-n", pns, "addr", "add", ip + "/23", "dev", "eth0"},
		{"ip", "-n", pns, "route", "add", "10.128.0.0/14", "dev", "eth0"},
		{"ip", "-n", pns, "route", "add", "default", "via", gw},
		{"ip", "netns", "exec", pns, "ethtool", "-K", "eth0", "tx", "off"},
		{"ip", "-n", n.ovs.NetNS, "link", "set", host, "mtu", "1450", "up"},
	} {
		mustCmd(t, args[0], args[1:]...)
	}
	port, err := n.sw.EnsurePodPort(ctx, host, map[string]string{"sandbox": "sb-" + name, "ip": ip, "pod_namespace": namespace, "pod_name": name})
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func waitLink(t *testing.T, n *ovsnode.Node, name string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := n.Run("ip", "link", "show", name); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not appear in %s", name, n.NetNS)
}

func linkMAC(t *testing.T, n *ovsnode.Node, name string) string {
	t.Helper()
	f := strings.Fields(n.MustRun("ip", "-br", "link", "show", name))
	if len(f) < 3 {
		t.Fatalf("cannot read the MAC of %s: %v", name, f)
	}
	return f[2]
}

// inNetNS runs fn with the calling goroutine's thread in the named network namespace: sockets created
// there stay in it.
func inNetNS(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = orig.Close() }()
	target, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = target.Close() }()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("failed to return to the test's network namespace: %v", err))
		}
	}()
	fn()
}

// serve starts a TCP server in a pod that answers every connection with its name, and returns when it
// listens; it stops when the test ends.
func (lab *liveLab) serve(t *testing.T, pod, addr string) {
	t.Helper()
	var ln net.Listener
	inNetNS(t, lab.podNS[pod], func() {
		var err error
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(pod + "\n"))
			_ = c.Close()
		}
	}()
}

// dial connects from a pod to addr and returns what the server said.
func (lab *liveLab) dial(t *testing.T, pod, addr string) (string, error) {
	t.Helper()
	var conn net.Conn
	var err error
	inNetNS(t, lab.podNS[pod], func() {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
	})
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := conn.Read(b)
	return strings.TrimSpace(string(b[:n])), err
}

// LiveTraceCase is one traced packet and the hops it must take, shared with the lab's end-to-end tests.
type liveTraceCase struct {
	name      string
	req       TraceRequest
	verdict   string
	kinds     []string
	tables    [][]int
	contains  []string
	dropTable string
}

func liveTraceCases(lab *liveLab) []liveTraceCase {
	web := fmt.Sprint(lab.ports["web-0"])
	return []liveTraceCase{
		{
			name:    "pod to pod across nodes",
			req:     TraceRequest{From: "demo/client", To: "pod/web-0:8080", Namespace: "demo"},
			verdict: VerdictDelivered,
			kinds:   []string{StepSource, StepOVS, StepVXLAN, StepOVS, StepDeliver},
			tables:  [][]int{{0, 20, 30, 90}, {0, 10, 30, 70, 80}},
			contains: []string{
				"tun_dst 192.168.100.2 (node node2), VNI 0, UDP port 4789",
				"outer header 50 bytes", "IPv4 192.168.100.1 -> 192.168.100.2 (DF=true), UDP -> 4789, VXLAN VNI 0",
				"inner MTU 1450 (node node1's pod MTU) + 50 = outer packets up to 1500 bytes",
				"delivered to pod demo/web-0 (10.128.2.20) on port " + web + " on node node2",
				"[Pod demo/client]", "[HostSubnet node2]", "[HostSubnet node1]", "[Pod demo/web-0]",
				"no NAT: the mirror path",
			},
		},
		{
			name:    "pod to ClusterIP",
			req:     TraceRequest{From: "demo/client", To: "svc/web:http", Namespace: "demo"},
			verdict: VerdictDelivered,
			kinds:   []string{StepSource, StepOVS, StepNFTables, StepRoute, StepOVS, StepVXLAN, StepOVS, StepDeliver},
			tables:  [][]int{{0, 20, 30, 60}, {0, 30, 90}, {0, 10, 30, 70, 80}},
			contains: []string{
				"Service demo/web port http, ClusterIP 172.30.0.80:80",
				"Service map service-ips element: 172.30.0.80 . tcp . 80 : goto service-demo/web/tcp/http",
				"DNAT 172.30.0.80:80 -> 10.128.2.20:8080",
				"masquerade 10.128.0.10 -> 10.128.0.1 (tun0's address)",
				"ip route get 10.128.2.20 from 10.128.0.10 iif tun0: 10.128.2.20 from 10.128.0.10 dev tun0",
				"node node1 br0, in_port 2 (tun0): tcp 10.128.0.1:40000 -> 10.128.2.20:8080",
				"its conntrack reverses the masquerade and the DNAT: the packet becomes 172.30.0.80:80 -> 10.128.0.10:40000",
			},
		},
		{
			name:    "external client to the LoadBalancer IP",
			req:     TraceRequest{From: "192.168.100.50", To: "192.168.100.208:80", Node: "node1"},
			verdict: VerdictDelivered,
			kinds:   []string{StepSource, StepNFTables, StepRoute, StepOVS, StepVXLAN, StepOVS, StepDeliver},
			tables:  [][]int{{0, 30, 90}, {0, 10, 30, 70, 80}},
			contains: []string{
				"Service demo/web port http, LoadBalancer IP 192.168.100.208:80",
				"element 192.168.100.208 . tcp . 80 : goto external-demo/web/tcp/http",
				"external-demo/web/tcp/http: jump mark-for-masquerade",
				"marked for masquerade, masqueraded",
				"DNAT to 10.128.2.20:8080",
				"node1 routes it out of its underlay to 192.168.100.50",
			},
		},
		{
			name:      "spoofed source is dropped by the pod anti-spoofing table",
			req:       TraceRequest{From: "demo/client", To: "pod/web-0:8080", Namespace: "demo", SrcIP: "10.128.0.99"},
			verdict:   VerdictDropped,
			kinds:     []string{StepSource, StepOVS, StepDrop},
			tables:    [][]int{{0, 20}},
			dropTable: "br0 table 20 PodSpoofGuard",
			contains: []string{
				"source address forced to 10.128.0.99 (spoofed: the pod's own is 10.128.0.10)",
				"a pod may send only from its own IP and MAC",
				"Result: DROPPED on node node1 at br0 table 20 PodSpoofGuard",
			},
		},
		{
			name:    "ClusterIP port the Service does not have is rejected by nftables",
			req:     TraceRequest{From: "demo/client", To: "172.30.0.80:81"},
			verdict: VerdictDropped,
			kinds:   []string{StepSource, StepOVS, StepNFTables, StepDrop},
			tables:  [][]int{{0, 20, 30, 60}},
			contains: []string{
				"forward cluster-ips-check: ip daddr @cluster-ips reject",
				"rejected with ICMP port unreachable: reject traffic to invalid ports of ClusterIPs",
			},
		},
	}
}

// checkLiveTrace asserts one case.
func checkLiveTrace(t *testing.T, tc liveTraceCase, res *TraceResult) {
	t.Helper()
	text := res.Text()
	if res.Verdict != tc.verdict {
		t.Fatalf("verdict %s, want %s\n%s", res.Verdict, tc.verdict, text)
	}
	if got := res.StepKinds(); !slices.Equal(got, tc.kinds) {
		t.Errorf("steps %v, want %v\n%s", got, tc.kinds, text)
	}
	if got := res.OVSTables(); fmt.Sprint(got) != fmt.Sprint(tc.tables) {
		t.Errorf("OVS tables %v, want %v\n%s", got, tc.tables, text)
	}
	for _, w := range tc.contains {
		if !strings.Contains(text, w) {
			t.Errorf("trace lacks %q\n%s", w, text)
		}
	}
	if tc.dropTable != "" && (res.Drop == nil || res.Drop.Where != tc.dropTable) {
		t.Errorf("drop %+v, want at %s", res.Drop, tc.dropTable)
	}
}

func TestLiveTwoNodes(t *testing.T) {
	lab := startLiveLab(t)
	ctx := context.Background()

	// The data path really works as programmed: a TCP connection pod to pod across nodes, and through the
	// Service's ClusterIP (DNAT and masquerade on node1, VXLAN, reply un-NATed by node1's conntrack).
	lab.serve(t, "web-0", "10.128.2.20:8080")
	for _, addr := range []string{"10.128.2.20:8080", "172.30.0.80:80"} {
		var got string
		var err error
		for i := 0; i < 3; i++ { // the first SYN may meet an unresolved neighbour (lab.md pitfall 5)
			if got, err = lab.dial(t, "client", addr); err == nil {
				break
			}
		}
		if err != nil || got != "web-0" {
			t.Fatalf("client -> %s: %q, %v", addr, got, err)
		}
	}

	for _, tc := range liveTraceCases(lab) {
		t.Run("exec/"+tc.name, func(t *testing.T) {
			res, err := Trace(ctx, tc.req, lab.st, lab.access)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("vxflowctl trace %+v:\n%s", tc.req, res.Text())
			checkLiveTrace(t, tc, res)
		})
	}

	// The same walks through the agent's debug endpoint: each node serves nodeaccess.Register over HTTP
	// with its own exec access, and the CLI asks them over HTTP.
	httpAccess := &nodeaccess.HTTP{Addresses: map[string]string{}}
	for name := range lab.nodes {
		mux := http.NewServeMux()
		nodeaccess.Register(mux, &nodeaccess.Exec{Default: lab.access.Nodes[name]})
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		httpAccess.Addresses[name] = srv.URL
	}
	for _, tc := range liveTraceCases(lab) {
		t.Run("agent/"+tc.name, func(t *testing.T) {
			res, err := Trace(ctx, tc.req, lab.st, httpAccess)
			if err != nil {
				t.Fatal(err)
			}
			checkLiveTrace(t, tc, res)
		})
	}

	t.Run("the live nftables table is what was rendered", func(t *testing.T) {
		text, err := lab.access.NFTTable(ctx, "node1")
		if err != nil {
			t.Fatal(err)
		}
		live, err := ParseNFTRuleset(text)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := RenderNode(lab.st, RenderOptions{Node: "node1", Datapath: model.DatapathNetdev, UnderlayMTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		if cloneForCompare(live) != cloneForCompare(ns.Ruleset) {
			t.Errorf("live table differs:\n%s", lineDiff(cloneForCompare(ns.Ruleset), cloneForCompare(live)))
		}
	})

	captureOFTraces(t, lab)
}

// ofTraceCaptures are the ofproto/trace runs recorded for the parser tests.
func ofTraceCaptures(lab *liveLab) map[string]struct {
	node string
	req  nodeaccess.TraceRequest
} {
	client, web := lab.ports["client"], lab.ports["web-0"]
	fromClient := fmt.Sprintf("in_port=%d,tcp,dl_src=0a:58:0a:80:00:0a", client)
	type c = struct {
		node string
		req  nodeaccess.TraceRequest
	}
	tr := func(node, flow string, ct ...string) c {
		return c{node, nodeaccess.TraceRequest{Bridge: "br0", Flow: flow, CTNext: ct}}
	}
	return map[string]c{
		"pod-to-remote-pod-node1":       tr("node1", fromClient+",dl_dst=0a:58:0a:80:02:14,nw_src=10.128.0.10,nw_dst=10.128.2.20,nw_ttl=64,tp_src=40000,tp_dst=8080"),
		"pod-to-remote-pod-node2":       tr("node2", "tun_src=192.168.100.1,tun_dst=192.168.100.2,tun_id=0x0,in_port=1,tcp,nw_src=10.128.0.10,nw_dst=10.128.2.20,nw_ttl=64,tp_src=40000,tp_dst=8080"),
		"pod-to-service-node1":          tr("node1", fromClient+",nw_src=10.128.0.10,nw_dst=172.30.0.80,nw_ttl=64,tp_src=40000,tp_dst=80"),
		"tun0-to-remote-pod-node1":      tr("node1", "in_port=2,tcp,nw_src=10.128.0.1,nw_dst=10.128.2.20,nw_ttl=64,tp_src=40000,tp_dst=8080"),
		"spoofed-source-node1":          tr("node1", fromClient+",nw_src=10.128.0.99,nw_dst=10.128.2.20,nw_ttl=64,tp_src=40000,tp_dst=8080"),
		"vxlan-from-unknown-vtep-node2": tr("node2", "tun_src=192.168.100.9,tun_dst=192.168.100.2,tun_id=0x0,in_port=1,tcp,nw_src=10.128.4.5,nw_dst=10.128.2.20,tp_src=40000,tp_dst=8080"),
		"neighbour-miss-node1":          tr("node1", fromClient+",nw_src=10.128.0.10,nw_dst=10.128.4.5,nw_ttl=64,tp_src=40000,tp_dst=80"),
		"arp-for-gateway-node1":         tr("node1", fmt.Sprintf("in_port=%d,arp,dl_src=0a:58:0a:80:00:0a,arp_op=1,arp_spa=10.128.0.10,arp_sha=0a:58:0a:80:00:0a,arp_tpa=10.128.0.1", client)),
		"tun0-to-local-pod-node2":       tr("node2", fmt.Sprintf("in_port=2,udp,nw_src=10.128.2.1,nw_dst=10.128.2.20,nw_ttl=64,udp_src=5353,udp_dst=%d", 5000+web)),
	}
}

// captureOFTraces checks the parser on the lab's own outputs and, with -update, records them.
func captureOFTraces(t *testing.T, lab *liveLab) {
	ctx := context.Background()
	dir := filepath.Join("testdata", "ofproto-trace")
	save := func(name, out string) {
		t.Helper()
		if _, err := ParseOFTrace(out); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name+".txt"), []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, c := range ofTraceCaptures(lab) {
		out, err := lab.access.OFProtoTrace(ctx, c.node, c.req)
		if err != nil {
			t.Fatal(err)
		}
		save(name, out)
	}
	save("no-flows-node2", lab.noFlowsOut)
	// The kernel datapath's pipeline (conntrack first, recirculation) traced on node2's bridge.
	lab.program(ctx, t, lab.nodes["node2"], model.DatapathSystem)
	out, err := lab.access.OFProtoTrace(ctx, "node2", nodeaccess.TraceRequest{Bridge: "br0", CTNext: []string{"trk,new"},
		Flow: "tun_src=192.168.100.1,tun_dst=192.168.100.2,tun_id=0x0,in_port=1,tcp,nw_src=10.128.0.10,nw_dst=10.128.2.20,nw_ttl=64,tp_src=40000,tp_dst=8080"})
	if err != nil {
		t.Fatal(err)
	}
	save("system-conntrack-node2", out)
	lab.program(ctx, t, lab.nodes["node2"], model.DatapathNetdev)
}

// TestNFTKernelListing loads a rendered table into a fresh network namespace, lists it back with nft and
// parses the listing: the parser reads what the kernel says, not only what the renderer prints. With -update
// it records the listing for TestParseNFTRulesetKernelListing.
func TestNFTKernelListing(t *testing.T) {
	ovsnode.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("failed to find nft (install nftables): %v", err)
	}
	ns := ovsnode.NewNetNS(t, "nft")
	_, rs := seedRuleset(t, "node1", model.DatapathNetdev, extraServices)
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rs.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	listing := mustCmd(t, "ip", "netns", "exec", ns, "nft", "list", "table", "ip", "vxflow")
	got, err := ParseNFTRuleset(listing)
	if err != nil {
		t.Fatal(err)
	}
	if cloneForCompare(got) != cloneForCompare(rs) {
		t.Errorf("the kernel lists another table than was loaded:\n%s", lineDiff(cloneForCompare(rs), cloneForCompare(got)))
	}
	if *update {
		if err := os.MkdirAll(filepath.Join("testdata", "nft"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "nft", "list-node1.txt"), []byte(listing), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
