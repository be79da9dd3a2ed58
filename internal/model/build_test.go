package model

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func makeTestClusterNetwork(mutate ...func(*v1alpha1.ClusterNetwork)) *v1alpha1.ClusterNetwork {
	cn := &v1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
		Spec: v1alpha1.ClusterNetworkSpec{
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
			ServiceNetwork:  "172.30.0.0/16",
			VXLANPort:       4789,
			Mode:            v1alpha1.NetworkModeSubnet,
		},
	}
	for _, m := range mutate {
		m(cn)
	}
	return cn
}

// makeTestHostSubnet builds a HostSubnet created age minutes after epoch (so lower is older).
func makeTestHostSubnet(name, hostIP, subnet string, age int, mutate ...func(*v1alpha1.HostSubnet)) v1alpha1.HostSubnet {
	hs := v1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			UID:               types.UID("uid-" + name),
			Generation:        1,
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute)),
		},
		Spec: v1alpha1.HostSubnetSpec{Host: name, HostIP: hostIP, Subnet: subnet},
	}
	for _, m := range mutate {
		m(&hs)
	}
	return hs
}

func makeTestPod(ns, name, ip string, ofport int32) LocalPod {
	return LocalPod{Namespace: ns, Name: name, SandboxID: "sb-" + name, IP: netip.MustParseAddr(ip), OFPort: ofport}
}

// makeTestInput is node1 (192.168.100.1, 10.128.0.0/23) with node2 and node3 and two pods.
func makeTestInput(mutate ...func(*NodeInput)) NodeInput {
	in := NodeInput{
		ClusterNetwork: makeTestClusterNetwork(),
		HostSubnets: []v1alpha1.HostSubnet{
			makeTestHostSubnet("node3", "192.168.100.3", "10.128.4.0/23", 3),
			makeTestHostSubnet("node1", "192.168.100.1", "10.128.0.0/23", 1),
			makeTestHostSubnet("node2", "192.168.100.2", "10.128.2.0/23", 2),
		},
		NodeName: "node1",
		Facts:    NodeFacts{NodeIP: netip.MustParseAddr("192.168.100.1"), UnderlayMTU: 1500, Datapath: DatapathNetdev},
		Pods: []LocalPod{
			makeTestPod("ns2", "b", "10.128.0.3", 4),
			makeTestPod("ns1", "a", "10.128.0.2", 3),
		},
	}
	for _, m := range mutate {
		m(&in)
	}
	return in
}

func ptr[T any](v T) *T { return &v }

func TestBuildNodeViewValid(t *testing.T) {
	v, err := BuildNodeView(makeTestInput())
	if err != nil {
		t.Fatalf("BuildNodeView() error = %v", err)
	}
	want := &NodeView{
		NodeName:             "node1",
		NodeIP:               netip.MustParseAddr("192.168.100.1"),
		HostSubnetUID:        "uid-node1",
		HostSubnetGeneration: 1,
		Datapath:             DatapathNetdev,
		Mode:                 ModeSubnet,
		ClusterNetworks:      []ClusterCIDR{{CIDR: netip.MustParsePrefix("10.128.0.0/14"), HostPrefix: 23}},
		ServiceNetwork:       netip.MustParsePrefix("172.30.0.0/16"),
		VXLANPort:            4789,
		MTU:                  1450,
		UnderlayMTU:          1500,
		Subnet:               netip.MustParsePrefix("10.128.0.0/23"),
		Gateway:              netip.MustParseAddr("10.128.0.1"),
		RemoteNodes: []RemoteNode{
			{Name: "node2", UID: "uid-node2", HostIP: netip.MustParseAddr("192.168.100.2"), Subnet: netip.MustParsePrefix("10.128.2.0/23")},
			{Name: "node3", UID: "uid-node3", HostIP: netip.MustParseAddr("192.168.100.3"), Subnet: netip.MustParsePrefix("10.128.4.0/23")},
		},
		LocalPods: []LocalPod{
			{Namespace: "ns1", Name: "a", SandboxID: "sb-a", IP: netip.MustParseAddr("10.128.0.2"), MAC: net.HardwareAddr{0x0a, 0x58, 10, 128, 0, 2}, OFPort: 3},
			{Namespace: "ns2", Name: "b", SandboxID: "sb-b", IP: netip.MustParseAddr("10.128.0.3"), MAC: net.HardwareAddr{0x0a, 0x58, 10, 128, 0, 3}, OFPort: 4},
		},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("BuildNodeView() =\n%+v\nwant\n%+v", v, want)
	}
}

func TestBuildNodeViewSettings(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(*NodeInput)
		wantMTU  int
		wantPort uint16
	}{
		{name: "mtu derived from the underlay", mutate: func(in *NodeInput) { in.Facts.UnderlayMTU = 9000 }, wantMTU: 8950, wantPort: 4789},
		{name: "mtu from the spec", mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.MTU = ptr(int32(1400)) }, wantMTU: 1400, wantPort: 4789},
		{name: "mtu from the spec, exactly what the underlay carries", mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.MTU = ptr(int32(1450)) }, wantMTU: 1450, wantPort: 4789},
		{name: "vxlan port defaulted", mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.VXLANPort = 0 }, wantMTU: 1450, wantPort: 4789},
		{name: "vxlan port set", mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.VXLANPort = 4790 }, wantMTU: 1450, wantPort: 4790},
		{name: "mode defaulted", mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.Mode = "" }, wantMTU: 1450, wantPort: 4789},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := BuildNodeView(makeTestInput(tt.mutate))
			if err != nil {
				t.Fatalf("BuildNodeView() error = %v", err)
			}
			if v.MTU != tt.wantMTU || v.VXLANPort != tt.wantPort || v.Mode != ModeSubnet {
				t.Errorf("MTU, VXLANPort, Mode = %d, %d, %q; want %d, %d, %q", v.MTU, v.VXLANPort, v.Mode, tt.wantMTU, tt.wantPort, ModeSubnet)
			}
		})
	}
}

func TestBuildNodeViewFatal(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*NodeInput)
		want   string
	}{
		{
			name:   "no cluster network",
			mutate: func(in *NodeInput) { in.ClusterNetwork = nil },
			want:   `clusterNetwork: missing: the ClusterNetwork "default" does not exist yet`,
		},
		{
			name:   "no cluster CIDRs",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.ClusterNetworks = nil },
			want:   "clusterNetwork.spec.clusterNetworks: at least one cluster network is required",
		},
		{
			name:   "cluster CIDR not canonical",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.ClusterNetworks[0].CIDR = "10.128.0.1/14" },
			want:   "clusterNetwork.spec.clusterNetworks[0].cidr: 10.128.0.1/14 is not canonical: did you mean 10.128.0.0/14?",
		},
		{
			name:   "cluster CIDR IPv6",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.ClusterNetworks[0].CIDR = "fd00::/48" },
			want:   "clusterNetwork.spec.clusterNetworks[0].cidr: fd00::/48 is not IPv4",
		},
		{
			name:   "cluster CIDR garbage",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.ClusterNetworks[0].CIDR = "ten" },
			want:   `clusterNetwork.spec.clusterNetworks[0].cidr: "ten" is not a CIDR`,
		},
		{
			name:   "hostPrefix not longer than the CIDR",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.ClusterNetworks[0].HostPrefix = 14 },
			want:   "clusterNetwork.spec.clusterNetworks[0].hostPrefix: 14 must be longer than /14 and at most 30",
		},
		{
			name: "cluster CIDRs overlap",
			mutate: func(in *NodeInput) {
				in.ClusterNetwork.Spec.ClusterNetworks = append(in.ClusterNetwork.Spec.ClusterNetworks,
					v1alpha1.ClusterNetworkEntry{CIDR: "10.130.0.0/16", HostPrefix: 24})
			},
			want: "clusterNetwork.spec.clusterNetworks[1].cidr: 10.130.0.0/16 overlaps cluster network 10.128.0.0/14",
		},
		{
			name:   "service network overlaps",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.ServiceNetwork = "10.131.0.0/16" },
			want:   "clusterNetwork.spec.serviceNetwork: 10.131.0.0/16 overlaps cluster network 10.128.0.0/14",
		},
		{
			name:   "bad vxlan port",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.VXLANPort = 70000 },
			want:   "clusterNetwork.spec.vxlanPort: 70000 is not a UDP port (1-65535)",
		},
		{
			name:   "unknown mode",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.Mode = "Multitenant" },
			want:   `clusterNetwork.spec.mode: "Multitenant" is not supported: only Subnet exists`,
		},
		{
			name:   "spec mtu too large for the underlay",
			mutate: func(in *NodeInput) { in.ClusterNetwork.Spec.MTU = ptr(int32(1450)); in.Facts.UnderlayMTU = 1400 },
			want:   "clusterNetwork.spec.mtu: 1450 needs an underlay MTU of at least 1500, but this node's underlay MTU is 1400",
		},
		{
			name:   "underlay too small for any pod MTU",
			mutate: func(in *NodeInput) { in.Facts.UnderlayMTU = 600 },
			want:   "facts.underlayMTU: 600 is too small: the pod MTU would be 550, below the minimum 576",
		},
		{
			name:   "underlay MTU unknown",
			mutate: func(in *NodeInput) { in.Facts.UnderlayMTU = 0 },
			want:   "facts.underlayMTU: 0: must be positive",
		},
		{
			name:   "datapath unknown",
			mutate: func(in *NodeInput) { in.Facts.Datapath = "dpdk" },
			want:   `facts.datapath: "dpdk" is not a datapath type: use system or netdev`,
		},
		{
			name:   "node IP missing",
			mutate: func(in *NodeInput) { in.Facts.NodeIP = netip.Addr{} },
			want:   "facts.nodeIP: required",
		},
		{
			name:   "node IP inside the pod network",
			mutate: func(in *NodeInput) { in.Facts.NodeIP = netip.MustParseAddr("10.129.0.1") },
			want:   "facts.nodeIP: 10.129.0.1 is inside cluster network 10.128.0.0/14",
		},
		{
			name:   "node name missing",
			mutate: func(in *NodeInput) { in.NodeName = "" },
			want:   "nodeName: required",
		},
		{
			name:   "own HostSubnet missing",
			mutate: func(in *NodeInput) { in.NodeName = "node9" },
			want:   "hostSubnets[node9]: missing: the controller has not allocated a subnet to this node yet",
		},
		{
			name: "own HostSubnet has another hostIP",
			mutate: func(in *NodeInput) {
				in.Facts.NodeIP = netip.MustParseAddr("192.168.100.9")
			},
			want: "hostSubnets[node1].spec.hostIP: 192.168.100.1 is not this node's IP 192.168.100.9: waiting for the controller to update it",
		},
		{
			name: "own HostSubnet outside the cluster networks",
			mutate: func(in *NodeInput) {
				in.HostSubnets[1].Spec.Subnet = "10.200.0.0/23"
			},
			want: "hostSubnets[node1].spec.subnet: 10.200.0.0/23 is not inside any cluster network",
		},
		{
			name: "own HostSubnet twice",
			mutate: func(in *NodeInput) {
				in.HostSubnets = append(in.HostSubnets, makeTestHostSubnet("node1", "192.168.100.1", "10.128.8.0/23", 9))
			},
			want: "hostSubnets[node1]: duplicate HostSubnet for this node",
		},
		{
			name: "several problems at once",
			mutate: func(in *NodeInput) {
				in.ClusterNetwork.Spec.ServiceNetwork = "172.30.0.0/33"
				in.Facts.Datapath = ""
			},
			want: `clusterNetwork.spec.serviceNetwork: "172.30.0.0/33" is not a CIDR; facts.datapath: "" is not a datapath type: use system or netdev`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := BuildNodeView(makeTestInput(tt.mutate))
			if err == nil {
				t.Fatalf("BuildNodeView() = %+v, want error %q", v, tt.want)
			}
			if v != nil {
				t.Errorf("BuildNodeView() returned a view with error %v", err)
			}
			if err.Error() != tt.want {
				t.Errorf("BuildNodeView() error =\n%s\nwant\n%s", err, tt.want)
			}
			if !IsInvalidInput(err) {
				t.Errorf("IsInvalidInput(%v) = false", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path == "" {
				t.Errorf("errors.As(%v, *FieldError) found no field path", err)
			}
		})
	}
}

func TestBuildNodeViewSkipped(t *testing.T) {
	tests := []struct {
		name        string
		mutate      func(*NodeInput)
		wantRemotes []string
		wantPods    []string
		wantSkipped []string
	}{
		{
			name: "newer overlapping subnet loses",
			mutate: func(in *NodeInput) {
				in.HostSubnets[0].Spec.Subnet = "10.128.2.0/23" // node3, now older than node2
				in.HostSubnets[0].CreationTimestamp = metav1.NewTime(epoch)
			},
			wantRemotes: []string{"node3"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{"hostSubnets[node2].spec.subnet: 10.128.2.0/23 overlaps node3's 10.128.2.0/23"},
		},
		{
			name: "equal age: the first name wins",
			mutate: func(in *NodeInput) {
				in.HostSubnets[0].Spec.HostIP = "192.168.100.2"
				in.HostSubnets[0].CreationTimestamp = in.HostSubnets[2].CreationTimestamp
			},
			wantRemotes: []string{"node2"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{"hostSubnets[node3].spec.hostIP: 192.168.100.2 is already node2's hostIP"},
		},
		{
			name: "remote overlaps this node",
			mutate: func(in *NodeInput) {
				in.HostSubnets[2].Spec.Subnet = "10.128.0.0/23"
				in.HostSubnets[2].CreationTimestamp = metav1.NewTime(epoch.Add(-time.Hour))
			},
			wantRemotes: []string{"node3"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{"hostSubnets[node2].spec.subnet: 10.128.0.0/23 overlaps this node's (node1) subnet 10.128.0.0/23"},
		},
		{
			name: "the same name twice: the newer copy loses",
			mutate: func(in *NodeInput) {
				in.HostSubnets = append(in.HostSubnets, makeTestHostSubnet("node2", "192.168.100.22", "10.128.22.0/23", 22))
			},
			wantRemotes: []string{"node2", "node3"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{"hostSubnets[node2]: duplicate HostSubnet name"},
		},
		{
			name:        "remote claims this node's IP",
			mutate:      func(in *NodeInput) { in.HostSubnets[2].Spec.HostIP = "192.168.100.1" },
			wantRemotes: []string{"node3"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{"hostSubnets[node2].spec.hostIP: 192.168.100.1 is this node's (node1) IP"},
		},
		{
			name: "invalid remotes",
			mutate: func(in *NodeInput) {
				in.HostSubnets[2].Spec.HostIP = "192.168.100.256"
				in.HostSubnets[0].Spec.Subnet = "10.128.4.0/24"
				in.HostSubnets = append(in.HostSubnets,
					makeTestHostSubnet("node4", "127.0.0.1", "10.128.6.0/23", 4),
					makeTestHostSubnet("node5", "192.168.100.5", "10.128.8.0/23", 5, func(hs *v1alpha1.HostSubnet) { hs.Spec.Host = "other" }),
					makeTestHostSubnet("node6", "172.30.0.6", "10.128.10.0/23", 6),
					makeTestHostSubnet("node7", "192.168.100.7", "10.128.12.1/23", 7),
					makeTestHostSubnet("node8", "192.168.100.8", "10.128.14.0/23", 8),
				)
			},
			wantRemotes: []string{"node8"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{
				`hostSubnets[node3].spec.subnet: 10.128.4.0/24 is not a /23, the hostPrefix of cluster network 10.128.0.0/14`,
				`hostSubnets[node2].spec.hostIP: "192.168.100.256" is not an IP address`,
				`hostSubnets[node4].spec.hostIP: 127.0.0.1 cannot carry VXLAN: not a unicast node address`,
				`hostSubnets[node5].spec.host: "other" must equal the HostSubnet name "node5"`,
				`hostSubnets[node6].spec.hostIP: 172.30.0.6 is inside the service network 172.30.0.0/16`,
				`hostSubnets[node7].spec.subnet: 10.128.12.1/23 is not canonical: did you mean 10.128.12.0/23?`,
			},
		},
		{
			name: "invalid pods",
			mutate: func(in *NodeInput) {
				bad := func(p LocalPod, f func(*LocalPod)) LocalPod { f(&p); return p }
				in.Pods = append(in.Pods,
					makeTestPod("ns", "outside", "10.128.2.5", 10),
					makeTestPod("ns", "network", "10.128.0.0", 11),
					makeTestPod("ns", "gateway", "10.128.0.1", 12),
					makeTestPod("ns", "broadcast", "10.128.1.255", 13),
					bad(makeTestPod("ns", "mac", "10.128.0.20", 14), func(p *LocalPod) { p.MAC = net.HardwareAddr{0x0a, 0x58, 1, 2, 3, 4} }),
					makeTestPod("ns", "tun0port", "10.128.0.21", 2),
					bad(makeTestPod("ns", "vnid", "10.128.0.22", 16), func(p *LocalPod) { p.VNID = 7 }),
					makeTestPod("", "nameless", "10.128.0.23", 17),
					bad(makeTestPod("ns", "noip", "10.128.0.24", 18), func(p *LocalPod) { p.IP = netip.Addr{} }),
					bad(makeTestPod("ns", "goodmac", "10.128.1.254", 19), func(p *LocalPod) { p.MAC = PodMAC(p.IP) }),
				)
			},
			wantRemotes: []string{"node2", "node3"},
			wantPods:    []string{"ns/goodmac", "ns1/a", "ns2/b"},
			wantSkipped: []string{
				"pods[ns/outside].ip: 10.128.2.5 is not inside this node's subnet 10.128.0.0/23",
				"pods[ns/network].ip: 10.128.0.0 is the subnet's network address",
				"pods[ns/gateway].ip: 10.128.0.1 is the node's gateway address",
				"pods[ns/broadcast].ip: 10.128.1.255 is the subnet's broadcast address",
				"pods[ns/mac].mac: 0a:58:01:02:03:04 is not 0a:58:0a:80:00:14, the MAC derived from the pod IP",
				"pods[ns/tun0port].ofport: 2 is not a pod port (3-65279)",
				"pods[ns/vnid].vnid: 7: Subnet mode carries only VNID 0",
				"pods[9]: namespace and name are required",
				"pods[ns/noip].ip: required",
			},
		},
		{
			name: "pods sharing an IP, a port or a name are all left out",
			mutate: func(in *NodeInput) {
				in.Pods = append(in.Pods,
					makeTestPod("ns", "dupip1", "10.128.0.50", 50),
					makeTestPod("ns", "dupip2", "10.128.0.50", 51),
					makeTestPod("ns", "dupport1", "10.128.0.60", 60),
					makeTestPod("ns", "dupport2", "10.128.0.61", 60),
					makeTestPod("ns", "dupname", "10.128.0.70", 70),
					makeTestPod("ns", "dupname", "10.128.0.71", 71),
				)
			},
			wantRemotes: []string{"node2", "node3"},
			wantPods:    []string{"ns1/a", "ns2/b"},
			wantSkipped: []string{
				"pods[ns/dupip1].ip: 10.128.0.50 is used by 2 pods",
				"pods[ns/dupip2].ip: 10.128.0.50 is used by 2 pods",
				"pods[ns/dupport1].ofport: 60 is used by 2 pods",
				"pods[ns/dupport2].ofport: 60 is used by 2 pods",
				"pods[ns/dupname]: 2 pods have this name",
				"pods[ns/dupname]: 2 pods have this name",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := BuildNodeView(makeTestInput(tt.mutate))
			if err != nil {
				t.Fatalf("BuildNodeView() error = %v", err)
			}
			var remotes, pods, skipped []string
			for _, n := range v.RemoteNodes {
				remotes = append(remotes, n.Name)
			}
			for _, p := range v.LocalPods {
				pods = append(pods, p.Key())
			}
			for _, s := range v.Skipped {
				skipped = append(skipped, s.Error())
			}
			if !reflect.DeepEqual(remotes, tt.wantRemotes) {
				t.Errorf("RemoteNodes = %q, want %q", remotes, tt.wantRemotes)
			}
			if !reflect.DeepEqual(pods, tt.wantPods) {
				t.Errorf("LocalPods = %q, want %q", pods, tt.wantPods)
			}
			if !reflect.DeepEqual(skipped, tt.wantSkipped) {
				t.Errorf("Skipped =\n%q\nwant\n%q", skipped, tt.wantSkipped)
			}
		})
	}
}

func TestPodMAC(t *testing.T) {
	tests := []struct {
		ip   string
		want string
	}{
		{ip: "10.128.2.5", want: "0a:58:0a:80:02:05"},
		{ip: "192.168.255.1", want: "0a:58:c0:a8:ff:01"},
		{ip: "0.0.0.0", want: "0a:58:00:00:00:00"},
		{ip: "fd00::1", want: ""},
	}
	for _, tt := range tests {
		if got := PodMAC(netip.MustParseAddr(tt.ip)).String(); got != tt.want {
			t.Errorf("PodMAC(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}
