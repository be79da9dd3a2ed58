package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/cli/nodeaccess"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// TraceRequest names a packet the way a person would.
type TraceRequest struct {
	// From is the sender: "pod/NAME", "NAMESPACE/NAME" (a Pod), "node/NAME" (a node's host network), or an
	// IP address (a pod's, a node's, or a client outside the cluster).
	From string `json:"from"`
	// To is the destination: "svc/NAME[:PORT]", "NAMESPACE/NAME[:PORT]" (a Service, else a Pod),
	// "pod/NAME:PORT", or "IP:PORT" (a ClusterIP, LoadBalancer IP, ExternalIP, NodePort, pod or anything).
	// PORT is a number or, for a Service, a port name.
	To string `json:"to"`
	// Namespace resolves names given without one; "default" when empty.
	Namespace string `json:"namespace,omitempty"`
	// Proto is tcp (default) or udp.
	Proto string `json:"proto,omitempty"`
	// SrcPort is the source port; DefaultTraceSrcPort when 0.
	SrcPort uint16 `json:"srcPort,omitempty"`
	// SrcIP overrides the source address while keeping the sender's port and MAC: a spoofed packet.
	SrcIP string `json:"srcIP,omitempty"`
	// Node is the node a client outside the cluster reaches (required for such a client).
	Node string `json:"node,omitempty"`
	// Endpoint makes the Service's load balancing pick this endpoint (IP:PORT) when it is a candidate.
	Endpoint string `json:"endpoint,omitempty"`
	// Bridge is the integration bridge; br0 when empty.
	Bridge string `json:"bridge,omitempty"`
}

// DefaultTraceSrcPort is the source port of a traced packet when none is given.
const DefaultTraceSrcPort = 40000

// Step kinds of a TraceStep.
const (
	StepSource   = "source"
	StepOVS      = "ovs"
	StepNFTables = "nftables"
	StepRoute    = "route"
	StepVXLAN    = "vxlan"
	StepDeliver  = "deliver"
	StepHost     = "host"
	StepEgress   = "egress"
	StepDrop     = "drop"
	StepError    = "error"
)

// Verdicts of a TraceResult.
const (
	VerdictDelivered   = "delivered"
	VerdictDropped     = "dropped"
	VerdictToHost      = "delivered-to-host"
	VerdictLeftCluster = "left-cluster"
	VerdictIncomplete  = "incomplete"
)

// TraceResult is the packet's walk, step by step.
type TraceResult struct {
	// Request is the request as given.
	Request TraceRequest `json:"request"`
	// Source and Destination say what From and To resolved to.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Packet is the first packet as the sender emits it.
	Packet TracePacket `json:"packet"`
	// Steps are the hops, numbered from 1.
	Steps []TraceStep `json:"steps"`
	// Verdict is delivered, dropped, delivered-to-host or left-cluster.
	Verdict string `json:"verdict"`
	// DeliveredTo names the receiver (a pod, a node's host) when the packet arrives.
	DeliveredTo string `json:"deliveredTo,omitempty"`
	// Drop says where and why the packet was dropped.
	Drop *TraceDrop `json:"drop,omitempty"`
	// Incomplete says why the walk stopped before the packet's fate was known (a node that could not be
	// read).
	Incomplete string `json:"incomplete,omitempty"`
	// Reply summarises the way back.
	Reply []string `json:"reply,omitempty"`
	// Warnings are things worth knowing that did not stop the packet.
	Warnings []string `json:"warnings,omitempty"`
}

// TracePacket is a packet's addresses at some point of the walk.
type TracePacket struct {
	Proto   string     `json:"proto"`
	Src     netip.Addr `json:"src"`
	Dst     netip.Addr `json:"dst"`
	SrcPort uint16     `json:"srcPort"`
	DstPort uint16     `json:"dstPort"`
}

// String prints the packet as "tcp 10.128.0.2:40000 -> 10.128.2.5:8080".
func (p TracePacket) String() string {
	return fmt.Sprintf("%s %s -> %s", p.Proto, netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
}

// TraceStep is one hop of the walk.
type TraceStep struct {
	N     int    `json:"n"`
	Node  string `json:"node,omitempty"`
	Kind  string `json:"kind"`
	Title string `json:"title"`
	// Lines are details in reading order.
	Lines []string `json:"lines,omitempty"`
	// Tables are the OVS tables crossed (ovs steps), with the flow that matched each.
	Tables []TraceTable `json:"tables,omitempty"`
	// NFT is the nftables walk (nftables steps).
	NFT *NFTResult `json:"nftables,omitempty"`
	// Raw is the tool output the step was read from (ofproto/trace, ip route get).
	Raw string `json:"raw,omitempty"`
}

// TraceTable is one OVS table lookup.
type TraceTable struct {
	Table     uint8    `json:"table"`
	TableName string   `json:"tableName"`
	Bridge    string   `json:"bridge"`
	Priority  int      `json:"priority"`
	Match     string   `json:"match"`
	Cookie    string   `json:"cookie,omitempty"`
	Owner     string   `json:"owner,omitempty"`
	Actions   []string `json:"actions"`
	NoMatch   bool     `json:"noMatch,omitempty"`
}

// TraceDrop says where a packet was dropped and why.
type TraceDrop struct {
	Node   string `json:"node"`
	Where  string `json:"where"`
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason"`
}

// cluster indexes the objects of a ClusterState for the walk.
type cluster struct {
	st           *ClusterState
	clusterCIDRs []netip.Prefix
	serviceNet   netip.Prefix
	vxlanPort    int
	nodes        []traceNode
}

// traceNode is a HostSubnet as the walk needs it.
type traceNode struct {
	name    string
	hostIP  netip.Addr
	subnet  netip.Prefix
	gateway netip.Addr
	hs      *v1alpha1.HostSubnet
}

func newCluster(st *ClusterState) (*cluster, error) {
	if st.ClusterNetwork == nil {
		return nil, errors.New("failed to trace: ClusterNetwork default does not exist")
	}
	c := &cluster{st: st, vxlanPort: int(st.ClusterNetwork.Spec.VXLANPort)}
	if c.vxlanPort == 0 {
		c.vxlanPort = model.DefaultVXLANPort
	}
	for _, e := range st.ClusterNetwork.Spec.ClusterNetworks {
		if p, err := netip.ParsePrefix(e.CIDR); err == nil {
			c.clusterCIDRs = append(c.clusterCIDRs, p)
		}
	}
	c.serviceNet, _ = netip.ParsePrefix(st.ClusterNetwork.Spec.ServiceNetwork)
	for i := range st.HostSubnets {
		hs := &st.HostSubnets[i]
		ip, err1 := netip.ParseAddr(hs.Spec.HostIP)
		sn, err2 := netip.ParsePrefix(hs.Spec.Subnet)
		if err1 != nil || err2 != nil {
			continue
		}
		c.nodes = append(c.nodes, traceNode{name: hs.Name, hostIP: ip, subnet: sn, gateway: sn.Addr().Next(), hs: hs})
	}
	return c, nil
}

func (c *cluster) node(name string) *traceNode {
	for i := range c.nodes {
		if c.nodes[i].name == name {
			return &c.nodes[i]
		}
	}
	return nil
}

func (c *cluster) nodeByHostIP(ip netip.Addr) *traceNode {
	for i := range c.nodes {
		if c.nodes[i].hostIP == ip {
			return &c.nodes[i]
		}
	}
	return nil
}

func (c *cluster) nodeBySubnet(ip netip.Addr) *traceNode {
	for i := range c.nodes {
		if c.nodes[i].subnet.Contains(ip) {
			return &c.nodes[i]
		}
	}
	return nil
}

func (c *cluster) inCluster(ip netip.Addr) bool {
	for _, p := range c.clusterCIDRs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (c *cluster) podByIP(ip netip.Addr) *corev1.Pod {
	for i := range c.st.Pods {
		p := &c.st.Pods[i]
		if p.Status.PodIP == ip.String() && !p.Spec.HostNetwork && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return p
		}
	}
	return nil
}

func (c *cluster) pod(ns, name string) *corev1.Pod {
	for i := range c.st.Pods {
		if p := &c.st.Pods[i]; p.Namespace == ns && p.Name == name {
			return p
		}
	}
	return nil
}

func (c *cluster) service(ns, name string) *corev1.Service {
	for i := range c.st.Services {
		if s := &c.st.Services[i]; s.Namespace == ns && s.Name == name {
			return s
		}
	}
	return nil
}

// podMTU is the pod MTU of a node: its agent's report, else the ClusterNetwork's mtu, else 0 (unknown).
func (c *cluster) podMTU(n *traceNode) int {
	if n != nil && n.hs.Status.Agent != nil && n.hs.Status.Agent.MTU > 0 {
		return int(n.hs.Status.Agent.MTU)
	}
	if m := c.st.ClusterNetwork.Spec.MTU; m != nil {
		return int(*m)
	}
	return 0
}

// endpointKind classifies a sender.
type senderKind int

const (
	senderPod senderKind = iota
	senderNode
	senderExternal
)

// sender is a resolved From.
type sender struct {
	kind  senderKind
	ip    netip.Addr
	node  *traceNode
	pod   *corev1.Pod
	label string
}

// receiver is a resolved To.
type receiver struct {
	ip      netip.Addr
	port    uint16
	label   string
	service *corev1.Service
}

// splitNamespaced splits "NS/NAME" or "NAME" (in defNS).
func splitNamespaced(s, defNS string) (string, string) {
	if ns, name, ok := strings.Cut(s, "/"); ok {
		return ns, name
	}
	return defNS, s
}

// resolveSender turns From into a sender.
func (c *cluster) resolveSender(from, ns, entryNode string) (*sender, error) {
	switch {
	case strings.HasPrefix(from, "node/"):
		n := c.node(strings.TrimPrefix(from, "node/"))
		if n == nil {
			return nil, fmt.Errorf("failed to resolve --from %s: no HostSubnet of that name", from)
		}
		return &sender{kind: senderNode, node: n, label: "node " + n.name + "'s host network"}, nil
	case strings.HasPrefix(from, "pod/") || (strings.Contains(from, "/") && !strings.Contains(from, ".")):
		pns, name := splitNamespaced(strings.TrimPrefix(from, "pod/"), ns)
		p := c.pod(pns, name)
		if p == nil {
			return nil, fmt.Errorf("failed to resolve --from %s: no Pod %s/%s", from, pns, name)
		}
		return c.podSender(p, from)
	}
	ip, err := netip.ParseAddr(from)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve --from %q: not pod/NAME, NAMESPACE/NAME, node/NAME or an IP address", from)
	}
	if p := c.podByIP(ip); p != nil {
		return c.podSender(p, from)
	}
	if n := c.nodeByHostIP(ip); n != nil {
		return &sender{kind: senderNode, node: n, ip: ip, label: "node " + n.name + "'s host network (" + ip.String() + ")"}, nil
	}
	for i := range c.nodes {
		if c.nodes[i].gateway == ip {
			n := &c.nodes[i]
			return &sender{kind: senderNode, node: n, ip: ip, label: "node " + n.name + "'s host network (tun0, " + ip.String() + ")"}, nil
		}
	}
	if n := c.nodeBySubnet(ip); n != nil {
		return &sender{kind: senderPod, node: n, ip: ip, label: fmt.Sprintf("%s (no Pod has it; in node %s's subnet)", ip, n.name)}, nil
	}
	if entryNode == "" {
		return nil, fmt.Errorf("failed to trace from %s: it is outside the cluster; say which node it reaches with --node", ip)
	}
	n := c.node(entryNode)
	if n == nil {
		return nil, fmt.Errorf("failed to resolve --node %s: no HostSubnet of that name", entryNode)
	}
	return &sender{kind: senderExternal, node: n, ip: ip, label: "client " + ip.String() + " (outside the cluster)"}, nil
}

func (c *cluster) podSender(p *corev1.Pod, from string) (*sender, error) {
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil {
		return nil, fmt.Errorf("failed to trace from %s: Pod %s/%s has no IP yet", from, p.Namespace, p.Name)
	}
	if p.Spec.HostNetwork {
		n := c.node(p.Spec.NodeName)
		if n == nil {
			return nil, fmt.Errorf("failed to trace from %s: host-network Pod on %q, which has no HostSubnet", from, p.Spec.NodeName)
		}
		return &sender{kind: senderNode, node: n, label: fmt.Sprintf("pod %s/%s (host network of node %s)", p.Namespace, p.Name, n.name)}, nil
	}
	n := c.node(p.Spec.NodeName)
	if n == nil {
		n = c.nodeBySubnet(ip)
	}
	if n == nil {
		return nil, fmt.Errorf("failed to trace from %s: Pod %s/%s runs on %q, which has no HostSubnet", from, p.Namespace, p.Name, p.Spec.NodeName)
	}
	return &sender{kind: senderPod, node: n, pod: p, ip: ip, label: fmt.Sprintf("pod %s/%s (%s) on node %s", p.Namespace, p.Name, ip, n.name)}, nil
}

// resolveReceiver turns To into a destination address and port; external says whether the sender is
// outside the cluster (a Service is then reached on its LoadBalancer IP, ExternalIP or NodePort).
func (c *cluster) resolveReceiver(to, ns string, proto model.L4Proto, src *sender) (*receiver, error) {
	target, port := to, ""
	if i := strings.LastIndex(to, ":"); i >= 0 && strings.Count(to, ":") == 1 {
		target, port = to[:i], to[i+1:]
	}
	if ip, err := netip.ParseAddr(target); err == nil {
		if port == "" {
			return nil, fmt.Errorf("failed to resolve --to %s: give a port, IP:PORT", to)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("failed to resolve --to %s: %q is not a port", to, port)
		}
		return &receiver{ip: ip, port: uint16(n), label: c.describeIP(ip, uint16(n), proto)}, nil
	}
	kind := ""
	switch {
	case strings.HasPrefix(target, "svc/"), strings.HasPrefix(target, "service/"):
		kind, target = "svc", target[strings.Index(target, "/")+1:]
	case strings.HasPrefix(target, "pod/"):
		kind, target = "pod", strings.TrimPrefix(target, "pod/")
	}
	tns, name := splitNamespaced(target, ns)
	svc := c.service(tns, name)
	pod := c.pod(tns, name)
	switch {
	case kind == "svc" && svc == nil:
		return nil, fmt.Errorf("failed to resolve --to %s: no Service %s/%s", to, tns, name)
	case kind == "pod" && pod == nil:
		return nil, fmt.Errorf("failed to resolve --to %s: no Pod %s/%s", to, tns, name)
	case kind == "" && svc != nil && pod != nil:
		return nil, fmt.Errorf("failed to resolve --to %s: both a Service and a Pod have that name; write svc/%s or pod/%s", to, name, name)
	case kind == "" && svc == nil && pod == nil:
		return nil, fmt.Errorf("failed to resolve --to %s: no Service or Pod %s/%s", to, tns, name)
	}
	if pod != nil && kind != "svc" && svc == nil {
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil {
			return nil, fmt.Errorf("failed to resolve --to %s: Pod %s/%s has no IP yet", to, tns, name)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("failed to resolve --to %s: give the pod's port as pod/NAME:PORT", to)
		}
		return &receiver{ip: ip, port: uint16(n), label: fmt.Sprintf("pod %s/%s (%s:%d) on node %s", tns, name, ip, n, pod.Spec.NodeName)}, nil
	}
	return c.serviceReceiver(svc, port, proto, src)
}

// serviceReceiver picks the Service address a sender uses: its ClusterIP from inside the cluster; from
// outside, its first LoadBalancer IP, else its first ExternalIP, else its NodePort on the entry node.
func (c *cluster) serviceReceiver(svc *corev1.Service, port string, proto model.L4Proto, src *sender) (*receiver, error) {
	key := svc.Namespace + "/" + svc.Name
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		pp, _ := parseProto(strings.ToLower(string(p.Protocol)))
		if p.Protocol == "" {
			pp = model.L4ProtoTCP
		}
		if pp != proto {
			continue
		}
		if port == "" || p.Name == port || strconv.Itoa(int(p.Port)) == port {
			if sp != nil && port == "" {
				return nil, fmt.Errorf("failed to resolve Service %s: it has several %s ports; name one as svc/%s:PORT", key, proto, svc.Name)
			}
			sp = p
		}
	}
	if sp == nil {
		var names []string
		for _, p := range svc.Spec.Ports {
			names = append(names, fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol))
		}
		return nil, fmt.Errorf("failed to resolve Service %s: no %s port %q (ports: %s)", key, proto, port, orNone(strings.Join(names, ", ")))
	}
	portName := sp.Name
	if portName == "" {
		portName = strconv.Itoa(int(sp.Port))
	}
	if src.kind != senderExternal {
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil {
			return nil, fmt.Errorf("failed to resolve Service %s: no ClusterIP (headless?)", key)
		}
		return &receiver{ip: ip, port: uint16(sp.Port), service: svc,
			label: fmt.Sprintf("Service %s port %s, ClusterIP %s:%d", key, portName, ip, sp.Port)}, nil
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(ing.IP); err == nil && ip.Is4() {
			return &receiver{ip: ip, port: uint16(sp.Port), service: svc,
				label: fmt.Sprintf("Service %s port %s, LoadBalancer IP %s:%d", key, portName, ip, sp.Port)}, nil
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		if ip, err := netip.ParseAddr(s); err == nil && ip.Is4() {
			return &receiver{ip: ip, port: uint16(sp.Port), service: svc,
				label: fmt.Sprintf("Service %s port %s, ExternalIP %s:%d", key, portName, ip, sp.Port)}, nil
		}
	}
	if sp.NodePort != 0 {
		return &receiver{ip: src.node.hostIP, port: uint16(sp.NodePort), service: svc,
			label: fmt.Sprintf("Service %s port %s, NodePort %s:%d on node %s", key, portName, src.node.hostIP, sp.NodePort, src.node.name)}, nil
	}
	return nil, fmt.Errorf("failed to resolve Service %s: a client outside the cluster cannot reach it (no LoadBalancer IP, ExternalIP or NodePort)", key)
}

// describeIP says what an address is in the cluster.
func (c *cluster) describeIP(ip netip.Addr, port uint16, proto model.L4Proto) string {
	ap := netip.AddrPortFrom(ip, port).String()
	for i := range c.st.Services {
		s := &c.st.Services[i]
		key := s.Namespace + "/" + s.Name
		for _, sp := range s.Spec.Ports {
			switch {
			case s.Spec.ClusterIP == ip.String() && uint16(sp.Port) == port:
				return fmt.Sprintf("Service %s port %s, ClusterIP %s", key, orNone(sp.Name), ap)
			case slices.Contains(s.Spec.ExternalIPs, ip.String()) && uint16(sp.Port) == port:
				return fmt.Sprintf("Service %s port %s, ExternalIP %s", key, orNone(sp.Name), ap)
			case sp.NodePort != 0 && uint16(sp.NodePort) == port && c.nodeByHostIP(ip) != nil:
				return fmt.Sprintf("Service %s port %s, NodePort %s", key, orNone(sp.Name), ap)
			}
			for _, ing := range s.Status.LoadBalancer.Ingress {
				if ing.IP == ip.String() && uint16(sp.Port) == port {
					return fmt.Sprintf("Service %s port %s, LoadBalancer IP %s", key, orNone(sp.Name), ap)
				}
			}
		}
	}
	if p := c.podByIP(ip); p != nil {
		return fmt.Sprintf("pod %s/%s (%s) on node %s", p.Namespace, p.Name, ap, p.Spec.NodeName)
	}
	if n := c.nodeByHostIP(ip); n != nil {
		return fmt.Sprintf("node %s (%s)", n.name, ap)
	}
	for _, n := range c.nodes {
		if n.gateway == ip {
			return fmt.Sprintf("node %s's gateway tun0 (%s)", n.name, ap)
		}
	}
	if n := c.nodeBySubnet(ip); n != nil {
		return fmt.Sprintf("%s (no Pod has it; in node %s's subnet)", ap, n.name)
	}
	if c.serviceNet.Contains(ip) {
		return fmt.Sprintf("%s (in the service network; no Service has it)", ap)
	}
	return ap + " (outside the cluster)"
}

// Trace walks a packet through the live cluster: st holds the API objects (LoadLiveState), access runs
// ofproto/trace, flow dumps, nft listings and route lookups on the nodes. The walk stops at delivery, at a
// drop, when the packet leaves the cluster, or after maxTraceHops node traversals.
func Trace(ctx context.Context, req TraceRequest, st *ClusterState, access nodeaccess.Interface) (*TraceResult, error) {
	c, err := newCluster(st)
	if err != nil {
		return nil, err
	}
	if req.Namespace == "" {
		req.Namespace = corev1.NamespaceDefault
	}
	if req.Bridge == "" {
		req.Bridge = openflow.BridgeName
	}
	if req.SrcPort == 0 {
		req.SrcPort = DefaultTraceSrcPort
	}
	proto := model.L4ProtoTCP
	switch strings.ToLower(req.Proto) {
	case "", "tcp":
	case "udp":
		proto = model.L4ProtoUDP
	default:
		return nil, fmt.Errorf("failed to trace: --proto %q: use tcp or udp", req.Proto)
	}
	src, err := c.resolveSender(req.From, req.Namespace, req.Node)
	if err != nil {
		return nil, err
	}
	dst, err := c.resolveReceiver(req.To, req.Namespace, proto, src)
	if err != nil {
		return nil, err
	}
	w := &walker{ctx: ctx, req: req, c: c, access: access, proto: proto,
		res:      &TraceResult{Request: req, Source: src.label, Destination: dst.label},
		rulesets: map[string]*nftables.Ruleset{}, ports: map[string]map[int]netip.Addr{}}
	if req.Endpoint != "" {
		ep, err := netip.ParseAddrPort(req.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("failed to parse --endpoint %q: want IP:PORT", req.Endpoint)
		}
		w.prefer = ep
	}
	srcIP := src.ip
	if req.SrcIP != "" {
		ip, err := netip.ParseAddr(req.SrcIP)
		if err != nil {
			return nil, fmt.Errorf("failed to parse --src-ip %q: %w", req.SrcIP, err)
		}
		srcIP = ip
	}
	if !srcIP.IsValid() { // a node's host network: the source the node's routing would choose
		srcIP = w.hostSource(src.node, dst.ip)
	}
	pkt := TracePacket{Proto: proto.String(), Src: srcIP, Dst: dst.ip, SrcPort: req.SrcPort, DstPort: dst.port}
	w.res.Packet = pkt
	w.client = pkt
	if src.kind == senderExternal {
		w.res.Source += ", entering at node " + src.node.name
	}
	if err := w.walk(src, pkt); err != nil {
		return nil, err
	}
	w.summarizeReply()
	return w.res, nil
}

// StepKinds lists the kinds of the steps in order, for tests that assert the hops of a walk.
func (r *TraceResult) StepKinds() []string {
	out := make([]string, 0, len(r.Steps))
	for _, s := range r.Steps {
		out = append(out, s.Kind)
	}
	return out
}

// OVSTables lists, for each OVS step in order, the br0 tables the packet crossed, for tests that assert the
// hops of a walk.
func (r *TraceResult) OVSTables() [][]int {
	var out [][]int
	for _, s := range r.Steps {
		if s.Kind != StepOVS {
			continue
		}
		ts := []int{}
		for _, t := range s.Tables {
			if t.TableName != "" {
				ts = append(ts, int(t.Table))
			}
		}
		out = append(out, ts)
	}
	return out
}

// Text returns the trace as vxflowctl prints it.
func (r *TraceResult) Text() string {
	var b strings.Builder
	WriteTrace(&b, r, false)
	return b.String()
}

// maxTraceHops bounds the node traversals of one walk (a loop would otherwise never end).
const maxTraceHops = 8

// walker holds the state of one walk.
type walker struct {
	ctx    context.Context
	req    TraceRequest
	c      *cluster
	access nodeaccess.Interface
	proto  model.L4Proto
	prefer netip.AddrPort
	res    *TraceResult
	// client is the packet as the sender emitted it; origin the node it started on.
	client TracePacket
	origin *traceNode
	// natted records the NAT done on the way: the original destination and the masquerade, for the reply.
	dnatFrom netip.AddrPort
	dnatNode *traceNode
	masqNode *traceNode
	masqFrom netip.Addr
	// final is the packet as it arrives, finalNode where.
	final     TracePacket
	finalNode *traceNode
	// rulesets and ports cache per-node lookups.
	rulesets map[string]*nftables.Ruleset
	ports    map[string]map[int]netip.Addr
}

func (w *walker) step(s TraceStep) *TraceStep {
	s.N = len(w.res.Steps) + 1
	w.res.Steps = append(w.res.Steps, s)
	return &w.res.Steps[len(w.res.Steps)-1]
}

func (w *walker) warn(format string, args ...any) {
	w.res.Warnings = append(w.res.Warnings, fmt.Sprintf(format, args...))
}

// position is where the packet is: entering br0 on a port, or in a node's host network stack.
type position struct {
	node    *traceNode
	inPort  int    // br0 ofport the packet enters by; 0: the host network stack
	from    string // for the host: "tun0", "underlay" or "local"
	tunSrc  netip.Addr
	vni     uint32
	srcMAC  string
	podDesc string
}

func (w *walker) walk(src *sender, pkt TracePacket) error {
	w.origin = src.node
	var pos position
	switch src.kind {
	case senderPod:
		port, err := w.podPort(src.node, src.ip)
		if err != nil {
			w.incomplete(src.node.name, err)
			return nil
		}
		mac := model.PodMAC(src.ip).String()
		s := w.step(TraceStep{Node: src.node.name, Kind: StepSource, Title: fmt.Sprintf("%s sends %s", src.label, pkt)})
		if port == 0 {
			s.Lines = append(s.Lines, fmt.Sprintf("no br0 port of node %s sends from %s: the pod is not attached (or the agent has not programmed it yet)", src.node.name, src.ip))
			w.dropped(src.node.name, "br0 table 20 "+openflow.TableName(20), "", "the sender has no port on br0")
			return nil
		}
		s.Lines = append(s.Lines, fmt.Sprintf("eth0 MAC %s, br0 port %d on node %s", mac, port, src.node.name))
		if w.req.SrcIP != "" {
			s.Lines = append(s.Lines, fmt.Sprintf("source address forced to %s (spoofed: the pod's own is %s)", pkt.Src, src.ip))
		}
		pos = position{node: src.node, inPort: port, srcMAC: mac}
	case senderNode:
		w.step(TraceStep{Node: src.node.name, Kind: StepSource, Title: fmt.Sprintf("%s sends %s", src.label, pkt)})
		pos = position{node: src.node, from: "local"}
	case senderExternal:
		w.step(TraceStep{Node: src.node.name, Kind: StepSource, Title: fmt.Sprintf("%s sends %s", src.label, pkt),
			Lines: []string{fmt.Sprintf("it arrives on node %s's underlay (%s), as the network routes %s to that node", src.node.name, src.node.hostIP, pkt.Dst)}})
		pos = position{node: src.node, from: "underlay"}
	}
	for hops := 0; hops < maxTraceHops; hops++ {
		var next *position
		var err error
		if pos.inPort != 0 {
			next, pkt, err = w.ovs(pos, pkt)
		} else {
			next, pkt, err = w.host(pos, pkt)
		}
		if err != nil {
			w.incomplete(pos.node.name, err)
			return nil
		}
		if next == nil {
			return nil
		}
		pos = *next
	}
	w.dropped(pos.node.name, "", "", fmt.Sprintf("the walk crossed %d nodes without arriving: a forwarding loop?", maxTraceHops))
	return nil
}

// incomplete ends a walk that could not read a node's state (its agent or OVS is down, the access has no
// way to reach it): the steps so far stand, and the result says where the walk stopped and why.
func (w *walker) incomplete(node string, err error) {
	w.res.Verdict, w.res.Incomplete = VerdictIncomplete, err.Error()
	w.step(TraceStep{Node: node, Kind: StepError, Title: "could not follow the packet on node " + node, Lines: []string{err.Error()}})
}

func (w *walker) dropped(node, where, rule, reason string) {
	w.res.Verdict = VerdictDropped
	w.res.Drop = &TraceDrop{Node: node, Where: where, Rule: rule, Reason: reason}
	w.step(TraceStep{Node: node, Kind: StepDrop, Title: "dropped at " + strings.TrimSpace(node+" "+where), Lines: dropLines(rule, reason)})
}

func dropLines(rule, reason string) []string {
	var l []string
	if rule != "" {
		l = append(l, "by: "+rule)
	}
	return append(l, "why: "+reason)
}

// ofFlow writes the packet in ovs-ofctl flow syntax for ofproto/trace.
func (w *walker) ofFlow(pos position, pkt TracePacket) string {
	parts := []string{}
	if pos.inPort == openflow.VXLANOFPort {
		parts = append(parts, "tun_src="+pos.tunSrc.String(), "tun_dst="+pos.node.hostIP.String(), fmt.Sprintf("tun_id=%#x", pos.vni))
	}
	parts = append(parts, fmt.Sprintf("in_port=%d", pos.inPort), pkt.Proto)
	if pos.srcMAC != "" {
		parts = append(parts, "dl_src="+pos.srcMAC)
	}
	if w.c.inCluster(pkt.Dst) {
		parts = append(parts, "dl_dst="+model.PodMAC(pkt.Dst).String())
	}
	// ofproto/trace wants the protocol's own port fields (udp_dst); tp_dst is refused for UDP.
	parts = append(parts, "nw_src="+pkt.Src.String(), "nw_dst="+pkt.Dst.String(), "nw_ttl=64",
		fmt.Sprintf("%s_src=%d", pkt.Proto, pkt.SrcPort), fmt.Sprintf("%s_dst=%d", pkt.Proto, pkt.DstPort))
	return strings.Join(parts, ",")
}

// ovs traces the packet through br0 on pos.node and decides where it goes next.
func (w *walker) ovs(pos position, pkt TracePacket) (*position, TracePacket, error) {
	node := pos.node
	req := nodeaccess.TraceRequest{Bridge: w.req.Bridge, Flow: w.ofFlow(pos, pkt)}
	if node.hs.Status.Agent != nil && node.hs.Status.Agent.DatapathType == string(model.DatapathSystem) {
		// The kernel datapath's pipeline starts with ct(); a new connection resumes as trk,new, a packet back
		// from the host after DNAT as trk,new too (OVS sees it for the first time).
		req.CTNext = []string{"trk,new"}
	}
	out, err := w.access.OFProtoTrace(w.ctx, node.name, req)
	if err != nil {
		return nil, pkt, fmt.Errorf("failed to run ofproto/trace on node %s: %w", node.name, err)
	}
	tr, err := ParseOFTrace(out)
	if err != nil {
		return nil, pkt, fmt.Errorf("failed to read ofproto/trace of node %s: %w", node.name, err)
	}
	title := fmt.Sprintf("node %s %s, in_port %d (%s): %s", node.name, w.req.Bridge, pos.inPort, portName(pos.inPort), pkt)
	s := w.step(TraceStep{Node: node.name, Kind: StepOVS, Title: title, Raw: out})
	for _, h := range tr.Hops(w.req.Bridge) {
		s.Tables = append(s.Tables, w.traceTable(h))
	}
	o := tr.Outcome(w.req.Bridge, openflow.VXLANOFPort)
	if o.Warning != "" {
		w.warn("node %s: %s", node.name, o.Warning)
	}
	switch o.Kind {
	case OutcomeDrop:
		where, rule := "br0", ""
		if o.DropHop != nil {
			where = fmt.Sprintf("br0 table %d %s", o.DropHop.Table, openflow.TableName(o.DropHop.Table))
			if !o.DropHop.NoMatch {
				rule = strings.TrimSuffix(fmt.Sprintf("table=%d,priority=%d,%s", o.DropHop.Table, o.DropHop.Priority, o.DropHop.Match), ",") + " actions=drop"
				if c := o.DropHop.Cookie; c != 0 {
					rule = fmt.Sprintf("cookie=%#x,%s (%s)", c, rule, w.cookieOwner(c))
				}
			}
		}
		w.dropped(node.name, where, rule, w.ovsDropWhy(pos, pkt, o))
		return nil, pkt, nil
	case OutcomeTunnel:
		peer := w.c.nodeByHostIP(o.TunDst)
		lines := []string{fmt.Sprintf("tun_dst %s (node %s), VNI %d, UDP port %d", o.TunDst, nameOr(peer, "unknown"), o.VNI, w.c.vxlanPort)}
		mtu := w.c.podMTU(node)
		overhead := model.VXLANOverhead
		if e := o.Encap; e != nil {
			overhead = e.HeaderSize
			lines = append(lines, fmt.Sprintf("outer header %d bytes: Ethernet %s -> %s, IPv4 %s -> %s (DF=%v), UDP -> %d, VXLAN VNI %d",
				e.HeaderSize, e.SrcMAC, e.DstMAC, e.OuterSrc, e.OuterDst, e.DontFrag, e.UDPDstPort, e.VNI))
		}
		if mtu > 0 {
			lines = append(lines, fmt.Sprintf("inner MTU %d (node %s's pod MTU) + %d = outer packets up to %d bytes: the underlay MTU must be at least that",
				mtu, node.name, overhead, mtu+overhead))
		} else {
			lines = append(lines, fmt.Sprintf("VXLAN adds %d bytes: pod MTU = underlay MTU - %d (1450 on 1500)", overhead, overhead))
		}
		w.step(TraceStep{Node: node.name, Kind: StepVXLAN, Title: fmt.Sprintf("VXLAN from node %s (%s) to node %s (%s)",
			node.name, node.hostIP, nameOr(peer, "?"), o.TunDst), Lines: lines})
		if peer == nil {
			w.dropped(node.name, "underlay", "", fmt.Sprintf("%s is not the hostIP of any HostSubnet: no node decapsulates it", o.TunDst))
			return nil, pkt, nil
		}
		return &position{node: peer, inPort: openflow.VXLANOFPort, tunSrc: node.hostIP, vni: o.VNI, srcMAC: pos.srcMAC}, pkt, nil
	}
	switch {
	case o.Port == openflow.TunOFPort:
		return &position{node: node, from: "tun0"}, pkt, nil
	case o.Port >= model.FirstPodOFPort:
		ip, err := w.portIP(node, o.Port)
		if err != nil {
			return nil, pkt, err
		}
		who := fmt.Sprintf("port %d", o.Port)
		if p := w.c.podByIP(ip); p != nil {
			who = fmt.Sprintf("pod %s/%s (%s) on port %d", p.Namespace, p.Name, ip, o.Port)
		} else if ip.IsValid() {
			who = fmt.Sprintf("%s on port %d (no Pod object has that IP)", ip, o.Port)
		}
		lines := []string{fmt.Sprintf("L2 delivery: br0 outputs to port %d, the pod's veth; eth0 receives %s", o.Port, pkt)}
		if ip.IsValid() && ip != pkt.Dst {
			lines = append(lines, fmt.Sprintf("warning: port %d belongs to %s, not to the destination %s", o.Port, ip, pkt.Dst))
		}
		w.step(TraceStep{Node: node.name, Kind: StepDeliver, Title: "delivered to " + who + " on node " + node.name, Lines: lines})
		w.res.Verdict, w.res.DeliveredTo = VerdictDelivered, who
		w.final = pkt
		w.finalNode = node
		return nil, pkt, nil
	}
	w.dropped(node.name, "br0", "", fmt.Sprintf("br0 sent the packet to port %d, which vxflow does not use", o.Port))
	return nil, pkt, nil
}

// portName names the fixed ports of br0.
func portName(p int) string {
	switch p {
	case openflow.VXLANOFPort:
		return openflow.VXLANPortName
	case openflow.TunOFPort:
		return openflow.TunPortName
	}
	return "pod port"
}

func nameOr(n *traceNode, def string) string {
	if n == nil {
		return def
	}
	return n.name
}

// traceTable converts a hop for the result, naming the flow's owner.
func (w *walker) traceTable(h OFTraceHop) TraceTable {
	t := TraceTable{Table: h.Table, TableName: openflow.TableName(h.Table), Bridge: h.Bridge, Priority: h.Priority,
		Match: h.Match, NoMatch: h.NoMatch}
	if h.Bridge != w.req.Bridge {
		t.TableName = ""
	}
	if h.Cookie != 0 {
		t.Cookie = fmt.Sprintf("%#x", h.Cookie)
		t.Owner = w.cookieOwner(h.Cookie)
	}
	for _, a := range h.Actions {
		s := a.Action
		for _, n := range a.Notes {
			s += " (" + n + ")"
		}
		if strings.TrimSpace(s) != "" {
			t.Actions = append(t.Actions, strings.TrimSpace(s))
		}
	}
	return t
}

// cookieOwner names the object that owns a flow, from its cookie (see openflow's cookie layout).
func (w *walker) cookieOwner(c uint64) string {
	switch openflow.CookieCategoryOf(c) {
	case openflow.CategoryNode:
		if c == openflow.NodeCookie() {
			return "node"
		}
	case openflow.CategoryRemoteNode:
		for _, n := range w.c.nodes {
			if openflow.RemoteNodeCookie(n.subnet) == c {
				return "HostSubnet " + n.name
			}
		}
	case openflow.CategoryPod:
		for i := range w.c.st.Pods {
			p := &w.c.st.Pods[i]
			if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil && openflow.PodCookie(ip) == c {
				return "Pod " + p.Namespace + "/" + p.Name
			}
		}
	}
	if openflow.CookieRound(c) != openflow.PipelineRound {
		return "stale: " + openflow.DescribeCookie(c)
	}
	return openflow.DescribeCookie(c)
}

// ovsDropWhy explains a drop in br0 by the table that dropped it.
func (w *walker) ovsDropWhy(pos position, pkt TracePacket, o OFOutcome) string {
	if o.DropHop == nil {
		return o.DropReason
	}
	h := o.DropHop
	prefix := o.DropReason + ": "
	switch h.Table {
	case openflow.PodSpoofGuardTable.ID:
		if strings.Contains(h.Match, fmt.Sprintf("tp_dst=%d", w.c.vxlanPort)) {
			return prefix + "pods may not send VXLAN (UDP " + strconv.Itoa(w.c.vxlanPort) + "): only the node encapsulates"
		}
		return prefix + fmt.Sprintf("a pod may send only from its own IP and MAC (0a:58:<IPv4>); no flow lets port %d send from %s (MAC %s): spoofed, or the pod is not (yet) attached",
			pos.inPort, pkt.Src, orNone(pos.srcMAC))
	case openflow.VXLANIngressTable.ID:
		return prefix + fmt.Sprintf("VXLAN is accepted only from the hostIP of a known HostSubnet; %s is none", pos.tunSrc)
	case openflow.ClassifierTable.ID:
		switch pos.inPort {
		case openflow.VXLANOFPort:
			return prefix + "VXLAN must carry traffic from or to the cluster networks"
		case openflow.TunOFPort:
			return prefix + "the node's host sends into br0 only unicast IP and ARP from the gateway"
		}
		return prefix + "only IP and ARP are forwarded"
	case openflow.RoutingTable.ID:
		return prefix + fmt.Sprintf("no route in br0 for %s (multicast, or not IP)", pkt.Dst)
	case openflow.LocalIPTable.ID, openflow.LocalARPTable.ID:
		return prefix + fmt.Sprintf("no pod on node %s has %s: the pod is gone, or not attached yet", pos.node.name, pkt.Dst)
	case openflow.RemoteIPTable.ID, openflow.RemoteARPTable.ID:
		return prefix + fmt.Sprintf("no HostSubnet owns %s: no node to tunnel it to", pkt.Dst)
	case openflow.ServicesTable.ID:
		return prefix + fmt.Sprintf("%s is not in the service network %s", pkt.Dst, w.c.serviceNet)
	case openflow.IngressIsolationTable.ID:
		return prefix + "the destination pod's isolation does not admit the source"
	}
	if t, ok := openflow.LookupTable(h.Table); ok {
		return prefix + t.Purpose
	}
	return o.DropReason
}

var (
	flowInPortRE = regexp.MustCompile(`(?:^|,)in_port=(\d+)(?:,|$)`)
	flowNwSrcRE  = regexp.MustCompile(`(?:^|,)nw_src=([0-9.]+)(?:,|$)`)
)

// nodePorts reads a node's pod ports from its PodSpoofGuard flows: in_port=P with nw_src=IP.
func (w *walker) nodePorts(n *traceNode) (map[int]netip.Addr, error) {
	if m, ok := w.ports[n.name]; ok {
		return m, nil
	}
	out, err := w.access.DumpFlows(w.ctx, n.name, w.req.Bridge)
	if err != nil {
		return nil, fmt.Errorf("failed to dump the flows of node %s: %w", n.name, err)
	}
	m := map[int]netip.Addr{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, fmt.Sprintf("table=%d,", openflow.PodSpoofGuardTable.ID)) || !strings.Contains(line, " actions=") {
			continue
		}
		head, _, _ := strings.Cut(strings.TrimSpace(line), " actions=")
		head = strings.ReplaceAll(head, ", ", ",")
		pm, im := flowInPortRE.FindStringSubmatch(head), flowNwSrcRE.FindStringSubmatch(head)
		if pm == nil || im == nil {
			continue
		}
		p, _ := strconv.Atoi(pm[1])
		if ip, err := netip.ParseAddr(im[1]); err == nil {
			m[p] = ip
		}
	}
	w.ports[n.name] = m
	return m, nil
}

// podPort finds the br0 port a pod sends from; 0 when none.
func (w *walker) podPort(n *traceNode, ip netip.Addr) (int, error) {
	m, err := w.nodePorts(n)
	if err != nil {
		return 0, err
	}
	for p, a := range m {
		if a == ip {
			return p, nil
		}
	}
	return 0, nil
}

// portIP finds the pod address of a br0 port.
func (w *walker) portIP(n *traceNode, port int) (netip.Addr, error) {
	m, err := w.nodePorts(n)
	if err != nil {
		return netip.Addr{}, err
	}
	return m[port], nil
}

// hostSource is the source address a node's host network uses towards dst: tun0's (the gateway) for the
// pod and service networks, the node IP otherwise.
func (w *walker) hostSource(n *traceNode, dst netip.Addr) netip.Addr {
	if w.c.inCluster(dst) || w.c.serviceNet.Contains(dst) {
		return n.gateway
	}
	return n.hostIP
}

// route is the node's routing for dst, as vxflow sets it up: the cluster and service networks via tun0,
// the node's own addresses local, everything else out of the underlay.
func (w *walker) route(n *traceNode, dst netip.Addr) NFTRoute {
	switch {
	case dst == n.hostIP || dst == n.gateway:
		return NFTRoute{Local: true, OutIface: "lo"}
	case w.c.inCluster(dst) || w.c.serviceNet.Contains(dst):
		return NFTRoute{OutIface: openflow.TunPortName, OutAddr: n.gateway}
	}
	return NFTRoute{OutIface: "underlay", OutAddr: n.hostIP}
}

// ruleset returns a node's nftables table: the live listing when the node answers and it parses, else the
// table rendered from the API objects (noted on the step).
func (w *walker) ruleset(n *traceNode, s *TraceStep) *nftables.Ruleset {
	if rs, ok := w.rulesets[n.name]; ok {
		return rs
	}
	rendered := func() *nftables.Ruleset {
		opts := RenderOptions{Node: n.name}
		ns, err := RenderNode(w.c.st, opts)
		if err != nil {
			s.Lines = append(s.Lines, "could not render the table from the API objects either: "+err.Error())
			return &nftables.Ruleset{}
		}
		return ns.Ruleset
	}
	var rs *nftables.Ruleset
	text, err := w.access.NFTTable(w.ctx, n.name)
	if err == nil {
		rs, err = ParseNFTRuleset(text)
	}
	if err != nil {
		s.Lines = append(s.Lines, "live table unavailable ("+err.Error()+"); tracing the table rendered from the API objects")
		rs = rendered()
	} else if want := rendered(); len(want.Chains) > 0 {
		a, b := cloneForCompare(rs), cloneForCompare(want)
		if a != b {
			w.warn("node %s: the live nftables table differs from what the API objects render (the agent is behind, or someone edited it); the trace follows the live one", n.name)
		}
	}
	w.rulesets[n.name] = rs
	return rs
}

// cloneForCompare prints a ruleset with its sets, chains and elements sorted, for a comparison that ignores
// the order the kernel lists them in (hash order for elements, creation order for the sets and chains that
// later partial syncs added) and which endpoint map slots the agent's renderer happened to give each
// Service (they depend on the order Services appeared; canonicalEndpointMaps).
func cloneForCompare(rs *nftables.Ruleset) string {
	cp := &nftables.Ruleset{Chains: slices.Clone(rs.Chains)}
	for _, s := range rs.Sets {
		c := *s
		c.Elements = slices.Clone(s.Elements)
		cp.Sets = append(cp.Sets, &c)
	}
	slices.SortStableFunc(cp.Chains, func(a, b *nftables.Chain) int { return strings.Compare(a.Name, b.Name) })
	canonicalEndpointMaps(cp)
	normalise(cp)
	slices.SortStableFunc(cp.Sets, func(a, b *nftables.Set) int { return strings.Compare(a.Name, b.Name) })
	return cp.String()
}

// canonicalEndpointMaps rewrites rs (chains sorted by name) so that equal tables print equally whatever
// endpoint map slots they use: every `dnat ip to numgen ... map @m` becomes a lookup in one map,
// "endpoint-maps", at an offset numbered by chain order, holding the same targets in the same order; the
// original endpoint maps are dropped.
func canonicalEndpointMaps(rs *nftables.Ruleset) {
	maps := map[string]*nftables.Set{}
	var others []*nftables.Set
	for _, s := range rs.Sets {
		if s.Type == nftables.SetTypeEndpointMap {
			maps[s.Name] = s
		} else {
			others = append(others, s)
		}
	}
	if len(maps) == 0 {
		return
	}
	canon := &nftables.Set{Name: "endpoint-maps", Type: nftables.SetTypeEndpointMap}
	next := uint32(0)
	for i, c := range rs.Chains {
		var rules []nftables.Rule
		for _, r := range c.Rules {
			stmts := r.Stmts
			for j, st := range r.Stmts {
				d, ok := st.(nftables.DNATMap)
				if !ok {
					continue
				}
				targets := map[uint32]netip.AddrPort{}
				if m := maps[d.Map]; m != nil {
					for _, e := range m.Elements {
						if e.Index >= d.Offset && e.Index < d.Offset+d.Mod {
							targets[e.Index-d.Offset] = e.Target
						}
					}
				}
				for k := range d.Mod {
					if t, ok := targets[k]; ok {
						canon.Elements = append(canon.Elements, nftables.Element{Index: next + k, Target: t})
					}
				}
				stmts = slices.Clone(stmts)
				stmts[j] = nftables.DNATMap{Mod: d.Mod, Offset: next, Map: canon.Name}
				next += d.Mod
			}
			rules = append(rules, nftables.Rule{Stmts: stmts, Comment: r.Comment})
		}
		cc := *c
		cc.Rules = rules
		rs.Chains[i] = &cc
	}
	rs.Sets = append(others, canon)
}

// normalise sorts set elements (the kernel lists them in hash order) and treats no elements as nil.
func normalise(rs *nftables.Ruleset) {
	for _, s := range rs.Sets {
		slices.SortFunc(s.Elements, func(a, b nftables.Element) int {
			return strings.Compare(elementText(s, a), elementText(s, b))
		})
		if len(s.Elements) == 0 {
			s.Elements = nil
		}
	}
}

var (
	routeDevRE = regexp.MustCompile(`\bdev (\S+)`)
	routeSrcRE = regexp.MustCompile(`\bsrc (\S+)`)
)

// host follows the packet through a node's host network stack: nftables, then routing.
func (w *walker) host(pos position, pkt TracePacket) (*position, TracePacket, error) {
	n := pos.node
	s := w.step(TraceStep{Node: n.name, Kind: StepNFTables,
		Title: fmt.Sprintf("node %s host network, from %s: nftables table ip %s", n.name, hostEntry(pos.from), nftables.TableName)})
	rs := w.ruleset(n, s)
	np := NFTPacket{Src: pkt.Src, Dst: pkt.Dst, Proto: w.proto, SrcPort: pkt.SrcPort, DstPort: pkt.DstPort}
	res := TraceNFT(rs, np, NFTEnv{
		LocalAddrs:       []netip.Addr{n.hostIP, n.gateway},
		Route:            func(dst netip.Addr) NFTRoute { return w.route(n, dst) },
		PreferEndpoint:   w.prefer,
		LocallyGenerated: pos.from == "local",
	})
	s.NFT = res
	s.Lines = append(s.Lines, nftLines(res)...)
	if res.Verdict != NFTAccept {
		where, rule := "nftables", ""
		if e := res.DropEvent; e != nil {
			where, rule = fmt.Sprintf("nftables %s chain %s", e.Hook, e.Chain), e.Rule
			w.dropped(n.name, where, rule, e.What)
		} else {
			w.dropped(n.name, where, rule, res.Verdict)
		}
		return nil, pkt, nil
	}
	if res.DNAT.IsValid() {
		w.dnatFrom, w.dnatNode = netip.AddrPortFrom(pkt.Dst, pkt.DstPort), n
	}
	if res.Masquerade {
		w.masqNode, w.masqFrom = n, pkt.Src
	}
	after := TracePacket{Proto: pkt.Proto, Src: res.Packet.Src, Dst: res.Packet.Dst, SrcPort: pkt.SrcPort, DstPort: res.Packet.DstPort}

	rt := res.Route
	rs2 := w.step(TraceStep{Node: n.name, Kind: StepRoute, Title: fmt.Sprintf("node %s routing: %s", n.name, routeText(rt, after.Dst))})
	q := nodeaccess.RouteQuery{Dst: after.Dst.String()}
	if pos.from == "tun0" {
		q.Src, q.IIF = pkt.Src.String(), openflow.TunPortName
	}
	if out, err := w.access.RouteGet(w.ctx, n.name, q); err != nil {
		rs2.Lines = append(rs2.Lines, "live route lookup unavailable: "+err.Error())
	} else {
		out = strings.TrimSpace(out)
		rs2.Raw = out
		rs2.Lines = append(rs2.Lines, "ip route get "+strings.Join(routeArgs(q), " ")+": "+firstLine(out))
		if m := routeDevRE.FindStringSubmatch(out); m != nil && !rt.Local && rt.OutIface == openflow.TunPortName && m[1] != openflow.TunPortName {
			w.warn("node %s routes %s via %s, not tun0: the agent's routes are missing", n.name, after.Dst, m[1])
		}
		if m := routeSrcRE.FindStringSubmatch(out); m != nil && res.Masquerade && m[1] != rt.OutAddr.String() && rt.OutIface == openflow.TunPortName {
			rs2.Lines = append(rs2.Lines, fmt.Sprintf("note: the kernel would pick source %s", m[1]))
		}
	}
	if res.Masquerade {
		rs2.Lines = append(rs2.Lines, fmt.Sprintf("postrouting masquerades the source %s -> %s (%s's address), so the reply comes back through this node", pkt.Src, res.MasqAddr, rt.OutIface))
	}
	switch {
	case rt.Local:
		w.step(TraceStep{Node: n.name, Kind: StepHost, Title: fmt.Sprintf("delivered to node %s's host network (%s)", n.name, after.Dst)})
		w.res.Verdict, w.res.DeliveredTo = VerdictToHost, "node "+n.name+" host network"
		w.final, w.finalNode = after, n
		return nil, after, nil
	case rt.OutIface == openflow.TunPortName:
		rs2.Lines = append(rs2.Lines, fmt.Sprintf("back into br0 through tun0 (in_port %d)", openflow.TunOFPort))
		return &position{node: n, inPort: openflow.TunOFPort}, after, nil
	}
	w.step(TraceStep{Node: n.name, Kind: StepEgress, Title: fmt.Sprintf("leaves the cluster from node %s towards %s", n.name, after.Dst),
		Lines: []string{fmt.Sprintf("as %s", after)}})
	w.res.Verdict, w.res.DeliveredTo = VerdictLeftCluster, after.Dst.String()
	w.final, w.finalNode = after, n
	return nil, after, nil
}

func hostEntry(from string) string {
	switch from {
	case "tun0":
		return "br0 via tun0"
	case "underlay":
		return "the underlay"
	}
	return "a local process"
}

func routeText(rt NFTRoute, dst netip.Addr) string {
	switch {
	case rt.Local:
		return fmt.Sprintf("%s is this node's own address", dst)
	case rt.OutIface == openflow.TunPortName:
		return fmt.Sprintf("%s via tun0 (the route for the cluster and service networks)", dst)
	}
	return fmt.Sprintf("%s out of the underlay (not a cluster address)", dst)
}

func routeArgs(q nodeaccess.RouteQuery) []string {
	a := []string{q.Dst}
	if q.Src != "" {
		a = append(a, "from", q.Src)
	}
	if q.IIF != "" {
		a = append(a, "iif", q.IIF)
	}
	return a
}

// firstLine returns the first line of a tool's output; `ip -o` separates its continuation lines with "\".
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	l, _, _ = strings.Cut(l, "\\")
	return strings.Join(strings.Fields(l), " ")
}

// nftLines summarises an nftables walk: the rules that acted and the decisions.
func nftLines(r *NFTResult) []string {
	var l []string
	for _, e := range r.Events {
		line := fmt.Sprintf("%s %s: %s", e.Hook, e.Chain, e.Rule)
		if e.What != "" {
			line += "  => " + e.What
		}
		l = append(l, line)
	}
	if r.MapElement != "" {
		l = append(l, fmt.Sprintf("Service map %s element: %s", r.MapName, r.MapElement))
	}
	if len(r.Candidates) > 1 {
		var c []string
		for _, e := range r.Candidates {
			mark := ""
			if e.Chosen {
				mark = " (followed)"
			}
			c = append(c, fmt.Sprintf("%s p=%.2f%s", e.Endpoint, e.Probability, mark))
		}
		l = append(l, fmt.Sprintf("chain %s picks one of %d endpoints: %s", r.ServiceChain, len(r.Candidates), strings.Join(c, ", ")))
	}
	if r.DNAT.IsValid() {
		l = append(l, fmt.Sprintf("DNAT to %s", r.DNAT))
	} else if r.Verdict == NFTAccept {
		l = append(l, "no Service address: no DNAT")
	}
	switch {
	case r.Marked && r.Masquerade:
		l = append(l, "marked for masquerade, masqueraded")
	case r.Masquerade:
		l = append(l, "masqueraded")
	case r.Verdict == NFTAccept:
		l = append(l, "not masqueraded: the source address is kept")
	}
	return l
}

// summarizeReply describes the way back from what the walk did to the packet: who the receiver answers,
// where conntrack undoes the NAT, and how the answer reaches the sender.
func (w *walker) summarizeReply() {
	r := w.res
	switch r.Verdict {
	case VerdictDropped:
		r.Reply = []string{"none: the packet never arrives"}
		return
	case VerdictIncomplete, "":
		return
	}
	f := w.final
	back := TracePacket{Proto: f.Proto, Src: f.Dst, Dst: f.Src, SrcPort: f.DstPort, DstPort: f.SrcPort}
	lines := []string{fmt.Sprintf("the receiver answers %s", back)}
	clientEnd := fmt.Sprintf("%s", netip.AddrPortFrom(w.client.Src, w.client.SrcPort))
	toClient := func(n *traceNode) string {
		switch {
		case w.origin != nil && (w.client.Src == w.origin.hostIP || w.client.Src == w.origin.gateway):
			return fmt.Sprintf("it is for node %s itself: the local socket receives it", n.name)
		case w.origin != nil && w.origin.subnet.Contains(w.client.Src):
			return fmt.Sprintf("node %s routes it via tun0 into br0 (in_port 2, tables 0, 30, 70, 80) to the sender's port", n.name)
		}
		return fmt.Sprintf("node %s routes it out of its underlay to %s", n.name, w.client.Src)
	}
	switch {
	case r.Verdict == VerdictLeftCluster && w.masqNode != nil:
		lines = append(lines, fmt.Sprintf("it arrives at node %s's address %s; conntrack reverses the masquerade to %s, and %s",
			w.masqNode.name, w.final.Src, clientEnd, toClient(w.masqNode)))
	case w.masqNode != nil:
		m := w.masqNode
		if w.finalNode != nil && w.finalNode.name != m.name {
			lines = append(lines, fmt.Sprintf("%s is node %s's tun0 (the masquerade), so node %s's br0 tunnels it back: table 90 sets tun_dst %s, VXLAN to node %s",
				back.Dst, m.name, w.finalNode.name, m.hostIP, m.name))
		}
		lines = append(lines, fmt.Sprintf("node %s's br0 delivers it to tun0 (table 30, the gateway's address); its conntrack reverses the masquerade and the DNAT: the packet becomes %s -> %s",
			m.name, addrPortOr(w.dnatFrom, back.Src, back.SrcPort), clientEnd))
		lines = append(lines, toClient(m))
	case w.dnatNode != nil:
		lines = append(lines, fmt.Sprintf("not masqueraded: the answer goes straight to %s; on the kernel datapath br0's table 30 (ct_state=+rpl) un-NATs it inside OVS to come from %s",
			w.client.Src, w.dnatFrom))
	case w.finalNode != nil && w.origin != nil && w.finalNode.name != w.origin.name:
		lines = append(lines, fmt.Sprintf("no NAT: the mirror path, node %s br0 tables 0, 20, 30, 90 -> VXLAN to node %s (%s) -> tables 0, 10, 30, 70, 80 -> the sender's port",
			w.finalNode.name, w.origin.name, w.origin.hostIP))
	default:
		lines = append(lines, "no NAT: the mirror path on the same node (tables 0, 20, 30, 70, 80)")
	}
	r.Reply = lines
}

func addrPortOr(a netip.AddrPort, ip netip.Addr, port uint16) string {
	if a.IsValid() {
		return a.String()
	}
	return netip.AddrPortFrom(ip, port).String()
}
