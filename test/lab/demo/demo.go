package demo

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/test/lab"
)

// The seed (README): Service almighty/almighty5, port web 8080, LoadBalancer 10.10.12.208, backend on node2.
const (
	Namespace  = "almighty"
	Service    = "almighty5"
	BackendPod = "almighty5-0"
	ClientPod  = "client"
	LBIP       = "10.10.12.208"
	Port       = 8080
	EntryNode  = "node1"
	PodNode    = "node2"
)

// Run creates ClusterNetwork default, the seed's backend and a client pod, the seed Service, sends requests
// from the external client and from the pod on node1, and prints each hop.
func Run(ctx context.Context, l *lab.Lab, w io.Writer) error {
	p := printer{w: w}
	l.Out = indented{w} // the lab's own progress lines, under the demo's sections
	c, err := l.Client()
	if err != nil {
		return err
	}

	p.section("1. ClusterNetwork default and the nodes' subnets")
	if err := l.EnsureClusterNetwork(ctx); err != nil {
		return err
	}
	p.line("ClusterNetwork default: cluster %s (/%d per node), services %s, VXLAN UDP %d",
		lab.ClusterCIDR, lab.HostPrefix, lab.ServiceCIDR, lab.VXLANPort)
	subnets, err := l.WaitHostSubnets(ctx, 30*time.Second)
	if err != nil {
		return fmt.Errorf("failed to see HostSubnets (vxflow-controller: %s): %w", l.LogFile("controller"), err)
	}
	st, err := l.State()
	if err != nil {
		return err
	}
	if err := waitProgrammed(ctx, c, st.Nodes); err != nil {
		return fmt.Errorf("failed to see every node Programmed (agents' logs: %s): %w", l.LogFile("agent-node1"), err)
	}
	if err := l.LearnTunnelNeighbours(ctx); err != nil {
		return err
	}
	if subnets, err = l.WaitHostSubnets(ctx, 5*time.Second); err != nil {
		return err
	}
	for _, n := range st.Nodes {
		hs := subnets[n.Name]
		p.line("%-6s node IP %-15s  HostSubnet %-15s  tun0 %-12s %s", n.Name, n.IP, hs.Spec.Subnet, gateway(hs), programmed(hs))
	}

	p.section("2. Pods, created as a kubelet would (netns, CNI ADD through the node's agent, Pod status)")
	backend, err := l.CreatePod(ctx, lab.PodSpec{Namespace: Namespace, Name: BackendPod, Node: PodNode,
		Labels: map[string]string{"app": Service},
		Ports:  []corev1.ContainerPort{{Name: "web", ContainerPort: Port, Protocol: corev1.ProtocolTCP}}})
	if err != nil {
		return err
	}
	client1, err := l.CreatePod(ctx, lab.PodSpec{Namespace: "default", Name: ClientPod, Node: EntryNode,
		Labels: map[string]string{"app": ClientPod}})
	if err != nil {
		return err
	}

	p.section("3. The seed: Service almighty/almighty5, port web 8080, LoadBalancer " + LBIP)
	svc, err := l.CreateService(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: Service},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": Service},
			Ports:    []corev1.ServicePort{{Name: "web", Port: Port, TargetPort: intstr.FromString("web"), Protocol: corev1.ProtocolTCP}},
		},
	}, LBIP)
	if err != nil {
		return err
	}
	p.line("ClusterIP %s, NodePort %d, LoadBalancer ingress %s, endpoint %s:%d on %s",
		svc.Spec.ClusterIP, svc.Spec.Ports[0].NodePort, LBIP, backend.IP, Port, PodNode)
	if err := l.RouteExternal(ctx, LBIP+"/32", EntryNode); err != nil {
		return err
	}
	p.line("the external client routes %s via %s (%s), as a router announcing the LoadBalancer IP would", LBIP, EntryNode, lab.NodeIP(1))

	p.section("4. Requests")
	lbURL := fmt.Sprintf("http://%s:%d", LBIP, Port)
	for _, from := range []struct{ who, netns string }{
		{"external client 192.168.100.100", l.ExternalNetNS()},
		{"pod default/client on node1 " + client1.IP, client1.NetNS},
	} {
		// The agents program a new Service within their sync interval; until then node1 answers "network
		// unreachable" (it has no route for the LoadBalancer IP).
		start := time.Now()
		var body, seen string
		var err error
		for {
			if body, seen, err = request(ctx, from.netns, lbURL); err == nil || time.Since(start) > 30*time.Second {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			p.line("FAILED %s -> %s: %v", from.who, lbURL, err)
			continue
		}
		p.line("%s -> %s answered %q; the backend saw the client as %s (first answer after %s)",
			from.who, lbURL, body, seen, time.Since(start).Round(10*time.Millisecond))
	}

	entryGW := gateway(subnets[EntryNode])
	ext := l.ExternalNetNS()
	walked := false
	if _, err := os.Stat(filepath.Join(l.BinDir, "vxflowctl")); err == nil {
		p.section("5. The walk, as `vxflowctl trace` tells it from the live cluster")
		walked = true
		for _, args := range [][]string{
			{"--from", lab.ExternalIP.String(), "--to", fmt.Sprintf("%s:%d", LBIP, Port), "--node", EntryNode},
			{"--from", "default/" + ClientPod, "--to", fmt.Sprintf("%s:%d", LBIP, Port)},
		} {
			p.line("$ vxflowctl trace %s", strings.Join(args, " "))
			out, err := ctlTrace(ctx, l, args)
			p.block(out)
			if err != nil {
				p.line("(vxflowctl trace failed: %v)", err)
				walked = false
			}
		}
	}
	if !walked {
		p.section("5. The walk, read from the live state (external client -> " + LBIP + ":8080 -> pod on node2)")
		ownWalk(ctx, l, &p, subnets, backend)
	}

	p.section("6. What the packets really did (tcpdump on node2's underlay, MTU, conntrack on node1)")
	capture := captureVXLAN(ctx, l, PodNode, func() { _, _, _ = request(ctx, ext, lbURL) })
	p.hop("underlay", fmt.Sprintf("VXLAN (UDP %d) from node1 %s to node2 %s, as tcpdump on node2's ul0 saw it", lab.VXLANPort, lab.NodeIP(1), lab.NodeIP(2)),
		capture...)
	podMTU, _ := lab.LinkMTU(ctx, backend.NetNS, "eth0")
	ulMTU, _ := lab.LinkMTU(ctx, l.NetNS(PodNode), "ul0")
	p.hop("MTU", fmt.Sprintf("pods and tun0 use %d: %d + 50 bytes of VXLAN/UDP/IP/Ethernet = the underlay's %d", podMTU, podMTU, ulMTU))
	ct, _ := lab.RunIn(ctx, l.NetNS(EntryNode), "conntrack", "-L", "-p", "tcp", "-d", LBIP)
	p.hop("reply", fmt.Sprintf("the pod answers %s (node1's tun0), so the reply goes back over VXLAN to node1, whose conntrack "+
		"restores %s:%d as its source and sends it to the external client", entryGW, LBIP, Port), firstN(ct, 2)...)

	p.section("Explore")
	name := l.Name
	p.line("bin/vxflow-lab --name %s status                                 what runs where", name)
	p.line("bin/vxflow-lab --name %s kubectl get nodes,hostsubnets,pods -A -o wide", name)
	p.line("bin/vxflow-lab --name %s exec node1 -- ovs-ofctl -O OpenFlow13 dump-flows br0", name)
	p.line("bin/vxflow-lab --name %s exec node1 -- nft list table ip %s", name, nftables.TableName)
	p.line("bin/vxflow-lab --name %s exec ext -- curl -s %s/client", name, lbURL)
	p.line("bin/vxflow-lab --name %s exec client -- curl -s http://%s:%d/", name, svc.Spec.ClusterIP, Port)
	p.line("bin/vxflow-lab --name %s pod add web2 --node node3 -l app=%s -n %s   a second endpoint", name, Service, Namespace)
	p.line("bin/vxflow-lab --name %s exec node2 -- tcpdump -ni ul0 udp port %d", name, lab.VXLANPort)
	p.line("make demo-down                                                   remove everything (docs/lab.md)")
	return p.err
}

// ownWalk explains the seed's walk from the live nft, routing and OVS state, for when vxflowctl is missing.
func ownWalk(ctx context.Context, l *lab.Lab, p *printer, subnets map[string]vxflowv1alpha1.HostSubnet, backend *lab.Pod) {
	entryGW := gateway(subnets[EntryNode])
	ext := l.ExternalNetNS()
	route, _ := lab.RunIn(ctx, ext, "ip", "route", "get", LBIP)
	p.hop("external client", "routes to node1 over the underlay", firstLine(route))

	n1 := l.NodeOVS(EntryNode)
	ruleset, err := n1.Run(ctx, "nft", "list", "table", "ip", nftables.TableName)
	if err != nil {
		p.hop("node1 nftables", "no table ip "+nftables.TableName, err.Error())
	} else {
		p.hop("node1 nftables (prerouting)", fmt.Sprintf("DNAT %s:%d -> %s:%d and mark for masquerade", LBIP, Port, backend.IP, Port),
			grepLines(ruleset, LBIP, "dnat to "+backend.IP, "dnat ip to numgen", " : "+backend.IP+" . ", "ct status dnat")...)
	}
	r, _ := lab.RunIn(ctx, l.NetNS(EntryNode), "ip", "route", "get", backend.IP)
	tunMTU, _ := lab.LinkMTU(ctx, l.NetNS(EntryNode), "tun0")
	p.hop("node1 routing", fmt.Sprintf("the DNATed packet leaves through tun0 (MTU %d) into br0; postrouting masquerades it to tun0's %s", tunMTU, entryGW),
		firstLine(r))
	trace1, err := n1.Run(ctx, "ovs-appctl", "ofproto/trace", "br0",
		fmt.Sprintf("in_port=tun0,tcp,nw_src=%s,nw_dst=%s,tp_src=40000,tp_dst=%d", entryGW, backend.IP, Port))
	if err != nil {
		p.hop("node1 br0", "ofproto/trace failed", err.Error())
	} else {
		p.hop("node1 br0 (OpenFlow)", fmt.Sprintf("the remote subnet %s belongs to node2: set tun_dst=%s and send out vxlan0",
			subnets[PodNode].Spec.Subnet, lab.NodeIP(2)), traceLines(trace1, "set_field", "tunneling")...)
	}
	n2 := l.NodeOVS(PodNode)
	trace2, err := n2.Run(ctx, "ovs-appctl", "ofproto/trace", "br0",
		fmt.Sprintf("in_port=vxlan0,tun_src=%s,tun_dst=%s,tun_id=0,tcp,nw_src=%s,nw_dst=%s,tp_src=40000,tp_dst=%d",
			lab.NodeIP(1), lab.NodeIP(2), entryGW, backend.IP, Port))
	if err != nil {
		p.hop("node2 br0", "ofproto/trace failed", err.Error())
	} else {
		p.hop("node2 br0 (OpenFlow)", "accepted from a known node IP, delivered to the pod's port", traceLines(trace2, "output")...)
	}
}

// ctlTrace runs `vxflowctl trace` in the control plane's namespace with the admin's kubeconfig and the
// lab's node access file.
func ctlTrace(ctx context.Context, l *lab.Lab, args []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	argv := append([]string{"netns", "exec", l.ControlPlaneNetNS(), filepath.Join(l.BinDir, "vxflowctl"), "trace"}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = append(os.Environ(), l.ExecEnv()...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// request GETs url and url/client from netns: the answer and the client address the backend saw.
func request(ctx context.Context, netns, url string) (string, string, error) {
	body, err := lab.Get(ctx, netns, url+"/", 5*time.Second)
	if err != nil {
		return "", "", err
	}
	seen, err := lab.Get(ctx, netns, url+"/client", 5*time.Second)
	return body, seen, err
}

// captureVXLAN runs tcpdump on a node's underlay NIC while f sends traffic, and returns what it printed.
func captureVXLAN(ctx context.Context, l *lab.Lab, node string, f func()) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.NetNS(node),
		"tcpdump", "-i", "ul0", "-nn", "-l", "-c", "2", "udp", "port", fmt.Sprint(lab.VXLANPort))
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		return []string{"tcpdump: " + err.Error()}
	}
	time.Sleep(500 * time.Millisecond) // tcpdump needs a moment to open the socket
	f()
	_ = cmd.Wait()
	if out.Len() == 0 {
		return []string{"(tcpdump saw nothing)"}
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

func waitProgrammed(ctx context.Context, c client.Client, nodes []lab.NodeState) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var missing []string
		for _, n := range nodes {
			var hs vxflowv1alpha1.HostSubnet
			if err := c.Get(ctx, client.ObjectKey{Name: n.Name}, &hs); err != nil ||
				!meta.IsStatusConditionTrue(hs.Status.Conditions, vxflowv1alpha1.ConditionProgrammed) {
				missing = append(missing, n.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not Programmed after 60s: %s", strings.Join(missing, ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func gateway(hs vxflowv1alpha1.HostSubnet) string {
	p, err := netip.ParsePrefix(hs.Spec.Subnet)
	if err != nil {
		return "?"
	}
	return p.Addr().Next().String()
}

func programmed(hs vxflowv1alpha1.HostSubnet) string {
	c := meta.FindStatusCondition(hs.Status.Conditions, vxflowv1alpha1.ConditionProgrammed)
	if c == nil {
		return "(not programmed yet)"
	}
	s := fmt.Sprintf("Programmed=%s", c.Status)
	if a := hs.Status.Agent; a != nil {
		s += fmt.Sprintf(" (%d flows, %d nft rules, MTU %d, datapath %s)", a.Flows, a.NFTRules, a.MTU, a.DatapathType)
	}
	return s
}

// indented writes every line three spaces in.
type indented struct{ w io.Writer }

func (i indented) Write(b []byte) (int, error) {
	s := strings.TrimRight(string(b), "\n")
	if _, err := fmt.Fprintf(i.w, "   %s\n", strings.ReplaceAll(s, "\n", "\n   ")); err != nil {
		return 0, err
	}
	return len(b), nil
}

var (
	spaces    = regexp.MustCompile(`\s+`)
	tableLine = regexp.MustCompile(`^\s*\d+\. `)
)

// traceLines returns the tables an ofproto/trace walked through, the lines with any of the words and the
// datapath actions.
func traceLines(trace string, words ...string) []string {
	var out []string
	for _, line := range strings.Split(trace, "\n") {
		keep := tableLine.MatchString(line) || strings.HasPrefix(line, "Datapath actions")
		for _, w := range words {
			keep = keep || strings.Contains(line, w)
		}
		if keep && !strings.HasPrefix(line, "Final flow") {
			out = append(out, strings.TrimSpace(spaces.ReplaceAllString(line, " ")))
		}
	}
	return out
}

// grepLines returns the lines of text containing any of the words, whitespace-squeezed.
func grepLines(text string, words ...string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, strings.TrimSpace(spaces.ReplaceAllString(line, " ")))
				break
			}
		}
	}
	return out
}

func firstLine(s string) string {
	return strings.TrimSpace(strings.SplitN(strings.TrimSpace(s), "\n", 2)[0])
}

func firstN(s string, n int) []string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return lines
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, a ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, a...)
}

// block prints a tool's output indented.
func (p *printer) block(text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		p.printf("     %s\n", line)
	}
}

func (p *printer) section(title string)         { p.printf("\n== %s\n", title) }
func (p *printer) line(format string, a ...any) { p.printf("   "+format+"\n", a...) }
func (p *printer) hop(where, what string, evidence ...string) {
	p.printf("   %-28s %s\n", where, what)
	for _, e := range evidence {
		if e != "" {
			p.printf("   %-28s   | %s\n", "", e)
		}
	}
}
