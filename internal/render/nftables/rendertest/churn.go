package rendertest

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/vxflow/vxflow/internal/model"
)

// Churn changes a ServiceSet at random, one step at a time, so that tests can check that incremental
// renders and syncs end where fresh ones do. Besides endpoint and Service changes it makes Services claim
// the same keys (a shared ClusterIP, ExternalIP or NodePort), which the table can hold only once.
type Churn struct {
	rnd  *rand.Rand
	next int
}

// NewChurn returns a Churn whose steps depend only on seed.
func NewChurn(seed uint64) *Churn {
	return &Churn{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// ChurnSet returns n small Services (one or two ports, two or three endpoints) for a Churn to change.
func (c *Churn) ChurnSet(n int) *model.ServiceSet {
	set := &model.ServiceSet{Node: Node()}
	for range n {
		set.Services = append(set.Services, c.newService())
	}
	SortServices(set)
	return set
}

// Step applies one random change to set and describes it. The set stays sorted and valid for the
// renderer, but may hold the same ClusterIP, ExternalIP or NodePort twice, as a misconfigured cluster can.
func (c *Churn) Step(set *model.ServiceSet) string {
	r := c.rnd
	if len(set.Services) == 0 {
		set.Services = append(set.Services, c.newService())
		return "added the first Service"
	}
	i := r.IntN(len(set.Services))
	s := &set.Services[i]
	p := &s.Ports[r.IntN(len(s.Ports))]
	var what string
	switch op := r.IntN(12); op {
	case 0, 1, 2:
		if len(p.Endpoints) == 0 {
			p.Endpoints = append(p.Endpoints, c.endpoint())
		} else {
			p.Endpoints[r.IntN(len(p.Endpoints))] = c.endpoint()
		}
		what = "replaced an endpoint"
	case 3:
		p.Endpoints = append(p.Endpoints, c.endpoint())
		what = "added an endpoint"
	case 4:
		if len(p.Endpoints) > 0 {
			j := r.IntN(len(p.Endpoints))
			p.Endpoints = slices.Delete(p.Endpoints, j, j+1)
		}
		what = "removed an endpoint"
	case 5:
		set.Services = slices.Delete(set.Services, i, i+1)
		return fmt.Sprintf("deleted Service %d", i)
	case 6:
		set.Services = append(set.Services, c.newService())
		what = "added a Service"
	case 7:
		o := &set.Services[r.IntN(len(set.Services))]
		s.ClusterIP = o.ClusterIP
		what = "shared a ClusterIP"
	case 8:
		s.ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 50, byte(1 + r.IntN(3))})}
		if r.IntN(3) == 0 {
			s.ExternalIPs = nil
		}
		what = "set ExternalIPs"
	case 9:
		p.NodePort = uint16(30000 + r.IntN(4))
		if r.IntN(3) == 0 {
			p.NodePort = 0
		}
		what = "set a NodePort"
	case 10:
		if len(p.Endpoints) > 0 {
			e := &p.Endpoints[r.IntN(len(p.Endpoints))]
			e.Ready, e.Terminating = !e.Ready, e.Ready
			e.Serving = e.Ready || r.IntN(2) == 0
		}
		what = "toggled an endpoint's readiness"
	case 11:
		switch r.IntN(4) {
		case 0:
			s.ExternalPolicyLocal = !s.ExternalPolicyLocal
		case 1:
			s.InternalPolicyLocal = !s.InternalPolicyLocal
		case 2:
			s.AffinityTimeout = time.Duration(r.IntN(2)) * 3 * time.Hour
		default:
			s.LoadBalancerIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, 60, byte(1 + r.IntN(3))})}
			s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
		}
		what = "changed a policy"
	}
	for j := range s.Ports {
		sortEndpoints(&s.Ports[j])
	}
	SortServices(set)
	return what
}

// newService returns a Service with a new name, one or two ports and two or three endpoints per port.
func (c *Churn) newService() model.Service {
	r := c.rnd
	c.next++
	s := model.Service{
		// "ns" and "ns-1": a namespace that is another's prefix orders differently as "namespace/name" text.
		Namespace: [...]string{"ns", "ns-1", "ns-2"}[r.IntN(3)],
		Name:      fmt.Sprintf("churn-%d", c.next),
		ClusterIP: netip.AddrFrom4([4]byte{172, 30, byte(c.next / 250), byte(c.next%250 + 1)}),
	}
	for j := range 1 + r.IntN(2) {
		p := model.ServicePort{Name: fmt.Sprintf("p%d", j), Protocol: []model.L4Proto{model.L4ProtoTCP, model.L4ProtoUDP}[r.IntN(2)],
			Port: uint16(80 + j)}
		for range 2 + r.IntN(2) {
			p.Endpoints = append(p.Endpoints, c.endpoint())
		}
		sortEndpoints(&p)
		s.Ports = append(s.Ports, p)
	}
	return s
}

// endpoint returns a ready endpoint at a random pod address, on node1 or node2.
func (c *Churn) endpoint() model.Endpoint {
	r := c.rnd
	return model.Endpoint{
		Addr:     netip.AddrFrom4([4]byte{10, 128, byte(r.IntN(4)), byte(1 + r.IntN(250))}),
		Port:     uint16(8080 + r.IntN(2)),
		NodeName: []string{"node1", "node2"}[r.IntN(2)],
		Ready:    true, Serving: true,
	}
}

// sortEndpoints restores the model's order of a port's endpoints (by address and port, no duplicates).
func sortEndpoints(p *model.ServicePort) {
	key := func(a, b model.Endpoint) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	}
	slices.SortFunc(p.Endpoints, key)
	p.Endpoints = slices.CompactFunc(p.Endpoints, func(a, b model.Endpoint) bool { return key(a, b) == 0 })
}

// SortServices restores the model's order of Services (by namespace, then name).
func SortServices(set *model.ServiceSet) {
	slices.SortFunc(set.Services, func(a, b model.Service) int { return model.CompareServices(&a, &b) })
}
