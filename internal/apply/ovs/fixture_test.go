package ovs

import (
	"fmt"
	"net/netip"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// This file is the tests' own flow fixture, shaped like the OpenShift SDN pipeline (openshift-sdn.md §4) and
// written in the canonical text ovs-ofctl dumps back, so the applier can be tested without the renderer.

// Cookie owners of the fixture: the high 32 bits say who owns the flow, the low ones which one.
const (
	fxNodeCookie   = 0x1_0000_0000
	fxRemoteCookie = 0x2_0000_0000
	fxPodCookie    = 0x3_0000_0000
)

// fxNode is a node of the fixture: its underlay IP and its pod subnet.
type fxNode struct {
	hostIP netip.Addr
	subnet netip.Prefix
}

// fxPod is a local pod: its IP, its ofport and its VNID.
type fxPod struct {
	ip     netip.Addr
	ofport int
	vnid   int
}

// fixture is one node's view of the cluster.
type fixture struct {
	cluster, service netip.Prefix
	local            fxNode
	remotes          []fxNode
	pods             []fxPod
}

// gateway is the local subnet's first address (tun0).
func (fx fixture) gateway() netip.Addr { return fx.local.subnet.Addr().Next() }

// podMAC is OpenShift SDN's pod MAC, 0a:58 followed by the IPv4 bytes.
func podMAC(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// flows returns the fixture's flows: 23 node-level ones, 3 per remote node and 5 per local pod.
func (fx fixture) flows() []openflow.Flow {
	c, l, gw := fx.cluster.String(), fx.local.subnet.String(), fx.gateway().String()
	n := func(table uint8, prio uint16, match, actions string) openflow.Flow {
		return openflow.Flow{Table: table, Priority: prio, Cookie: fxNodeCookie, Match: match, Actions: actions}
	}
	const fromTunnel = "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10"
	flows := []openflow.Flow{
		n(0, 200, "ip,in_port=1,nw_dst="+c, fromTunnel),
		n(0, 200, "arp,in_port=1,arp_spa="+c+",arp_tpa="+l, fromTunnel),
		n(0, 150, "in_port=1", "drop"),
		n(0, 200, "ip,in_port=2", "goto_table:30"),
		n(0, 200, "arp,in_port=2", "goto_table:30"),
		n(0, 150, "in_port=2", "drop"),
		n(0, 100, "ip", "goto_table:20"),
		n(0, 100, "arp", "goto_table:20"),
		n(0, 0, "", "drop"),
		n(10, 0, "", "drop"),
		n(20, 300, "udp,tp_dst=4789", "drop"),
		n(20, 0, "", "drop"),
		n(25, 0, "", "drop"),
		n(30, 300, "arp,arp_tpa="+gw, "output:2"),
		n(30, 300, "ip,nw_dst="+gw, "output:2"),
		n(30, 200, "arp,arp_tpa="+l, "goto_table:40"),
		n(30, 200, "ip,nw_dst="+l, "goto_table:70"),
		n(30, 100, "arp,arp_tpa="+c, "goto_table:50"),
		n(30, 100, "ip,nw_dst="+c, "goto_table:90"),
		n(30, 100, "ip,nw_dst="+fx.service.String(), "output:2"),
		n(30, 0, "ip", "output:2"),
		n(80, 200, "", "output:NXM_NX_REG2[]"),
		n(253, 0, "", "note:01.0d.00.00.00.00"),
	}
	for i, r := range fx.remotes {
		toNode := fmt.Sprintf("move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:%s->tun_dst,output:1", r.hostIP)
		ck := uint64(fxRemoteCookie | i)
		flows = append(flows,
			openflow.Flow{Table: 10, Priority: 100, Cookie: ck, Match: "tun_src=" + r.hostIP.String(), Actions: "goto_table:30"},
			openflow.Flow{Table: 50, Priority: 100, Cookie: ck, Match: "arp,arp_tpa=" + r.subnet.String(), Actions: toNode},
			openflow.Flow{Table: 90, Priority: 100, Cookie: ck, Match: "ip,nw_dst=" + r.subnet.String(), Actions: toNode},
		)
	}
	for i, p := range fx.pods {
		ck := uint64(fxPodCookie | i)
		ip, vnid := p.ip.String(), fmt.Sprintf("%#x", p.vnid)
		if p.vnid == 0 {
			vnid = "0"
		}
		flows = append(flows,
			openflow.Flow{Table: 20, Priority: 100, Cookie: ck, Match: fmt.Sprintf("ip,in_port=%d,nw_src=%s", p.ofport, ip),
				Actions: "load:" + vnid + "->NXM_NX_REG0[],goto_table:30"},
			openflow.Flow{Table: 20, Priority: 100, Cookie: ck, Match: fmt.Sprintf("arp,in_port=%d,arp_spa=%s,arp_sha=%s", p.ofport, ip, podMAC(p.ip)),
				Actions: "load:" + vnid + "->NXM_NX_REG0[],goto_table:30"},
			openflow.Flow{Table: 25, Priority: 100, Cookie: ck, Match: "ip,nw_src=" + ip,
				Actions: "load:" + vnid + "->NXM_NX_REG0[],goto_table:30"},
			openflow.Flow{Table: 40, Priority: 100, Cookie: ck, Match: "arp,arp_tpa=" + ip, Actions: fmt.Sprintf("output:%d", p.ofport)},
			openflow.Flow{Table: 70, Priority: 100, Cookie: ck, Match: "ip,nw_dst=" + ip,
				Actions: fmt.Sprintf("load:%s->NXM_NX_REG1[],load:%#x->NXM_NX_REG2[],goto_table:80", vnid, p.ofport)},
		)
	}
	return flows
}

// scaleFixture is a node of a large cluster: cluster 10.0.0.0/8 with /24 node subnets, the local node owns
// 10.0.0.0/24, remote node i owns 10.(1+i/256).(i%256).0/24 behind underlay IP 172.16.(i/250).(i%250+1).
func scaleFixture(remotes, pods int) fixture {
	fx := fixture{
		cluster: netip.MustParsePrefix("10.0.0.0/8"),
		service: netip.MustParsePrefix("172.30.0.0/16"),
		local:   fxNode{hostIP: netip.MustParseAddr("172.31.0.1"), subnet: netip.MustParsePrefix("10.0.0.0/24")},
	}
	for i := range remotes {
		fx.remotes = append(fx.remotes, remoteNode(i))
	}
	for j := range pods {
		fx.pods = append(fx.pods, fxPod{ip: netip.AddrFrom4([4]byte{10, 0, 0, byte(2 + j)}), ofport: 3 + j, vnid: j % 4})
	}
	return fx
}

// remoteNode is remote node i of scaleFixture.
func remoteNode(i int) fxNode {
	return fxNode{
		hostIP: netip.AddrFrom4([4]byte{172, 16, byte(i / 250), byte(i%250 + 1)}),
		subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24),
	}
}
