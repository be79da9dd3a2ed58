package nft

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// topology is a node namespace routing between pod namespaces and an external client namespace, all
// created by the test:
//
//	pod-a 10.128.0.2 (node1) ─ veth ─┐
//	pod-b 10.128.2.2 ("node2") ─ veth ┤ node 10.128.0.1 on the pod veths, 192.168.100.1 on ext0
//	client 192.168.100.10 ── veth ────┘ (routes 10.10.12.0/24 and 192.168.200.0/24 to the node)
//
// No OVS is involved: pods reach the node directly, which is enough to prove the NAT behaviour. pod-b is
// marked as running on node2 so that Local traffic policies have a remote endpoint to leave out.
type topology struct {
	node, podA, podB, client string
}

const (
	nodeIP     = "192.168.100.1"
	clientIP   = "192.168.100.10"
	podAIP     = "10.128.0.2"
	podBIP     = "10.128.2.2"
	podGateway = "10.128.0.1"
	lbIP       = "10.10.12.208"
	externalIP = "192.168.200.30"
	// firewalledLB is a LoadBalancer IP whose Service allows only 10.0.0.0/8 (loadBalancerSourceRanges).
	firewalledLB = "10.10.12.215"
)

func newTopology(t *testing.T) *topology {
	t.Helper()
	ovsnode.RequireRoot(t)
	tp := &topology{
		node:   ovsnode.NewNetNS(t, "pkn"),
		podA:   ovsnode.NewNetNS(t, "pka"),
		podB:   ovsnode.NewNetNS(t, "pkb"),
		client: ovsnode.NewNetNS(t, "pkc"),
	}
	ip := func(ns string, args ...string) { ovsnode.MustIP(t, ns, args...) }
	if _, err := ovsnode.RunIn(tp.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ ns, veth, addr, prefix string }{
		{tp.podA, "vpa", podAIP, "/23"}, {tp.podB, "vpb", podBIP, "/23"},
	} {
		ip(tp.node, "link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		ip(tp.node, "addr", "add", podGateway+"/32", "dev", p.veth)
		ip(tp.node, "link", "set", p.veth, "up")
		ip(tp.node, "route", "add", p.addr+"/32", "dev", p.veth)
		ip(p.ns, "addr", "add", p.addr+p.prefix, "dev", "eth0")
		ip(p.ns, "link", "set", "eth0", "up")
		ip(p.ns, "route", "add", podGateway+"/32", "dev", "eth0")
		ip(p.ns, "route", "add", "default", "via", podGateway)
	}
	// The service network is routed like tun0 routes it on a real node, so that the node's own
	// connections to ClusterIPs have a route before DNAT.
	ip(tp.node, "route", "add", "172.30.0.0/16", "dev", "vpa")
	ip(tp.node, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", tp.client)
	ip(tp.node, "addr", "add", nodeIP+"/24", "dev", "ext0")
	ip(tp.node, "link", "set", "ext0", "up")
	ip(tp.client, "addr", "add", clientIP+"/24", "dev", "eth0")
	ip(tp.client, "link", "set", "eth0", "up")
	ip(tp.client, "route", "add", "10.10.12.0/24", "via", nodeIP)
	ip(tp.client, "route", "add", "192.168.200.0/24", "via", nodeIP)
	return tp
}

// inNetNS runs fn on a thread that has entered the named namespace; sockets created there stay in it.
// The thread is never returned to the pool: it exits with the goroutine.
func inNetNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(ovsnode.NetNSPath(ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("failed to enter %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// serve starts a TCP and a UDP echo-who server on port in a namespace: each answers "<name> <peer>" so
// that the client learns which endpoint answered and what source address the endpoint saw.
func serve(t *testing.T, ns, name string, port int) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := inNetNS(ns, func() error {
		var err error
		if ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("failed to listen in %s: %v", ns, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
			c.Close()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", name, from)), from)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
}

// reply is what a server answered: its name and the source address it saw.
type reply struct {
	server string
	peer   netip.Addr
}

// dial connects from a namespace, over TCP or UDP, and returns the answer.
func dial(ns, network, addr string) (reply, error) {
	var line string
	err := inNetNS(ns, func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp4" {
			if _, err := c.Write([]byte("who\n")); err != nil {
				return err
			}
		}
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		return reply{}, err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return reply{}, fmt.Errorf("unexpected answer %q", line)
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return reply{}, err
	}
	return reply{server: f[0], peer: ap.Addr()}, nil
}

// mustDial dials and fails the test on error.
func mustDial(t *testing.T, ns, network, addr string) reply {
	t.Helper()
	r, err := dial(ns, network, addr)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", network, addr, ns, err)
	}
	return r
}

// packetServices are the Services of the packet test, endpoints on port 8080 of pod-a (node1) and pod-b
// (node2):
//   - both: ClusterIP 172.30.0.10:80 and NodePort 30080 over TCP and UDP, endpoints a and b.
//   - sticky: ClusterIP 172.30.0.11:80, ClientIP affinity, endpoints a and b.
//   - seed: the seed's LoadBalancer 10.10.12.208:8080 (ClusterIP 172.30.153.87, NodePort 31826), endpoint b.
//   - local: NodePort 30090 and ExternalIP 192.168.200.30:80 with externalTrafficPolicy Local, endpoints a and b.
//   - empty: ClusterIP 172.30.0.13:80 and NodePort 30099, no endpoints.
//   - hairpin: ClusterIP 172.30.0.14:80, endpoint a only.
//   - firewalled: LoadBalancer 10.10.12.215:80 open to 10.0.0.0/8 only, endpoint b.
func packetServices() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	ab := []rendertest.Endpoint{{IP: podAIP, Node: "node1"}, {IP: podBIP, Node: "node2"}}
	both := rendertest.Service("test", "both", "172.30.0.10", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080},
			{Name: "udp", Protocol: corev1.ProtocolUDP, Port: 80, NodePort: 30080},
		}
	})
	bothSlice := rendertest.Slice("test", "both", "tcp", corev1.ProtocolTCP, 8080, ab...)
	bothSlice.Ports = append(bothSlice.Ports, discoveryv1.EndpointPort{Name: ptr.To("udp"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](8080)})
	sticky := rendertest.Service("test", "sticky", "172.30.0.11", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	})
	seed, _ := rendertest.Seed()
	local := rendertest.Service("test", "local", "172.30.0.12", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30090
		s.Spec.ExternalIPs = []string{externalIP}
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	empty := rendertest.Service("test", "empty", "172.30.0.13", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30099
	})
	hairpin := rendertest.Service("test", "hairpin", "172.30.0.14")
	firewalled := rendertest.Service("test", "firewalled", "172.30.0.15", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30015
		s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: firewalledLB}}
	})
	return []*corev1.Service{both, sticky, seed, local, empty, hairpin, firewalled}, []*discoveryv1.EndpointSlice{
		rendertest.Slice("test", "firewalled", "http", corev1.ProtocolTCP, 8080, rendertest.Endpoint{IP: podBIP, Node: "node2"}),
		bothSlice,
		rendertest.Slice("test", "sticky", "http", corev1.ProtocolTCP, 8080, ab...),
		rendertest.Slice("almighty", "almighty5", "web", corev1.ProtocolTCP, 8080, rendertest.Endpoint{IP: podBIP, Node: "node2"}),
		rendertest.Slice("test", "local", "http", corev1.ProtocolTCP, 8080, ab...),
		rendertest.Slice("test", "hairpin", "http", corev1.ProtocolTCP, 8080, rendertest.Endpoint{IP: podAIP, Node: "node1"}),
	}
}

// programPacketServices renders the packet test's Services for a node of the given datapath and syncs them
// into the topology's node namespace.
func programPacketServices(t *testing.T, tp *topology, datapath model.DatapathType, opts nftables.Options) {
	t.Helper()
	svcs, slices := packetServices()
	node := rendertest.Node(func(n *model.ServiceNode) { n.Datapath = datapath })
	set, err := model.BuildServices(model.ServiceInput{Node: node, Services: svcs, EndpointSlices: slices})
	if err != nil || len(set.Skipped) > 0 {
		t.Fatalf("BuildServices: %v %v", err, set.Skipped)
	}
	s, err := NewSyncer(Options{NetNSPath: ovsnode.NetNSPath(tp.node)})
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	mustSync(t, s, nftables.NewRenderer(opts).Render(set))
}

// TestPacketsThroughServices sends real TCP and UDP through the programmed table, userspace-datapath
// rendering (the one these machines run), with per-endpoint chains, with InlineEndpoints and with
// EndpointMap.
// Integration test: needs root.
func TestPacketsThroughServices(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts nftables.Options
	}{{"endpoint chains", nftables.Options{}}, {"inline endpoints", nftables.Options{InlineEndpoints: true}},
		{"endpoint map", nftables.Options{EndpointMap: true}}} {
		t.Run(mode.name, func(t *testing.T) { checkPacketsThroughServices(t, mode.opts) })
	}
}

func checkPacketsThroughServices(t *testing.T, opts nftables.Options) {
	tp := newTopology(t)
	serve(t, tp.podA, "pod-a", 8080)
	serve(t, tp.podB, "pod-b", 8080)
	serve(t, tp.client, "outside", 9000)
	programPacketServices(t, tp, model.DatapathNetdev, opts)
	node := netip.MustParseAddr(nodeIP)
	gateway := netip.MustParseAddr(podGateway)
	client := netip.MustParseAddr(clientIP)

	t.Run("ClusterIP from a pod reaches both endpoints", func(t *testing.T) {
		seen := map[string]int{}
		for range 40 {
			r := mustDial(t, tp.podA, "tcp4", "172.30.0.10:80")
			seen[r.server]++
			// Userspace datapath: every DNATed connection from a pod is masqueraded.
			if r.peer != gateway {
				t.Fatalf("endpoint saw %s, want the node's address %s (masquerade)", r.peer, gateway)
			}
		}
		if seen["pod-a"] == 0 || seen["pod-b"] == 0 {
			t.Fatalf("40 connections did not reach both endpoints: %v", seen)
		}
	})
	t.Run("ClusterIP over UDP, replies un-NATed by conntrack", func(t *testing.T) {
		seen := map[string]int{}
		for range 40 {
			// A connected UDP socket only accepts the reply if it comes from 172.30.0.10:80.
			seen[mustDial(t, tp.podA, "udp4", "172.30.0.10:80").server]++
		}
		if seen["pod-a"] == 0 || seen["pod-b"] == 0 {
			t.Fatalf("40 datagrams did not reach both endpoints: %v", seen)
		}
	})
	t.Run("ClusterIP from the node itself", func(t *testing.T) {
		seen := map[string]int{}
		for range 40 {
			seen[mustDial(t, tp.node, "tcp4", "172.30.0.10:80").server]++
		}
		if seen["pod-a"] == 0 || seen["pod-b"] == 0 {
			t.Fatalf("40 connections did not reach both endpoints: %v", seen)
		}
	})
	t.Run("session affinity sticks", func(t *testing.T) {
		first := mustDial(t, tp.podA, "tcp4", "172.30.0.11:80").server
		for range 20 {
			if got := mustDial(t, tp.podA, "tcp4", "172.30.0.11:80").server; got != first {
				t.Fatalf("affinity broken: got %s after %s", got, first)
			}
		}
		// Another client is balanced independently but sticks too.
		second := mustDial(t, tp.node, "tcp4", "172.30.0.11:80").server
		for range 10 {
			if got := mustDial(t, tp.node, "tcp4", "172.30.0.11:80").server; got != second {
				t.Fatalf("affinity broken for the node: got %s after %s", got, second)
			}
		}
	})
	t.Run("NodePort from an external client", func(t *testing.T) {
		seen := map[string]int{}
		for range 40 {
			r := mustDial(t, tp.client, "tcp4", nodeIP+":30080")
			seen[r.server]++
			if r.peer == client {
				t.Fatalf("Cluster policy NodePort kept the client address %s: want masquerade", r.peer)
			}
		}
		if seen["pod-a"] == 0 || seen["pod-b"] == 0 {
			t.Fatalf("40 connections did not reach both endpoints: %v", seen)
		}
		if r := mustDial(t, tp.client, "udp4", nodeIP+":30080"); r.server == "" {
			t.Fatalf("no UDP answer on the NodePort")
		}
	})
	t.Run("the seed's LoadBalancer IP from an external client", func(t *testing.T) {
		r := mustDial(t, tp.client, "tcp4", lbIP+":8080")
		if r.server != "pod-b" || r.peer != gateway {
			t.Fatalf("got %+v, want pod-b seeing the node's address %s (SNAT to the node)", r, gateway)
		}
		out, err := ovsnode.RunIn(tp.node, "conntrack", "-L", "-p", "tcp", "--orig-dst", lbIP)
		if err != nil || !strings.Contains(out, "dst="+lbIP) || !strings.Contains(out, "src="+podBIP) || !strings.Contains(out, "dst="+podGateway) {
			t.Fatalf("no conntrack entry DNATing %s to %s and masquerading to %s: %v\n%s", lbIP, podBIP, podGateway, err, out)
		}
	})
	t.Run("externalTrafficPolicy Local keeps the client address and the local endpoint", func(t *testing.T) {
		for _, addr := range []string{nodeIP + ":30090", externalIP + ":80"} {
			for range 20 {
				r := mustDial(t, tp.client, "tcp4", addr)
				if r.server != "pod-a" || r.peer != client {
					t.Fatalf("%s: got %+v, want pod-a (the local endpoint) seeing the client %s", addr, r, client)
				}
			}
		}
		// Pods are short-circuited to all endpoints.
		seen := map[string]int{}
		for range 40 {
			seen[mustDial(t, tp.podA, "tcp4", externalIP+":80").server]++
		}
		if seen["pod-a"] == 0 || seen["pod-b"] == 0 {
			t.Fatalf("pod traffic to a Local service's external IP did not reach both endpoints: %v", seen)
		}
	})
	t.Run("no endpoints: connection refused at once", func(t *testing.T) {
		for _, c := range []struct{ ns, addr string }{
			{tp.podA, "172.30.0.13:80"}, {tp.node, "172.30.0.13:80"}, {tp.client, nodeIP + ":30099"},
		} {
			start := time.Now()
			_, err := dial(c.ns, "tcp4", c.addr)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("%s from %s: got %v, want connection refused", c.addr, c.ns, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("%s from %s: refusal took %v", c.addr, c.ns, d)
			}
		}
	})
	t.Run("loadBalancerSourceRanges", func(t *testing.T) {
		if r := mustDial(t, tp.podA, "tcp4", firewalledLB+":80"); r.server != "pod-b" {
			t.Fatalf("a source inside the ranges got %+v, want pod-b", r)
		}
		if r, err := dial(tp.client, "tcp4", firewalledLB+":80"); err == nil {
			t.Fatalf("a source outside the ranges got through: %+v", r)
		}
		// NodePorts are not subject to the ranges, as in kube-proxy.
		if r := mustDial(t, tp.client, "tcp4", nodeIP+":30015"); r.server != "pod-b" {
			t.Fatalf("NodePort of the firewalled Service: got %+v, want pod-b", r)
		}
	})
	t.Run("hairpin", func(t *testing.T) {
		r := mustDial(t, tp.podA, "tcp4", "172.30.0.14:80")
		if r.server != "pod-a" || r.peer != gateway {
			t.Fatalf("got %+v, want pod-a answering itself through the node's address %s", r, gateway)
		}
	})
	t.Run("pod traffic leaving the cluster comes from the node IP", func(t *testing.T) {
		r := mustDial(t, tp.podA, "tcp4", clientIP+":9000")
		if r.peer != node {
			t.Fatalf("the outside server saw %s, want the node IP %s", r.peer, node)
		}
		// Traffic inside the cluster is not masqueraded.
		if r := mustDial(t, tp.podA, "tcp4", podBIP+":8080"); r.peer != netip.MustParseAddr(podAIP) {
			t.Fatalf("pod-to-pod traffic was NATed: pod-b saw %s", r.peer)
		}
	})
}

// TestPacketsKernelDatapathRendering checks the other masquerade strategy: with the kernel datapath a pod's
// ClusterIP connection keeps its source (OVS un-NATs the replies there), while off-cluster clients are still
// masqueraded. InlineEndpoints and EndpointMap are asked for and must be ignored: hairpin needs the endpoint
// chains there.
// Integration test: needs root.
func TestPacketsKernelDatapathRendering(t *testing.T) {
	tp := newTopology(t)
	serve(t, tp.podA, "pod-a", 8080)
	serve(t, tp.podB, "pod-b", 8080)
	programPacketServices(t, tp, model.DatapathSystem, nftables.Options{InlineEndpoints: true, EndpointMap: true})
	reachedB := false
	for range 40 {
		r := mustDial(t, tp.podA, "tcp4", "172.30.0.10:80")
		if r.server != "pod-b" {
			continue
		}
		reachedB = true
		if r.peer != netip.MustParseAddr(podAIP) {
			t.Fatalf("pod-b saw %s, want the client pod %s (no masquerade on the kernel datapath)", r.peer, podAIP)
		}
	}
	if !reachedB {
		t.Fatalf("40 connections never reached pod-b")
	}
	if r := mustDial(t, tp.client, "tcp4", nodeIP+":30080"); r.peer == netip.MustParseAddr(clientIP) {
		t.Fatalf("NodePort kept the client address with Cluster policy")
	}
}

// TestPacketsEndpointMapChanges moves endpoints with Options.EndpointMap and checks both the traffic and
// what the partial sync sent: an endpoint replaced by another is one element deleted and one added (no
// rule, no chain), an endpoint count change rewrites the one DNAT rule. Integration test: needs root.
func TestPacketsEndpointMapChanges(t *testing.T) {
	tp := newTopology(t)
	serve(t, tp.podA, "pod-a", 8080)
	serve(t, tp.podB, "pod-b", 8080)
	svcs, eps := packetServices()
	set, err := model.BuildServices(model.ServiceInput{Node: rendertest.Node(), Services: svcs, EndpointSlices: eps})
	if err != nil || len(set.Skipped) > 0 {
		t.Fatalf("BuildServices: %v %v", err, set.Skipped)
	}
	s, err := NewSyncer(Options{NetNSPath: ovsnode.NetNSPath(tp.node)})
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rr := nftables.NewRenderer(nftables.Options{EndpointMap: true})
	mustSync(t, s, rr.RenderGrouped(set))
	port := func(name string) *model.ServicePort {
		for i := range set.Services {
			if set.Services[i].Name == name {
				return &set.Services[i].Ports[0]
			}
		}
		t.Fatalf("no Service %s", name)
		return nil
	}
	if r := mustDial(t, tp.podB, "tcp4", "172.30.0.14:80"); r.server != "pod-a" {
		t.Fatalf("before the change: got %+v, want pod-a", r)
	}

	hp := port("hairpin")
	hp.Endpoints = slices.Clone(hp.Endpoints)
	hp.Endpoints[0].Addr, hp.Endpoints[0].NodeName = netip.MustParseAddr(podBIP), "node2"
	res := mustSync(t, s, rr.RenderGrouped(set))
	if res.Full || res.RulesWritten != 0 || res.ChainsWritten != 0 || res.ElementsAdded != 1 || res.ElementsDeleted != 1 {
		t.Fatalf("endpoint replaced: got %+v, want a partial sync of one element deleted and one added, no rule", res)
	}
	requireSameTable(t, tp.node, rr.RenderGrouped(set))
	for range 10 {
		if r := mustDial(t, tp.podA, "tcp4", "172.30.0.14:80"); r.server != "pod-b" {
			t.Fatalf("after replacing the endpoint: got %+v, want pod-b", r)
		}
	}

	both := port("both")
	both.Endpoints = both.Endpoints[:1]
	res = mustSync(t, s, rr.RenderGrouped(set))
	if res.Full || res.RulesWritten == 0 || res.ChainsWritten != 1 {
		t.Fatalf("endpoint count changed: got %+v, want the one policy chain rewritten", res)
	}
	want := both.Endpoints[0].Addr
	for range 20 {
		r := mustDial(t, tp.podA, "tcp4", "172.30.0.10:80")
		if (r.server == "pod-a") != (want == netip.MustParseAddr(podAIP)) {
			t.Fatalf("after dropping an endpoint: got %+v, want only %s", r, want)
		}
	}
}
