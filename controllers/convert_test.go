package controllers

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
)

func TestParseNetwork(t *testing.T) {
	tests := []struct {
		name    string
		spec    vxflowv1alpha1.ClusterNetworkSpec
		wantErr bool
	}{
		{name: "default", spec: testSpec("10.128.0.0/14", 23)},
		{name: "overlapping ranges", spec: testSpec("10.128.0.0/14", 23, "10.128.0.0/16", 24), wantErr: true},
		{name: "not a CIDR", spec: testSpec("10.128.0.0", 23), wantErr: true},
		{name: "hostPrefix too short", spec: testSpec("10.128.0.0/14", 14), wantErr: true},
		{name: "bad service network", spec: func() vxflowv1alpha1.ClusterNetworkSpec {
			s := testSpec("10.128.0.0/14", 23)
			s.ServiceNetwork = "x"
			return s
		}(), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := parseNetwork(&tt.spec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseNetwork() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (len(n.ranges) != len(tt.spec.ClusterNetworks) || !n.service.IsValid()) {
				t.Fatalf("parseNetwork() = %+v", n)
			}
		})
	}
}

func TestNodeIP(t *testing.T) {
	n, err := parseNetwork(&vxflowv1alpha1.ClusterNetworkSpec{
		ClusterNetworks: []vxflowv1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
		ServiceNetwork:  "172.30.0.0/16",
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := func(typ corev1.NodeAddressType, a string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: typ, Address: a}
	}
	tests := []struct {
		name    string
		addrs   []corev1.NodeAddress
		want    string
		wantWhy string
	}{
		{name: "plain", addrs: []corev1.NodeAddress{addr(corev1.NodeHostName, "n1"), addr(corev1.NodeInternalIP, "192.168.100.11")}, want: "192.168.100.11"},
		{name: "IPv6 first", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "fd00::1"), addr(corev1.NodeInternalIP, "192.168.100.12")}, want: "192.168.100.12"},
		{name: "ExternalIP only", addrs: []corev1.NodeAddress{addr(corev1.NodeExternalIP, "203.0.113.1")}, wantWhy: "no InternalIP"},
		{name: "none", wantWhy: "no InternalIP"},
		{name: "IPv6 only", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "fd00::1")}, wantWhy: "not IPv4"},
		{name: "garbage", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "node-1")}, wantWhy: "not an IP"},
		{name: "loopback", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "127.0.0.1")}, wantWhy: "cannot carry VXLAN"},
		{name: "link-local", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "169.254.1.1")}, wantWhy: "cannot carry VXLAN"},
		{name: "in the pod network", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "10.129.0.5")}, wantWhy: "cluster network 10.128.0.0/14"},
		{name: "in the service network", addrs: []corev1.NodeAddress{addr(corev1.NodeInternalIP, "172.30.0.5")}, wantWhy: "service network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := nodeIP(&corev1.Node{Status: corev1.NodeStatus{Addresses: tt.addrs}}, n)
			if tt.want != "" {
				if got != netip.MustParseAddr(tt.want) || why != "" {
					t.Fatalf("nodeIP() = %s, %q, want %s", got, why, tt.want)
				}
				return
			}
			if got.IsValid() || !strings.Contains(why, tt.wantWhy) {
				t.Fatalf("nodeIP() = %s, %q, want no address because %q", got, why, tt.wantWhy)
			}
		})
	}
}

func testSpec(pairs ...any) vxflowv1alpha1.ClusterNetworkSpec {
	s := vxflowv1alpha1.ClusterNetworkSpec{ServiceNetwork: "172.30.0.0/16"}
	for i := 0; i < len(pairs); i += 2 {
		s.ClusterNetworks = append(s.ClusterNetworks, vxflowv1alpha1.ClusterNetworkEntry{CIDR: pairs[i].(string), HostPrefix: int32(pairs[i+1].(int))})
	}
	return s
}
