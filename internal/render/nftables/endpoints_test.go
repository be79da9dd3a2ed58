package nftables

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/vxflow/vxflow/internal/model"
)

func TestCategorize(t *testing.T) {
	ep := func(last byte, node string, ready, serving, terminating bool) model.Endpoint {
		return model.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 128, 0, last}), Port: 80, NodeName: node,
			Ready: ready, Serving: serving, Terminating: terminating}
	}
	readyLocal, readyRemote := ep(1, "node1", true, true, false), ep(2, "node2", true, true, false)
	termLocal, termRemote := ep(3, "node1", false, true, true), ep(4, "node2", false, true, true)
	notServing := ep(5, "node1", false, false, true)
	nodePort := model.ServicePort{NodePort: 30000}
	tests := []struct {
		name                      string
		svc                       model.Service
		port                      model.ServicePort
		eps                       []model.Endpoint
		cluster, local, reachable []model.Endpoint
		hasAny                    bool
	}{
		{"cluster policy uses ready endpoints", model.Service{}, model.ServicePort{},
			[]model.Endpoint{readyLocal, readyRemote, termRemote}, []model.Endpoint{readyLocal, readyRemote}, nil,
			[]model.Endpoint{readyLocal, readyRemote}, true},
		{"no ready: serving and terminating", model.Service{}, model.ServicePort{},
			[]model.Endpoint{termLocal, termRemote, notServing}, []model.Endpoint{termLocal, termRemote}, nil,
			[]model.Endpoint{termLocal, termRemote}, true},
		{"nothing usable", model.Service{}, model.ServicePort{}, []model.Endpoint{notServing}, nil, nil, nil, false},
		{"internal Local", model.Service{InternalPolicyLocal: true}, model.ServicePort{},
			[]model.Endpoint{readyLocal, readyRemote}, nil, []model.Endpoint{readyLocal}, []model.Endpoint{readyLocal}, true},
		{"internal Local, only remote endpoints", model.Service{InternalPolicyLocal: true}, model.ServicePort{},
			[]model.Endpoint{readyRemote}, nil, nil, nil, true},
		{"external Local keeps cluster endpoints for short-circuits", model.Service{ExternalPolicyLocal: true}, nodePort,
			[]model.Endpoint{readyLocal, readyRemote}, []model.Endpoint{readyLocal, readyRemote}, []model.Endpoint{readyLocal},
			[]model.Endpoint{readyLocal, readyRemote}, true},
		{"external Local, local only terminating", model.Service{ExternalPolicyLocal: true}, nodePort,
			[]model.Endpoint{termLocal, readyRemote}, []model.Endpoint{readyRemote}, []model.Endpoint{termLocal},
			[]model.Endpoint{termLocal, readyRemote}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.port
			p.Endpoints = tc.eps
			got := categorize(&tc.svc, &p, "node1")
			want := endpointSets{cluster: tc.cluster, local: tc.local, reachable: tc.reachable, hasAny: tc.hasAny}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}
