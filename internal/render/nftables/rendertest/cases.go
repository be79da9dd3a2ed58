package rendertest

import (
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vxflow/vxflow/internal/model"
)

// Node is node1 of the lab: underlay 192.168.100.1, pods in 10.128.0.0/14, services in 172.30.0.0/16.
func Node(mut ...func(*model.ServiceNode)) model.ServiceNode {
	n := model.ServiceNode{
		Name:           "node1",
		IPs:            []netip.Addr{netip.MustParseAddr("192.168.100.1")},
		ClusterCIDRs:   []netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")},
		ServiceNetwork: netip.MustParsePrefix("172.30.0.0/16"),
		VXLANPort:      4789,
		Datapath:       model.DatapathNetdev,
	}
	for _, m := range mut {
		m(&n)
	}
	return n
}

// Service returns a ClusterIP Service with one TCP port "http" 80, changed by mut.
func Service(ns, name, clusterIP string, mut ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
			Ports:      []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

// Endpoint is one endpoint of a test slice.
type Endpoint struct {
	// IP and Node are the endpoint's address and node name.
	IP, Node string
	// NotReady marks the endpoint not ready; Serving and Terminating are then its other conditions.
	NotReady, Serving, Terminating bool
}

// Slice returns the EndpointSlice of Service ns/svc with one port (name, protocol, port).
func Slice(ns, svc, portName string, proto corev1.Protocol, port int32, eps ...Endpoint) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-abcde",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(portName), Protocol: ptr.To(proto), Port: ptr.To(port)}},
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.IP}, NodeName: ptr.To(e.Node)}
		if e.NotReady {
			ep.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(e.Serving), Terminating: ptr.To(e.Terminating)}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

// Seed is the seed's example: almighty/almighty5, port web 8080, type LoadBalancer with ingress
// 10.10.12.208, one endpoint 10.128.2.151:8080 on node2.
func Seed() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := Service("almighty", "almighty5", "172.30.153.87", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports = []corev1.ServicePort{{Name: "web", Protocol: corev1.ProtocolTCP, Port: 8080, NodePort: 31826}}
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.10.12.208"}}
	})
	return svc, Slice("almighty", "almighty5", "web", corev1.ProtocolTCP, 8080, Endpoint{IP: "10.128.2.151", Node: "node2"})
}

// Case is one golden test: objects in, table text out.
type Case struct {
	// Name names the case and its golden file.
	Name string
	// Node holds the node facts.
	Node model.ServiceNode
	// Services and Slices are the API objects.
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
	// Contains are lines the rendered text must hold, so that a wrong -update cannot bless a broken ruleset.
	Contains []string
	// InlineEndpoints renders with nftables.Options.InlineEndpoints.
	InlineEndpoints bool
	// EndpointMap renders with nftables.Options.EndpointMap.
	EndpointMap bool
}

// Cases are shared with the apply integration test, which programs each one into a kernel and
// compares `nft list table ip vxflow` with the same golden file.
func Cases() []Case {
	seed, seedSlice := Seed()
	return []Case{
		{
			Name: "empty", Node: Node(),
			Contains: []string{
				"udp dport 4789 notrack",
				"ct status dnat ip saddr @cluster-cidrs masquerade fully-random",
				"ip saddr @cluster-cidrs ip daddr != @cluster-cidrs masquerade fully-random",
				"ip daddr 172.30.0.0/16 drop",
			},
		},
		{
			Name: "seed-loadbalancer", Node: Node(),
			Services: []*corev1.Service{seed}, Slices: []*discoveryv1.EndpointSlice{seedSlice},
			Contains: []string{
				"10.10.12.208 . tcp . 8080 : goto external-almighty/almighty5/tcp/web",
				"172.30.153.87 . tcp . 8080 : goto service-almighty/almighty5/tcp/web",
				"tcp . 31826 : goto external-almighty/almighty5/tcp/web",
				"meta l4proto tcp dnat to 10.128.2.151:8080",
			},
		},
		{
			Name:     "seed-loadbalancer-system-datapath",
			Node:     Node(func(n *model.ServiceNode) { n.Datapath = model.DatapathSystem; n.MasqueradeMark = 0x4000 }),
			Services: []*corev1.Service{seed}, Slices: []*discoveryv1.EndpointSlice{seedSlice},
			Contains: []string{"meta mark set meta mark | 0x00004000"},
		},
		{
			Name: "cluster-ip-affinity",
			Node: Node(),
			Services: []*corev1.Service{
				Service("ns1", "web", "172.30.0.10", func(s *corev1.Service) {
					s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
					s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](100)}}
				}),
				Service("ns1", "three", "172.30.0.11"),
			},
			Slices: []*discoveryv1.EndpointSlice{
				Slice("ns1", "web", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.3", Node: "node1"}, Endpoint{IP: "10.128.2.2", Node: "node2"}),
				Slice("ns1", "three", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.3", Node: "node1"}, Endpoint{IP: "10.128.2.2", Node: "node2"},
					Endpoint{IP: "10.128.2.3", Node: "node2"}),
			},
			Contains: []string{
				"timeout 1m40s",
				"ip saddr @affinity-ns1/web/tcp/http__10.128.0.3/8080 goto endpoint-ns1/web/tcp/http__10.128.0.3/8080",
				"update @affinity-ns1/web/tcp/http__10.128.2.2/8080 { ip saddr }",
				"numgen random mod 3 0 goto endpoint-ns1/three/tcp/http__10.128.0.3/8080",
				"numgen random mod 2 0 goto endpoint-ns1/three/tcp/http__10.128.2.2/8080",
			},
		},
		{
			Name: "traffic-policy-local",
			Node: Node(),
			Services: []*corev1.Service{
				Service("ns2", "ext-local", "172.30.0.20", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports[0].NodePort = 30020
					s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				}),
				Service("ns2", "ext-local-remote-only", "172.30.0.21", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports[0].NodePort = 30021
					s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				}),
				Service("ns2", "int-local", "172.30.0.22", func(s *corev1.Service) {
					s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
				}),
				Service("ns2", "int-local-remote-only", "172.30.0.23", func(s *corev1.Service) {
					s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
				}),
			},
			Slices: []*discoveryv1.EndpointSlice{
				Slice("ns2", "ext-local", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.5", Node: "node1"}, Endpoint{IP: "10.128.2.5", Node: "node2"}),
				Slice("ns2", "ext-local-remote-only", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.2.6", Node: "node2"}),
				Slice("ns2", "int-local", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.7", Node: "node1"}, Endpoint{IP: "10.128.2.7", Node: "node2"}),
				Slice("ns2", "int-local-remote-only", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.2.8", Node: "node2"}),
			},
			Contains: []string{
				"ip saddr @cluster-cidrs goto service-ns2/ext-local/tcp/http comment \"short-circuit pod traffic\"",
				"goto local-ns2/ext-local/tcp/http",
				"tcp . 30021 : drop",
				"172.30.0.23 . tcp . 80 : drop",
				"172.30.0.22 . tcp . 80 : goto local-ns2/int-local/tcp/http",
			},
		},
		{
			Name: "no-endpoints-and-terminating",
			Node: Node(),
			Services: []*corev1.Service{
				Service("ns3", "none", "172.30.0.30", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports[0].NodePort = 30030
					s.Spec.ExternalIPs = []string{"192.168.200.30"}
				}),
				Service("ns3", "terminating", "172.30.0.31"),
				Service("ns3", "not-ready", "172.30.0.32"),
			},
			Slices: []*discoveryv1.EndpointSlice{
				Slice("ns3", "terminating", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.2.31", Node: "node2", NotReady: true, Serving: true, Terminating: true},
					Endpoint{IP: "10.128.2.32", Node: "node2", NotReady: true, Serving: false, Terminating: true}),
				Slice("ns3", "not-ready", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.2.33", Node: "node2", NotReady: true}),
			},
			Contains: []string{
				"172.30.0.30 . tcp . 80 : goto reject-chain",
				"192.168.200.30 . tcp . 80 : goto reject-chain",
				"tcp . 30030 : goto reject-chain",
				"172.30.0.32 . tcp . 80 : goto reject-chain",
				"meta l4proto tcp dnat to 10.128.2.31:8080",
				"reject with tcp reset",
			},
		},
		{
			Name: "firewall-protocols",
			Node: Node(),
			Services: []*corev1.Service{
				Service("ns4", "lb", "172.30.0.40", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeLoadBalancer
					s.Spec.Ports = []corev1.ServicePort{
						{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053},
						{Name: "assoc", Protocol: corev1.ProtocolSCTP, Port: 9999, NodePort: 30999},
					}
					s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8", "192.168.100.0/24"}
					s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.10.12.40"}}
				}),
			},
			Slices: []*discoveryv1.EndpointSlice{
				func() *discoveryv1.EndpointSlice {
					es := Slice("ns4", "lb", "dns", corev1.ProtocolUDP, 5353, Endpoint{IP: "10.128.2.40", Node: "node2"})
					es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To("assoc"), Protocol: ptr.To(corev1.ProtocolSCTP), Port: ptr.To[int32](9999)})
					return es
				}(),
			},
			Contains: []string{
				"10.10.12.40 . udp . 53 : goto firewall-ns4/lb/udp/dns",
				"ip saddr 10.10.12.40 return",
				"meta l4proto udp dnat to 10.128.2.40:5353",
				"meta l4proto sctp dnat to 10.128.2.40:9999",
				"ip daddr 172.30.0.40 sctp dport 9999 ip saddr != @cluster-cidrs jump mark-for-masquerade",
			},
		},
		{
			Name: "inline-endpoints", Node: Node(), InlineEndpoints: true,
			Services: []*corev1.Service{
				Service("ns5", "three", "172.30.0.50"),
				Service("ns5", "sticky", "172.30.0.51", func(s *corev1.Service) {
					s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				}),
			},
			Slices: []*discoveryv1.EndpointSlice{
				Slice("ns5", "three", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.50", Node: "node1"}, Endpoint{IP: "10.128.2.50", Node: "node2"},
					Endpoint{IP: "10.128.2.51", Node: "node2"}),
				Slice("ns5", "sticky", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.51", Node: "node1"}, Endpoint{IP: "10.128.2.52", Node: "node2"}),
			},
			Contains: []string{
				"numgen random mod 3 0 meta l4proto tcp dnat to 10.128.0.50:8080",
				"numgen random mod 2 0 meta l4proto tcp dnat to 10.128.2.50:8080",
				"meta l4proto tcp dnat to 10.128.2.51:8080",
				// Session affinity still needs its per-endpoint chains and sets.
				"goto endpoint-ns5/sticky/tcp/http__10.128.0.51/8080",
			},
		},
		{
			Name: "endpoint-map", Node: Node(), EndpointMap: true,
			Services: []*corev1.Service{
				Service("ns6", "three", "172.30.0.60"),
				Service("ns6", "sticky", "172.30.0.61", func(s *corev1.Service) {
					s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				}),
				Service("ns6", "dns", "172.30.0.62", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053}}
				}),
				Service("ns6", "ext-local", "172.30.0.63", func(s *corev1.Service) {
					s.Spec.Type = corev1.ServiceTypeNodePort
					s.Spec.Ports[0].NodePort = 30063
					s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				}),
				Service("ns6", "none", "172.30.0.64"),
			},
			Slices: []*discoveryv1.EndpointSlice{
				Slice("ns6", "three", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.60", Node: "node1"}, Endpoint{IP: "10.128.2.60", Node: "node2"},
					Endpoint{IP: "10.128.2.61", Node: "node2"}),
				Slice("ns6", "sticky", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.61", Node: "node1"}, Endpoint{IP: "10.128.2.62", Node: "node2"}),
				Slice("ns6", "dns", "dns", corev1.ProtocolUDP, 5353, Endpoint{IP: "10.128.2.63", Node: "node2"}),
				Slice("ns6", "ext-local", "http", corev1.ProtocolTCP, 8080,
					Endpoint{IP: "10.128.0.64", Node: "node1"}, Endpoint{IP: "10.128.2.64", Node: "node2"}),
			},
			Contains: []string{
				"typeof numgen random mod 1 : ip daddr . tcp dport",
				"map service-endpoints-4 {",
				"meta l4proto tcp dnat ip to numgen random mod 3 offset ",
				"meta l4proto udp dnat ip to numgen random mod 1 offset ",
				"meta l4proto tcp dnat ip to numgen random mod 1 offset ",
				": 10.128.2.61 . 8080",
				": 10.128.2.63 . 5353",
				// Session affinity still needs its per-endpoint chains and sets.
				"goto endpoint-ns6/sticky/tcp/http__10.128.0.61/8080",
			},
		},
	}
}

// Build turns a case's objects into a ServiceSet.
func (c Case) Build(t testing.TB) *model.ServiceSet {
	t.Helper()
	set, err := model.BuildServices(model.ServiceInput{Node: c.Node, Services: c.Services, EndpointSlices: c.Slices})
	if err != nil {
		t.Fatalf("BuildServices: %v", err)
	}
	if len(set.Skipped) > 0 {
		t.Fatalf("BuildServices skipped objects: %v", set.Skipped)
	}
	return set
}

// GoldenPath is where a case's expected `nft list table ip vxflow` text lives, found from this source file
// so that the applier's integration test reads the same files.
func GoldenPath(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", name+".golden")
}
