package rendertest

import (
	"fmt"
	"net/netip"

	"github.com/vxflow/vxflow/internal/model"
)

// ScaleSet returns a ServiceSet of n ClusterIP Services (ns-<i/1000>/svc-<i>, 172.30.x.y:80/TCP) with eps
// ready endpoints each (10.128.a.b:8080, alternating between node1 and node2), for benchmarks.
func ScaleSet(n, eps int) *model.ServiceSet {
	set := &model.ServiceSet{Node: Node(func(sn *model.ServiceNode) { sn.MasqueradeMark = model.DefaultMasqueradeMark })}
	ip := 0
	for i := range n {
		svc := model.Service{
			Namespace: fmt.Sprintf("ns-%d", i/1000),
			Name:      fmt.Sprintf("svc-%d", i),
			ClusterIP: netip.AddrFrom4([4]byte{172, 30, byte(i / 250), byte(i%250 + 1)}),
		}
		p := model.ServicePort{Name: "http", Protocol: model.L4ProtoTCP, Port: 80}
		for j := range eps {
			p.Endpoints = append(p.Endpoints, model.Endpoint{
				Addr: netip.AddrFrom4([4]byte{10, byte(128 + ip/65536), byte(ip / 256 % 256), byte(ip % 256)}),
				Port: 8080, NodeName: []string{"node1", "node2"}[j%2], Ready: true, Serving: true,
			})
			ip++
		}
		svc.Ports = []model.ServicePort{p}
		set.Services = append(set.Services, svc)
	}
	SortServices(set) // the model's order: svc-10 comes before svc-2

	return set
}
