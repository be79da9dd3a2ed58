package model

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilptr "k8s.io/utils/ptr"
)

func testServiceNode() ServiceNode {
	return ServiceNode{
		Name:           "node1",
		IPs:            []netip.Addr{netip.MustParseAddr("192.168.100.1")},
		ClusterCIDRs:   []netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")},
		ServiceNetwork: netip.MustParsePrefix("172.30.0.0/16"),
		Datapath:       DatapathNetdev,
	}
}

func makeTestSvc(name string, mut ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "172.30.0.10", ClusterIPs: []string{"172.30.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

func makeTestEPSlice(name, svc string, mut ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: utilptr.To("http"), Port: utilptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.128.2.2"}, NodeName: utilptr.To("node2")}},
	}
	for _, m := range mut {
		m(es)
	}
	return es
}

func TestBuildServices(t *testing.T) {
	ep := func(ip string, port uint16, node string) Endpoint {
		return Endpoint{Addr: netip.MustParseAddr(ip), Port: port, NodeName: node, Ready: true, Serving: true}
	}
	tests := []struct {
		name     string
		svcs     []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		want     []Service
		skipped  []string
		wantNone bool
	}{
		{
			name:   "cluster IP with one endpoint",
			svcs:   []*corev1.Service{makeTestSvc("web")},
			slices: []*discoveryv1.EndpointSlice{makeTestEPSlice("web-1", "web")},
			want: []Service{{Namespace: "ns", Name: "web", ClusterIP: netip.MustParseAddr("172.30.0.10"),
				Ports: []ServicePort{{Name: "http", Protocol: L4ProtoTCP, Port: 80, Endpoints: []Endpoint{ep("10.128.2.2", 8080, "node2")}}}}},
		},
		{
			name: "ExternalName and headless are not proxied",
			svcs: []*corev1.Service{
				makeTestSvc("ext", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }),
				makeTestSvc("headless", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
				makeTestSvc("v6only", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::1", []string{"fd00::1"} }),
			},
			wantNone: true,
		},
		{
			name: "LoadBalancer: ingress IPs, Proxy mode, source ranges, Local policy, affinity default",
			svcs: []*corev1.Service{makeTestSvc("lb", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalIPs = []string{"192.168.200.1", "fd00::2", "bogus"}
				s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.1/8", " 192.168.0.0/16 ", "nope"}
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
					{IP: "10.10.12.208"}, {IP: "10.10.12.209", IPMode: utilptr.To(corev1.LoadBalancerIPModeProxy)}, {Hostname: "lb.example"},
				}
			})},
			want: []Service{{Namespace: "ns", Name: "lb", ClusterIP: netip.MustParseAddr("172.30.0.10"),
				ExternalIPs:         []netip.Addr{netip.MustParseAddr("192.168.200.1")},
				LoadBalancerIPs:     []netip.Addr{netip.MustParseAddr("10.10.12.208")},
				SourceRanges:        []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")},
				ExternalPolicyLocal: true, AffinityTimeout: 3 * time.Hour,
				Ports: []ServicePort{{Name: "http", Protocol: L4ProtoTCP, Port: 80, NodePort: 30080}}}},
			skipped: []string{"services[ns/lb].spec.externalIPs[2]", "services[ns/lb].spec.loadBalancerSourceRanges[2]"},
		},
		{
			name: "endpoint conditions, duplicates across slices, port by name, bad addresses",
			svcs: []*corev1.Service{makeTestSvc("web", func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53})
			})},
			slices: []*discoveryv1.EndpointSlice{
				makeTestEPSlice("web-b", "web", func(es *discoveryv1.EndpointSlice) {
					es.Endpoints = []discoveryv1.Endpoint{
						{Addresses: []string{"10.128.2.2"}, NodeName: utilptr.To("other")}, // duplicate of web-a's: web-a wins
						{Addresses: []string{"10.128.2.9"}, Conditions: discoveryv1.EndpointConditions{
							Ready: utilptr.To(false), Serving: utilptr.To(true), Terminating: utilptr.To(true)}},
						{Addresses: []string{"not-an-ip"}},
					}
				}),
				makeTestEPSlice("web-a", "web", func(es *discoveryv1.EndpointSlice) {
					es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: utilptr.To("dns"), Protocol: utilptr.To(corev1.ProtocolUDP), Port: utilptr.To[int32](5353)})
				}),
				makeTestEPSlice("web-v6", "web", func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeIPv6 }),
				makeTestEPSlice("other-svc", "other"),
			},
			want: []Service{{Namespace: "ns", Name: "web", ClusterIP: netip.MustParseAddr("172.30.0.10"), Ports: []ServicePort{
				{Name: "http", Protocol: L4ProtoTCP, Port: 80, Endpoints: []Endpoint{
					ep("10.128.2.2", 8080, "node2"),
					{Addr: netip.MustParseAddr("10.128.2.9"), Port: 8080, Serving: true, Terminating: true},
				}},
				{Name: "dns", Protocol: L4ProtoUDP, Port: 53, Endpoints: []Endpoint{ep("10.128.2.2", 5353, "node2")}},
			}}},
			skipped: []string{"endpointSlices[ns/web-b].endpoints[2].addresses[0]"},
		},
		{
			name: "bad ports are skipped, the rest is kept",
			svcs: []*corev1.Service{makeTestSvc("web", func(s *corev1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "x", Protocol: "ICMP", Port: 1})
			})},
			want: []Service{{Namespace: "ns", Name: "web", ClusterIP: netip.MustParseAddr("172.30.0.10"),
				Ports: []ServicePort{{Name: "http", Protocol: L4ProtoTCP, Port: 80}}}},
			skipped: []string{"services[ns/web].spec.ports[1].protocol"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := BuildServices(ServiceInput{Node: testServiceNode(), Services: tc.svcs, EndpointSlices: tc.slices})
			if err != nil {
				t.Fatalf("BuildServices: %v", err)
			}
			if tc.wantNone {
				if len(set.Services) != 0 {
					t.Fatalf("got services %+v, want none", set.Services)
				}
			} else if !reflect.DeepEqual(set.Services, tc.want) {
				t.Fatalf("got\n%+v\nwant\n%+v", set.Services, tc.want)
			}
			var paths []string
			for _, s := range set.Skipped {
				paths = append(paths, s.Path)
			}
			if !reflect.DeepEqual(paths, tc.skipped) {
				t.Fatalf("skipped %v, want %v", set.Skipped, tc.skipped)
			}
		})
	}
}

func TestBuildServicesInvalidNode(t *testing.T) {
	n := testServiceNode()
	n.Name, n.IPs, n.Datapath, n.MasqueradeMark = "", nil, "dpdk", 0x3
	n.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.128.0.1/14")}
	_, err := BuildServices(ServiceInput{Node: n})
	var inv *InvalidInputError
	if !errors.As(err, &inv) {
		t.Fatalf("got %v, want an InvalidInputError", err)
	}
	for _, want := range []string{"node.name", "node.ips", "node.clusterCIDRs[0]", "node.datapath", "node.masqueradeMark"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestBuildServicesDefaults(t *testing.T) {
	set, err := BuildServices(ServiceInput{Node: testServiceNode()})
	if err != nil {
		t.Fatal(err)
	}
	if set.Node.VXLANPort != DefaultVXLANPort || set.Node.MasqueradeMark != DefaultMasqueradeMark {
		t.Fatalf("defaults not applied: %+v", set.Node)
	}
}

func TestServiceNodeFromView(t *testing.T) {
	v := &NodeView{NodeName: "n1", NodeIP: netip.MustParseAddr("192.168.100.1"), Datapath: DatapathSystem, VXLANPort: 4789,
		ClusterNetworks: []ClusterCIDR{{CIDR: netip.MustParsePrefix("10.128.0.0/14"), HostPrefix: 23}},
		ServiceNetwork:  netip.MustParsePrefix("172.30.0.0/16")}
	got := ServiceNodeFromView(v, netip.MustParseAddr("192.168.101.1"))
	want := ServiceNode{Name: "n1", IPs: []netip.Addr{v.NodeIP, netip.MustParseAddr("192.168.101.1")},
		ClusterCIDRs: []netip.Prefix{v.ClusterNetworks[0].CIDR}, ServiceNetwork: v.ServiceNetwork, VXLANPort: 4789, Datapath: DatapathSystem}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestLastChangeTriggerTime(t *testing.T) {
	es := makeTestEPSlice("a", "b")
	if _, ok := LastChangeTriggerTime(es); ok {
		t.Fatal("found a trigger time on a slice without the annotation")
	}
	es.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: "2026-11-30T08:00:00.5Z"}
	got, ok := LastChangeTriggerTime(es)
	if !ok || !got.Equal(time.Date(2026, 11, 30, 8, 0, 0, 5e8, time.UTC)) {
		t.Fatalf("got %v %v", got, ok)
	}
}

// TestServiceBuilderReuse checks that a Service whose object and slices are the same pointers is not
// rebuilt, and that a new slice object is picked up.
func TestServiceBuilderReuse(t *testing.T) {
	svcs := []*corev1.Service{makeTestSvc("a"), makeTestSvc("b")}
	slices := []*discoveryv1.EndpointSlice{makeTestEPSlice("a-1", "a"), makeTestEPSlice("b-1", "b")}
	var b ServiceBuilder
	first, err := b.Build(ServiceInput{Node: testServiceNode(), Services: svcs, EndpointSlices: slices})
	if err != nil {
		t.Fatal(err)
	}
	slices[1] = makeTestEPSlice("b-1", "b", func(es *discoveryv1.EndpointSlice) {
		es.Endpoints[0].Addresses = []string{"10.128.2.3"}
	})
	second, err := b.Build(ServiceInput{Node: testServiceNode(), Services: svcs, EndpointSlices: slices})
	if err != nil {
		t.Fatal(err)
	}
	if &first.Services[0].Ports[0] != &second.Services[0].Ports[0] {
		t.Errorf("unchanged Service a was rebuilt")
	}
	if got := second.Services[1].Ports[0].Endpoints[0].Addr; got != netip.MustParseAddr("10.128.2.3") {
		t.Errorf("changed slice of b not picked up: %s", got)
	}
	fresh, _ := BuildServices(ServiceInput{Node: testServiceNode(), Services: svcs, EndpointSlices: slices})
	if !reflect.DeepEqual(fresh.Services, second.Services) {
		t.Errorf("cached build differs from a fresh one:\n%+v\n%+v", second.Services, fresh.Services)
	}
}

// TestServiceBuilderReuseByVersion checks that copies of the same object versions, as a cache that deep-copies
// on List hands out, are reused too, and that a new resourceVersion is rebuilt.
func TestServiceBuilderReuseByVersion(t *testing.T) {
	versioned := func(obj interface {
		SetUID(types.UID)
		SetResourceVersion(string)
	}, uid, rv string) {
		obj.SetUID(types.UID(uid))
		obj.SetResourceVersion(rv)
	}
	build := func(b *ServiceBuilder, sliceRV string) *ServiceSet {
		t.Helper()
		svc := makeTestSvc("a")
		versioned(svc, "svc-a", "10")
		es := makeTestEPSlice("a-1", "a")
		versioned(es, "slice-a", sliceRV)
		set, err := b.Build(ServiceInput{Node: testServiceNode(), Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es}})
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	var b ServiceBuilder
	first := build(&b, "20")
	second := build(&b, "20")
	if &first.Services[0].Ports[0] != &second.Services[0].Ports[0] {
		t.Errorf("copies of unchanged objects were rebuilt")
	}
	third := build(&b, "21")
	if &second.Services[0].Ports[0] == &third.Services[0].Ports[0] {
		t.Errorf("a slice with a new resourceVersion was not rebuilt")
	}
}

// TestNewServiceInputLeavesOtherProxysObjects checks that a Service and an EndpointSlice labelled for
// another proxy (service.kubernetes.io/service-proxy-name) are left out, as the agent's informers do.
func TestNewServiceInputLeavesOtherProxysObjects(t *testing.T) {
	mine, theirs := *makeTestSvc("mine"), *makeTestSvc("theirs")
	theirs.Labels = map[string]string{LabelServiceProxyName: "other-proxy"}
	slices := []discoveryv1.EndpointSlice{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "mine-1"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "theirs-1", Labels: map[string]string{LabelServiceProxyName: "other-proxy"}}},
	}
	in := NewServiceInput(testServiceNode(), []corev1.Service{mine, theirs}, slices)
	if len(in.Services) != 1 || in.Services[0].Name != "mine" {
		t.Errorf("Services = %v, want only mine", in.Services)
	}
	if len(in.EndpointSlices) != 1 || in.EndpointSlices[0].Name != "mine-1" {
		t.Errorf("EndpointSlices = %v, want only mine-1", in.EndpointSlices)
	}
}
