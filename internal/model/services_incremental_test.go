package model

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilptr "k8s.io/utils/ptr"
)

// mapSource is a ServiceSource over plain maps, standing in for the agent's informer stores.
type mapSource struct {
	svcs   map[string]*corev1.Service
	slices map[string]*discoveryv1.EndpointSlice // by namespace/name of the slice
}

func (m *mapSource) ServiceKeys() []string { return slices.Collect(maps.Keys(m.svcs)) }

func (m *mapSource) Service(key string) *corev1.Service { return m.svcs[key] }

func (m *mapSource) EndpointSlices(key string) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, es := range m.slices {
		if es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName] == key {
			out = append(out, es)
		}
	}
	return out
}

func (m *mapSource) input(node ServiceNode) ServiceInput {
	in := ServiceInput{Node: node}
	for _, s := range m.svcs {
		in.Services = append(in.Services, s)
	}
	for _, es := range m.slices {
		in.EndpointSlices = append(in.EndpointSlices, es)
	}
	return in
}

// randomService returns a new version of Service ns/name with random, sometimes invalid, settings.
func randomService(r *rand.Rand, name string) *corev1.Service {
	return makeTestSvc(name, func(s *corev1.Service) {
		s.ResourceVersion = fmt.Sprint(r.Int())
		ip := fmt.Sprintf("172.30.0.%d", r.IntN(250)+1)
		switch r.IntN(10) {
		case 0:
			ip = corev1.ClusterIPNone
		case 1:
			ip = "not-an-ip"
		case 2:
			s.Spec.Type = corev1.ServiceTypeExternalName
		case 3:
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = int32(30000 + r.IntN(100))
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}, {IP: "bad"}}
		case 4:
			s.Spec.ExternalIPs = []string{"192.0.2.7", "nope"}
		}
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
		if r.IntN(3) == 0 {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: int32(r.IntN(70000))})
		}
	})
}

// randomSlice returns a new version of slice ns/name for one of the Services, sometimes IPv6 or invalid.
func randomSlice(r *rand.Rand, name string, svcNames []string) *discoveryv1.EndpointSlice {
	return makeTestEPSlice(name, svcNames[r.IntN(len(svcNames))], func(es *discoveryv1.EndpointSlice) {
		es.ResourceVersion = fmt.Sprint(r.Int())
		if r.IntN(8) == 0 {
			es.AddressType = discoveryv1.AddressTypeIPv6
		}
		if r.IntN(3) == 0 {
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: utilptr.To("dns"), Protocol: utilptr.To(corev1.ProtocolUDP), Port: utilptr.To[int32](53)})
		}
		es.Endpoints = nil
		for range r.IntN(4) {
			addr := fmt.Sprintf("10.128.%d.%d", r.IntN(3), r.IntN(4)+1)
			if r.IntN(12) == 0 {
				addr = "fd00::1"
			}
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr},
				NodeName:   utilptr.To(fmt.Sprintf("node%d", r.IntN(3))),
				Conditions: discoveryv1.EndpointConditions{Ready: utilptr.To(r.IntN(4) != 0), Terminating: utilptr.To(r.IntN(5) == 0)}})
		}
	})
}

func skippedStrings(errs []*FieldError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	slices.Sort(out)
	return out
}

// TestServiceBuilderUpdateMatchesFullBuild applies random sequences of Service and EndpointSlice changes
// (creates, updates, deletes, slices moving between Services, invalid fields, new node facts) and checks
// after every step that the incremental result equals a full build of the same objects.
func TestServiceBuilderUpdateMatchesFullBuild(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e", "f"}
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			src := &mapSource{svcs: map[string]*corev1.Service{}, slices: map[string]*discoveryv1.EndpointSlice{}}
			node := testServiceNode()
			var b ServiceBuilder
			for step := range 200 {
				var changed []string
				for range r.IntN(4) + 1 {
					switch op := r.IntN(6); {
					case op < 2:
						name := names[r.IntN(len(names))]
						src.svcs["ns/"+name] = randomService(r, name)
						changed = append(changed, "ns/"+name)
					case op == 2:
						name := names[r.IntN(len(names))]
						delete(src.svcs, "ns/"+name)
						changed = append(changed, "ns/"+name)
					case op < 5:
						key := fmt.Sprintf("ns/s%d", r.IntN(8))
						if old := src.slices[key]; old != nil {
							changed = append(changed, "ns/"+old.Labels[discoveryv1.LabelServiceName])
						}
						es := randomSlice(r, key[3:], names)
						src.slices[key] = es
						changed = append(changed, "ns/"+es.Labels[discoveryv1.LabelServiceName])
					default:
						key := fmt.Sprintf("ns/s%d", r.IntN(8))
						if old := src.slices[key]; old != nil {
							changed = append(changed, "ns/"+old.Labels[discoveryv1.LabelServiceName])
							delete(src.slices, key)
						}
					}
				}
				wantFull := step == 0
				if r.IntN(30) == 0 {
					prev := node.IPs[0]
					node.IPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 100, byte(r.IntN(3) + 1)})}
					wantFull = wantFull || node.IPs[0] != prev
				}
				got, ch, err := b.Update(node, src, changed)
				if err != nil {
					t.Fatalf("step %d: Update: %v", step, err)
				}
				if ch.Full != wantFull {
					t.Errorf("step %d: Full = %v, want %v", step, ch.Full, wantFull)
				}
				want, err := BuildServices(src.input(node))
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got.Services, want.Services) && !(len(got.Services) == 0 && len(want.Services) == 0) {
					t.Fatalf("step %d: incremental Services differ from a full build:\n got %+v\nwant %+v", step, got.Services, want.Services)
				}
				if g, w := skippedStrings(got.Skipped), skippedStrings(want.Skipped); !slices.Equal(g, w) {
					t.Fatalf("step %d: Skipped differ:\n got %q\nwant %q", step, g, w)
				}
				if !got.Node.Equal(&want.Node) {
					t.Fatalf("step %d: node %+v, want %+v", step, got.Node, want.Node)
				}
			}
		})
	}
}

// TestServiceBuilderUpdateReportsOnlyChanges checks that Update reads only the changed keys, reports the
// Services whose model changed, and reuses the rest.
func TestServiceBuilderUpdateReportsOnlyChanges(t *testing.T) {
	src := &mapSource{svcs: map[string]*corev1.Service{"ns/a": makeTestSvc("a"), "ns/b": makeTestSvc("b")},
		slices: map[string]*discoveryv1.EndpointSlice{"ns/a-1": makeTestEPSlice("a-1", "a"), "ns/b-1": makeTestEPSlice("b-1", "b")}}
	var b ServiceBuilder
	first, ch, err := b.Update(testServiceNode(), src, nil)
	if err != nil || !ch.Full || len(ch.Keys) != 2 || len(first.Services) != 2 {
		t.Fatalf("first Update = %d Services, %+v, %v; want a full build of 2", len(first.Services), ch, err)
	}
	aPorts := &first.Services[0].Ports[0]
	src.slices["ns/b-1"] = makeTestEPSlice("b-1", "b", func(es *discoveryv1.EndpointSlice) { es.Endpoints[0].Addresses = []string{"10.128.2.9"} })
	second, ch, err := b.Update(testServiceNode(), src, []string{"ns/b"})
	if err != nil || ch.Full || !slices.Equal(ch.Keys, []string{"ns/b"}) {
		t.Fatalf("second Update: %+v, %v; want only ns/b changed", ch, err)
	}
	if &second.Services[0].Ports[0] != aPorts {
		t.Errorf("unchanged Service a was rebuilt")
	}
	if got := second.Services[1].Ports[0].Endpoints[0].Addr; got != netip.MustParseAddr("10.128.2.9") {
		t.Errorf("b's endpoint = %s, want 10.128.2.9", got)
	}
	// A resync (same object versions) and an unknown key change nothing.
	if _, ch, _ := b.Update(testServiceNode(), src, []string{"ns/a", "ns/zzz"}); ch.Full || len(ch.Keys) != 0 {
		t.Errorf("an Update without changes reported %+v", ch)
	}
	delete(src.svcs, "ns/a")
	third, ch, _ := b.Update(testServiceNode(), src, []string{"ns/a"})
	if len(third.Services) != 1 || third.Services[0].Name != "b" || !slices.Equal(ch.Keys, []string{"ns/a"}) {
		t.Errorf("after deleting a: %d Services, %+v; want only b, ns/a changed", len(third.Services), ch)
	}
	n := testServiceNode()
	n.Datapath = DatapathSystem
	if _, ch, _ := b.Update(n, src, nil); !ch.Full {
		t.Errorf("new node facts did not rebuild everything")
	}
	n.Datapath = "bogus"
	if _, _, err := b.Update(n, src, nil); err == nil {
		t.Errorf("invalid node facts were accepted")
	}
}
