//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/cli"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/test/lab"
)

// The seed: Service almighty/almighty5, port web 8080, LoadBalancer ingress 10.10.12.208, backed by a pod on
// node2, reached from outside through node1 and from a pod on node1.
const (
	seedNamespace = "almighty"
	seedService   = "almighty5"
	seedPod       = "almighty5-0"
	seedLBIP      = "10.10.12.208"
	seedPort      = 8080
	podMTU        = lab.UnderlayMTU - 50
)

// world is what the checks share; later checks use what earlier ones made and fail fast without it.
type world struct {
	l       *lab.Lab
	c       client.Client
	subnets map[string]vxflowv1alpha1.HostSubnet
	pods    map[string]*lab.Pod
	svcB    *corev1.Service
	seed    *corev1.Service
	outside string
}

func TestE2E(t *testing.T) {
	l := upLab(t)
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	w := &world{l: l, c: c, pods: map[string]*lab.Pod{}}
	ctx := context.Background()

	check(t, "controller allocates a HostSubnet per node from ClusterNetwork default", func(t *testing.T) {
		if err := l.EnsureClusterNetwork(ctx); err != nil {
			t.Fatal(err)
		}
		subnets, err := l.WaitHostSubnets(ctx, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cluster := netip.MustParsePrefix(lab.ClusterCIDR)
		for i := 1; i <= 3; i++ {
			hs := subnets[lab.NodeName(i)]
			p, err := netip.ParsePrefix(hs.Spec.Subnet)
			if err != nil || p.Bits() != lab.HostPrefix || !cluster.Contains(p.Addr()) {
				t.Errorf("HostSubnet %s subnet %q: want a /%d inside %s", hs.Name, hs.Spec.Subnet, lab.HostPrefix, cluster)
			}
			if hs.Spec.HostIP != lab.NodeIP(i).String() {
				t.Errorf("HostSubnet %s hostIP %s, want the node's InternalIP %s", hs.Name, hs.Spec.HostIP, lab.NodeIP(i))
			}
		}
		w.subnets = subnets
	})

	check(t, "agents program every node: Programmed, br0 flows, nft table", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			waitProgrammed(t, w, lab.NodeName(i))
			node := lab.NodeName(i)
			if n := flowCount(t, w, node); n == 0 {
				t.Errorf("%s: br0 has no flows", node)
			}
			if _, err := w.l.NodeOVS(node).Run(ctx, "nft", "list", "table", "ip", nftables.TableName); err != nil {
				t.Errorf("%s: no nft table ip %s: %v", node, nftables.TableName, err)
			}
		}
		if err := l.LearnTunnelNeighbours(ctx); err != nil {
			t.Fatal(err)
		}
	})

	check(t, "pods get an address of their node's subnet through the CNI plugin", func(t *testing.T) {
		specs := []lab.PodSpec{
			{Namespace: "default", Name: "a1", Node: "node1", Labels: map[string]string{"app": "a"}},
			{Namespace: "default", Name: "a2", Node: "node1", Labels: map[string]string{"app": "a"}},
			{Namespace: "default", Name: "b1", Node: "node2", Labels: map[string]string{"app": "b"}},
			{Namespace: "default", Name: "c1", Node: "node3", Labels: map[string]string{"app": "c"}},
			{Namespace: seedNamespace, Name: seedPod, Node: "node2", Labels: map[string]string{"app": seedService},
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: seedPort, Protocol: corev1.ProtocolTCP}}},
		}
		for _, s := range specs {
			p, err := l.CreatePod(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			w.pods[s.Name] = p
			subnet, err := netip.ParsePrefix(w.subnets[s.Node].Spec.Subnet)
			ip, perr := netip.ParseAddr(p.IP)
			if err != nil || perr != nil || !subnet.Contains(ip) || ip == subnet.Addr().Next() {
				t.Errorf("pod %s on %s got %s, want a pod address of %s", s.Name, s.Node, p.IP, w.subnets[s.Node].Spec.Subnet)
			}
			var pod corev1.Pod
			if err := w.c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, &pod); err != nil || pod.Status.PodIP != p.IP {
				t.Errorf("Pod %s/%s status.podIP %q, %v; want %s", s.Namespace, s.Name, pod.Status.PodIP, err, p.IP)
			}
			if mtu := linkMTU(t, p.NetNS, "eth0"); mtu != podMTU {
				t.Errorf("pod %s eth0 MTU %d, want %d (underlay %d - 50)", s.Name, mtu, podMTU, lab.UnderlayMTU)
			}
		}
	})

	check(t, "pod to pod TCP on the same node", func(t *testing.T) {
		expect(t, w.from("a1"), w.url("a2", ""), "a2")
		expect(t, w.from("a2"), w.url("a1", ""), "a1")
	})

	check(t, "pod to pod TCP across nodes", func(t *testing.T) {
		expect(t, w.from("a1"), w.url("b1", ""), "b1")
		expect(t, w.from("b1"), w.url("c1", ""), "c1")
		expect(t, w.from("c1"), w.url("a1", ""), "a1")
	})

	check(t, "pod to a ClusterIP whose endpoint is on another node", func(t *testing.T) {
		svc, err := l.CreateService(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "b"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "b"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		w.svcB = svc
		if !netip.MustParsePrefix(lab.ServiceCIDR).Contains(netip.MustParseAddr(svc.Spec.ClusterIP)) {
			t.Fatalf("ClusterIP %s is outside the service network %s", svc.Spec.ClusterIP, lab.ServiceCIDR)
		}
		expectEventually(t, w.from("a1"), "http://"+svc.Spec.ClusterIP+":80/", "b1", 20*time.Second)
		expect(t, w.from("c1"), "http://"+svc.Spec.ClusterIP+":80/", "b1")
	})

	check(t, "the seed: external client to LoadBalancer 10.10.12.208:8080 through node1, endpoint on node2", func(t *testing.T) {
		svc, err := l.CreateService(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: seedNamespace, Name: seedService},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app": seedService},
				Ports:    []corev1.ServicePort{{Name: "web", Port: seedPort, TargetPort: intstr.FromString("web"), Protocol: corev1.ProtocolTCP}},
			},
		}, seedLBIP)
		if err != nil {
			t.Fatal(err)
		}
		w.seed = svc
		if err := l.RouteExternal(ctx, seedLBIP+"/32", "node1"); err != nil {
			t.Fatal(err)
		}
		lbURL := fmt.Sprintf("http://%s:%d", seedLBIP, seedPort)
		expectEventually(t, l.ExternalNetNS(), lbURL+"/", seedPod, 20*time.Second)
		// Masqueraded on node1, so the reply comes back through node1's conntrack: the pod sees node1's tun0.
		gw := gateway(t, w, "node1")
		client := get(t, l.ExternalNetNS(), lbURL+"/client")
		if host := hostOf(client); host != gw {
			t.Errorf("the backend saw the external client as %s, want node1's tun0 address %s (masquerade)", client, gw)
		}
	})

	check(t, "the seed: pod on node1 to the LoadBalancer IP", func(t *testing.T) {
		expectEventually(t, w.from("a1"), fmt.Sprintf("http://%s:%d/", seedLBIP, seedPort), seedPod, 10*time.Second)
		if w.seed != nil {
			expect(t, w.from("a1"), fmt.Sprintf("http://%s:%d/", w.seed.Spec.ClusterIP, seedPort), seedPod)
		}
	})

	check(t, "vxflowctl trace walks the seed: DNAT on node1, VXLAN to node2, delivered", func(t *testing.T) {
		cfg, err := l.RESTConfig()
		if err != nil {
			t.Fatal(err)
		}
		cc, err := cli.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := cli.LoadLiveState(ctx, cc, cli.LiveOptions{Workloads: true})
		if err != nil {
			t.Fatal(err)
		}
		access, err := l.NodeAccess()
		if err != nil {
			t.Fatal(err)
		}
		res, err := cli.Trace(ctx, cli.TraceRequest{From: lab.ExternalIP.String(), To: fmt.Sprintf("%s:%d", seedLBIP, seedPort), Node: "node1"}, st, access)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{cli.StepSource, cli.StepNFTables, cli.StepRoute, cli.StepOVS, cli.StepVXLAN, cli.StepOVS, cli.StepDeliver}
		if got := res.StepKinds(); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("trace steps %v, want %v:\n%s", got, want, res.Text())
		}
		if res.Verdict != cli.VerdictDelivered || !strings.Contains(res.DeliveredTo, seedNamespace+"/"+seedPod) {
			t.Errorf("trace verdict %s to %q, want delivered to %s/%s:\n%s", res.Verdict, res.DeliveredTo, seedNamespace, seedPod, res.Text())
		}
		for _, s := range res.Steps {
			if s.Kind == cli.StepVXLAN && (s.Node != "node1" || !strings.Contains(strings.Join(s.Lines, " "), lab.NodeIP(2).String())) {
				t.Errorf("VXLAN step on %q says %q, want node1 tunnelling to node2 %s", s.Node, s.Lines, lab.NodeIP(2))
			}
		}
		for _, w := range res.Warnings {
			note("vxflowctl trace warned on a steady lab: %s", w)
		}
	})

	check(t, "external client to a NodePort, on the endpoint's node and on others", func(t *testing.T) {
		if w.seed == nil || len(w.seed.Spec.Ports) == 0 || w.seed.Spec.Ports[0].NodePort == 0 {
			t.Fatal("the seed Service has no NodePort (earlier check failed)")
		}
		np := w.seed.Spec.Ports[0].NodePort
		for i := 1; i <= 3; i++ {
			expectEventually(t, l.ExternalNetNS(), fmt.Sprintf("http://%s:%d/", lab.NodeIP(i), np), seedPod, 10*time.Second)
		}
	})

	check(t, "large transfers pass (pod MTU 1450 inside the 1500 underlay)", func(t *testing.T) {
		const n = 16 << 20
		for _, tc := range []struct{ from, url string }{
			{w.from("a1"), w.url("b1", "/bytes?n="+strconv.Itoa(n))},
			{w.from("b1"), w.url("a1", "/bytes?n="+strconv.Itoa(n))},
			{w.l.ExternalNetNS(), fmt.Sprintf("http://%s:%d/bytes?n=%d", seedLBIP, seedPort, n)},
		} {
			start := time.Now()
			got, err := getBytes(context.Background(), tc.from, tc.url, 60*time.Second)
			if err != nil || got != n {
				t.Errorf("%s from %s: %d bytes, %v; want %d", tc.url, tc.from, got, err, n)
				continue
			}
			note("16 MiB %s → %s: %.0f Mbit/s", tc.from, tc.url, float64(n*8)/time.Since(start).Seconds()/1e6)
		}
	})

	check(t, "pod traffic to an outside namespace is masqueraded to the node IP", func(t *testing.T) {
		url, err := l.StartExternalServer(ctx, "outside", 9000)
		if err != nil {
			t.Fatal(err)
		}
		w.outside = url
		for pod, node := range map[string]int{"a1": 1, "b1": 2, "c1": 3} {
			got := getEventually(t, w.from(pod), url+"/client", 10*time.Second)
			if host := hostOf(got); host != lab.NodeIP(node).String() {
				t.Errorf("the outside server saw %s's traffic from %s, want node%d's IP %s", pod, got, node, lab.NodeIP(node))
			}
		}
	})

	var added string
	check(t, "a node added later gets a subnet and connectivity", func(t *testing.T) {
		name, err := l.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		added = name
		subnets, err := l.WaitHostSubnets(ctx, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		w.subnets = subnets
		waitProgrammed(t, w, name)
		if err := l.LearnTunnelNeighbours(ctx); err != nil {
			t.Fatal(err)
		}
		p, err := l.CreatePod(ctx, lab.PodSpec{Namespace: "default", Name: "d1", Node: name, Labels: map[string]string{"app": "d"}})
		if err != nil {
			t.Fatal(err)
		}
		w.pods["d1"] = p
		expectEventually(t, w.from("d1"), w.url("b1", ""), "b1", 20*time.Second)
		expectEventually(t, w.from("a1"), w.url("d1", ""), "d1", 20*time.Second)
		if w.svcB != nil {
			expectEventually(t, w.from("d1"), "http://"+w.svcB.Spec.ClusterIP+":80/", "b1", 20*time.Second)
		}
	})

	check(t, "a node removed disappears from the other nodes' flows", func(t *testing.T) {
		if added == "" {
			t.Fatal("no node was added (earlier check failed)")
		}
		st, err := l.State()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := st.Node(added)
		for i := 1; i <= 3; i++ {
			if !strings.Contains(dumpFlows(t, w, lab.NodeName(i)), n.IP) {
				t.Fatalf("node%d's flows never mentioned %s's IP %s, so its removal proves nothing", i, added, n.IP)
			}
		}
		if err := l.RemoveNode(ctx, added); err != nil {
			t.Fatal(err)
		}
		delete(w.pods, "d1")
		start := time.Now()
		for i := 1; i <= 3; i++ {
			eventually(t, 30*time.Second, func() error {
				if strings.Contains(dumpFlows(t, w, lab.NodeName(i)), n.IP) {
					return fmt.Errorf("node%d's br0 still has flows for %s (%s)", i, added, n.IP)
				}
				return nil
			})
		}
		note("node removal reached the other nodes' flows in %s", time.Since(start).Round(10*time.Millisecond))
		eventually(t, 30*time.Second, func() error {
			var hs vxflowv1alpha1.HostSubnet
			if err := w.c.Get(ctx, client.ObjectKey{Name: added}, &hs); err == nil {
				return fmt.Errorf("HostSubnet %s still exists", added)
			}
			return nil
		})
	})

	check(t, "agent kill -9 and restart during a request loop loses no request", func(t *testing.T) {
		targets := []target{
			{w.from("a1"), w.url("b1", "")},
			{w.l.ExternalNetNS(), fmt.Sprintf("http://%s:%d/", seedLBIP, seedPort)},
		}
		if w.svcB != nil {
			targets = append(targets, target{w.from("a2"), "http://" + w.svcB.Spec.ClusterIP + ":80/"})
		}
		loop := startLoop(targets)
		time.Sleep(time.Second)
		old := map[string]int{}
		for _, node := range []string{"node1", "node2"} {
			old[node] = l.AgentPID(node)
			if old[node] == 0 {
				loop.stop()
				t.Fatalf("no agent runs on %s", node)
			}
			if err := l.KillAgent(node, syscall.SIGKILL); err != nil {
				loop.stop()
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second) // traffic keeps flowing with no agent at all
		restarted := time.Now()
		for _, node := range []string{"node1", "node2"} {
			if err := l.StartAgent(ctx, node); err != nil {
				loop.stop()
				t.Fatal(err)
			}
		}
		for _, node := range []string{"node1", "node2"} {
			if err := l.WaitAgentReady(ctx, node, 30*time.Second); err != nil {
				loop.stop()
				t.Fatal(err)
			}
		}
		note("agents restarted after kill -9: ready (/readyz) in %s", time.Since(restarted).Round(10*time.Millisecond))
		time.Sleep(2 * time.Second)
		ok, failed, errs := loop.stop()
		note("agent kill -9 + restart on node1 and node2: %d requests, %d failed", ok+failed, failed)
		if failed > 0 || ok < 30 {
			t.Errorf("%d requests succeeded, %d failed (want ≥30 and 0): %s", ok, failed, strings.Join(errs, "; "))
		}
		for node, pid := range old {
			if now := l.AgentPID(node); now == 0 || now == pid {
				t.Errorf("%s: agent PID %d after restart (was %d)", node, now, pid)
			}
		}
	})

	check(t, "an ovs-vswitchd restart is recovered (flows reprogrammed)", func(t *testing.T) {
		before := flowCount(t, w, "node2")
		start := time.Now()
		down, err := l.RestartVSwitchd(ctx, "node2")
		if err != nil {
			t.Fatal(err)
		}
		var traffic time.Duration
		eventually(t, 60*time.Second, func() error {
			_, err := lab.Get(ctx, w.from("a1"), w.url("b1", ""), time.Second)
			return err
		})
		traffic = time.Since(start)
		eventually(t, 60*time.Second, func() error {
			if n := flowCount(t, w, "node2"); n < before {
				return fmt.Errorf("node2 has %d flows, had %d before the restart", n, before)
			}
			return nil
		})
		note("ovs-vswitchd restart on node2: daemon down %s, a1→b1 back after %s, all %d flows back after %s",
			down.Round(time.Millisecond), traffic.Round(10*time.Millisecond), before, time.Since(start).Round(10*time.Millisecond))
		expect(t, w.l.ExternalNetNS(), fmt.Sprintf("http://%s:%d/", seedLBIP, seedPort), seedPod)
	})

	check(t, "flows deleted by hand are restored", func(t *testing.T) {
		node2IP := lab.NodeIP(2).String()
		matches := lab.FlowMatches(dumpFlows(t, w, "node1"), node2IP)
		if len(matches) == 0 {
			t.Fatalf("node1 has no flow mentioning node2 (%s)", node2IP)
		}
		o := w.l.NodeOVS("node1")
		for _, m := range matches {
			if _, err := o.Run(ctx, "ovs-ofctl", "-O", "OpenFlow13", "--strict", "del-flows", "br0", m); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if left := lab.FlowMatches(dumpFlows(t, w, "node1"), node2IP); len(left) == len(matches) {
			t.Fatalf("deleting %d flows by hand left all of them: %v", len(matches), left)
		}
		eventually(t, 30*time.Second, func() error {
			now := map[string]bool{}
			for _, m := range lab.FlowMatches(dumpFlows(t, w, "node1"), node2IP) {
				now[m] = true
			}
			for _, m := range matches {
				if !now[m] {
					return fmt.Errorf("flow %s not restored", m)
				}
			}
			return nil
		})
		note("%d flows to node2 deleted by hand on node1: restored in %s", len(matches), time.Since(start).Round(10*time.Millisecond))
		expect(t, w.from("a1"), w.url("b1", ""), "b1")
	})

	check(t, "the nft table deleted by hand is restored", func(t *testing.T) {
		o := w.l.NodeOVS("node1")
		if _, err := o.Run(ctx, "nft", "delete", "table", "ip", nftables.TableName); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		eventually(t, 30*time.Second, func() error {
			out, err := o.Run(ctx, "nft", "list", "table", "ip", nftables.TableName)
			if err != nil {
				return err
			}
			if !strings.Contains(out, seedLBIP) {
				return errors.New("the table is back but without the seed's LoadBalancer IP")
			}
			return nil
		})
		note("nft table deleted by hand on node1: restored in %s", time.Since(start).Round(10*time.Millisecond))
		expectEventually(t, w.l.ExternalNetNS(), fmt.Sprintf("http://%s:%d/", seedLBIP, seedPort), seedPod, 10*time.Second)
	})
}

// from returns a pod's namespace, failing the check when the pod was not created.
func (w *world) from(pod string) string {
	if p, ok := w.pods[pod]; ok {
		return p.NetNS
	}
	return "missing-pod-" + pod
}

// url returns http://<pod IP>:<port><path> for a pod the suite created.
func (w *world) url(pod, path string) string {
	if p, ok := w.pods[pod]; ok {
		return p.URL + path
	}
	return "http://missing-pod-" + pod + path
}

// waitProgrammed waits until a node's HostSubnet is Programmed (its agent applied flows, rules and routes).
func waitProgrammed(t *testing.T, w *world, node string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		var hs vxflowv1alpha1.HostSubnet
		if err := w.c.Get(context.Background(), client.ObjectKey{Name: node}, &hs); err != nil {
			return err
		}
		if cond := meta.FindStatusCondition(hs.Status.Conditions, vxflowv1alpha1.ConditionProgrammed); cond == nil || cond.Status != metav1.ConditionTrue {
			return fmt.Errorf("HostSubnet %s is not Programmed: %+v", node, cond)
		}
		return nil
	})
}

// gateway returns a node's tun0 address: the first address of its HostSubnet.
func gateway(t *testing.T, w *world, node string) string {
	t.Helper()
	p, err := netip.ParsePrefix(w.subnets[node].Spec.Subnet)
	if err != nil {
		t.Fatalf("no subnet for %s: %v", node, err)
	}
	return p.Addr().Next().String()
}

func dumpFlows(t *testing.T, w *world, node string) string {
	t.Helper()
	out, err := w.l.NodeOVS(node).Run(context.Background(), "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", "br0")
	if err != nil {
		t.Fatalf("failed to dump %s's flows: %v", node, err)
	}
	return out
}

func flowCount(t *testing.T, w *world, node string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(dumpFlows(t, w, node), "\n") {
		if strings.Contains(line, "actions=") {
			n++
		}
	}
	return n
}

func linkMTU(t *testing.T, netns, dev string) int {
	t.Helper()
	mtu, err := lab.LinkMTU(context.Background(), netns, dev)
	if err != nil {
		t.Errorf("%v", err)
	}
	return mtu
}

func hostOf(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		return hostport[:i]
	}
	return hostport
}

func get(t *testing.T, netns, url string) string {
	t.Helper()
	body, err := lab.Get(context.Background(), netns, url, 5*time.Second)
	if err != nil {
		t.Errorf("%v", err)
	}
	return body
}

func expect(t *testing.T, netns, url, want string) {
	t.Helper()
	if got := get(t, netns, url); got != want && got != "" {
		t.Errorf("GET %s from %s answered %q, want %q", url, netns, got, want)
	}
}

func getEventually(t *testing.T, netns, url string, timeout time.Duration) string {
	t.Helper()
	var body string
	eventually(t, timeout, func() error {
		var err error
		body, err = lab.Get(context.Background(), netns, url, 2*time.Second)
		return err
	})
	return body
}

func expectEventually(t *testing.T, netns, url, want string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		got, err := lab.Get(context.Background(), netns, url, 2*time.Second)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("GET %s from %s answered %q, want %q", url, netns, got, want)
		}
		return nil
	})
}

// eventually retries f until it succeeds, failing the check with f's last error after timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getBytes downloads url from netns and returns how many bytes arrived.
func getBytes(ctx context.Context, netns, url string, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := lab.HTTPClient(netns, timeout).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(io.Discard, resp.Body)
}

type target struct{ netns, url string }

// requestLoop sends one request per target every 50 ms, each on a new connection, and counts the outcomes.
type requestLoop struct {
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	ok, fail int
	errs     []string
}

func startLoop(targets []target) *requestLoop {
	r := &requestLoop{done: make(chan struct{})}
	for _, tg := range targets {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case <-r.done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				_, err := lab.Get(context.Background(), tg.netns, tg.url, 3*time.Second)
				r.mu.Lock()
				if err != nil {
					r.fail++
					if len(r.errs) < 5 {
						r.errs = append(r.errs, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), err))
					}
				} else {
					r.ok++
				}
				r.mu.Unlock()
			}
		}()
	}
	return r
}

func (r *requestLoop) stop() (ok, failed int, errs []string) {
	close(r.done)
	r.wg.Wait()
	return r.ok, r.fail, r.errs
}
