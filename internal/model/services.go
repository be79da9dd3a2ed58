package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// L4Proto is a transport protocol a Service port can use, numbered as in the IP header so that the nftables
// renderer and applier can use it as is.
type L4Proto uint8

const (
	// L4ProtoTCP is TCP (6).
	L4ProtoTCP L4Proto = 6
	// L4ProtoUDP is UDP (17).
	L4ProtoUDP L4Proto = 17
	// L4ProtoSCTP is SCTP (132).
	L4ProtoSCTP L4Proto = 132
)

// String returns the protocol's name as nft prints it ("tcp", "udp", "sctp").
func (p L4Proto) String() string {
	switch p {
	case L4ProtoTCP:
		return "tcp"
	case L4ProtoUDP:
		return "udp"
	case L4ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprintf("%d", uint8(p))
}

// DefaultMasqueradeMark is the packet mark bit that asks for masquerade in postrouting: OpenShift SDN's 0x1
// (kube-proxy with masqueradeBit 0), clear of kube-proxy's default 0x4000 and kubelet's 0x8000.
const DefaultMasqueradeMark = 0x1

// DefaultAffinityTimeout is Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const DefaultAffinityTimeout = 10800 * time.Second

// ServiceNode is what the Service NAT renderer needs to know about this node: facts the Service objects do
// not hold.
type ServiceNode struct {
	// Name is this node's name: endpoints whose nodeName equals it are local.
	Name string
	// IPs are the node's addresses on which NodePorts answer, the primary (underlay) address first.
	IPs []netip.Addr
	// ClusterCIDRs are the pod ranges: traffic from them is "from a pod", and traffic from them to
	// anywhere outside them is masqueraded to the node IP.
	ClusterCIDRs []netip.Prefix
	// ServiceNetwork is the ClusterIP range: traffic to an address in it that no Service owns is dropped.
	ServiceNetwork netip.Prefix
	// VXLANPort is the UDP port of the overlay: accepted and not tracked by conntrack.
	VXLANPort uint16
	// Datapath is br0's datapath type. On the userspace datapath (netdev) OVS cannot see the host's
	// conntrack, so every DNATed connection from a pod is masqueraded to make its replies come back
	// through tun0; on the kernel datapath OVS un-NATs them itself (design.md, "Replies and the datapath").
	Datapath DatapathType
	// MasqueradeMark is the packet mark bit that asks for masquerade in postrouting; 0 means
	// DefaultMasqueradeMark. It must be a single bit.
	MasqueradeMark uint32
}

// ServiceNodeFromView takes the Service NAT renderer's node facts from a validated NodeView; extraIPs are
// further node addresses on which NodePorts should answer.
func ServiceNodeFromView(v *NodeView, extraIPs ...netip.Addr) ServiceNode {
	cidrs := make([]netip.Prefix, len(v.ClusterNetworks))
	for i, c := range v.ClusterNetworks {
		cidrs[i] = c.CIDR
	}
	return ServiceNode{
		Name:           v.NodeName,
		IPs:            append([]netip.Addr{v.NodeIP}, extraIPs...),
		ClusterCIDRs:   cidrs,
		ServiceNetwork: v.ServiceNetwork,
		VXLANPort:      v.VXLANPort,
		Datapath:       v.Datapath,
	}
}

// ServiceSet is the validated, sorted picture of every Service this node must proxy, with the node facts
// the renderer needs: the whole input of nftables.Render.
type ServiceSet struct {
	// Node holds the node facts, validated.
	Node ServiceNode
	// Services are the proxied Services, sorted by namespace and name.
	Services []Service
	// Skipped are the Services, addresses, ports and endpoints left out because they are invalid;
	// everything else is still programmed.
	Skipped []*FieldError
}

// Service is one proxied Service (not headless, not ExternalName, with an IPv4 ClusterIP).
type Service struct {
	// Namespace and Name identify the Service.
	Namespace, Name string
	// ClusterIP is the Service's IPv4 ClusterIP.
	ClusterIP netip.Addr
	// ExternalIPs are spec.externalIPs (IPv4 only).
	ExternalIPs []netip.Addr
	// LoadBalancerIPs are the IPv4 status.loadBalancer.ingress IPs whose ipMode is not Proxy.
	LoadBalancerIPs []netip.Addr
	// SourceRanges are spec.loadBalancerSourceRanges: when set, only these sources may use the
	// LoadBalancer IPs (NodePorts are not restricted, as in kube-proxy).
	SourceRanges []netip.Prefix
	// ExternalPolicyLocal is externalTrafficPolicy: Local on an externally reachable Service.
	ExternalPolicyLocal bool
	// InternalPolicyLocal is internalTrafficPolicy: Local.
	InternalPolicyLocal bool
	// AffinityTimeout is the ClientIP session affinity timeout; zero means no affinity.
	AffinityTimeout time.Duration
	// Ports are the Service's ports in spec order.
	Ports []ServicePort
}

// Key is the Service's namespace/name, used in chain names, field paths and logs.
func (s *Service) Key() string {
	return s.Namespace + "/" + s.Name
}

// ExternallyAccessible reports whether traffic from outside can reach the Service other than through the
// ClusterIP: a NodePort, an ExternalIP or a LoadBalancer IP, as kube-proxy defines it.
func (s *Service) ExternallyAccessible(p *ServicePort) bool {
	return p.NodePort != 0 || len(s.ExternalIPs) > 0 || len(s.LoadBalancerIPs) > 0
}

// ServicePort is one port of a Service with its endpoints.
type ServicePort struct {
	// Name is the port's name, empty for a single unnamed port.
	Name string
	// Protocol is TCP, UDP or SCTP.
	Protocol L4Proto
	// Port is the Service port on the ClusterIP, ExternalIPs and LoadBalancer IPs.
	Port uint16
	// NodePort is the port on the node's IPs, 0 if none.
	NodePort uint16
	// Endpoints are the IPv4 endpoints of this port from all of the Service's EndpointSlices, sorted by
	// address and port, without duplicates, whatever their conditions.
	Endpoints []Endpoint
}

// Endpoint is one backend address and port of a Service port, with the conditions kube-proxy uses to
// choose among them.
type Endpoint struct {
	// Addr is the endpoint's IPv4 address (the first of the EndpointSlice endpoint's addresses).
	Addr netip.Addr
	// Port is the target port.
	Port uint16
	// NodeName is the node the endpoint runs on; it is local when this equals ServiceNode.Name.
	NodeName string
	// Ready, Serving and Terminating are the EndpointSlice conditions with Kubernetes' defaults applied
	// (ready unset = true, serving unset = ready, terminating unset = false).
	Ready, Serving, Terminating bool
}

// String returns ip:port.
func (e Endpoint) String() string {
	return netip.AddrPortFrom(e.Addr, e.Port).String()
}

// Equal reports whether two Services would render the same rules, so that a renderer can reuse what it
// rendered for the previous version of a Service that did not change.
func (s *Service) Equal(o *Service) bool {
	if s.Namespace != o.Namespace || s.Name != o.Name || s.ClusterIP != o.ClusterIP ||
		s.ExternalPolicyLocal != o.ExternalPolicyLocal || s.InternalPolicyLocal != o.InternalPolicyLocal ||
		s.AffinityTimeout != o.AffinityTimeout || !slices.Equal(s.ExternalIPs, o.ExternalIPs) ||
		!slices.Equal(s.LoadBalancerIPs, o.LoadBalancerIPs) || !slices.Equal(s.SourceRanges, o.SourceRanges) ||
		len(s.Ports) != len(o.Ports) {
		return false
	}
	for i := range s.Ports {
		a, b := &s.Ports[i], &o.Ports[i]
		if a.Name != b.Name || a.Protocol != b.Protocol || a.Port != b.Port || a.NodePort != b.NodePort ||
			!slices.Equal(a.Endpoints, b.Endpoints) {
			return false
		}
	}
	return true
}

// Equal reports whether two sets of node facts are the same.
func (n *ServiceNode) Equal(o *ServiceNode) bool {
	return n.Name == o.Name && slices.Equal(n.IPs, o.IPs) && slices.Equal(n.ClusterCIDRs, o.ClusterCIDRs) &&
		n.ServiceNetwork == o.ServiceNetwork && n.VXLANPort == o.VXLANPort && n.Datapath == o.Datapath &&
		n.MasqueradeMark == o.MasqueradeMark
}

// Clone returns a deep copy of the Service, so that a cache can keep it while the caller reuses its slices.
func (s *Service) Clone() Service {
	c := *s
	c.ExternalIPs = slices.Clone(s.ExternalIPs)
	c.LoadBalancerIPs = slices.Clone(s.LoadBalancerIPs)
	c.SourceRanges = slices.Clone(s.SourceRanges)
	c.Ports = slices.Clone(s.Ports)
	for i := range c.Ports {
		c.Ports[i].Endpoints = slices.Clone(s.Ports[i].Endpoints)
	}
	return c
}

// CompareServices orders Services as ServiceSet.Services lists them: by namespace, then name.
func CompareServices(a, b *Service) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// CompareServiceKeys is CompareServices for "namespace/name" keys. Comparing the keys as text would put
// "app-b/y" before "app/x", the other way round from the Services.
func CompareServiceKeys(a, b string) int {
	ans, aname, _ := strings.Cut(a, "/")
	bns, bname, _ := strings.Cut(b, "/")
	return cmp.Or(strings.Compare(ans, bns), strings.Compare(aname, bname))
}
