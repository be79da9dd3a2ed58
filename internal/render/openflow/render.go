package openflow

import (
	"errors"
	"net/netip"

	"github.com/vxflow/vxflow/internal/model"
)

// Render returns br0's complete desired flow set for view: every flow the node needs and nothing else,
// sorted, with one flow per Key. It fails only for a view that BuildNodeView would not produce (nil, or
// objects whose flows collide), never for anything the API can contain.
func Render(view *model.NodeView) (FlowSet, error) {
	if view == nil {
		return nil, errors.New("failed to render flows: no node view")
	}
	var fs FlowSet
	fs = append(fs, nodeFlows(view)...)
	for _, n := range view.RemoteNodes {
		fs = append(fs, remoteNodeFlows(n)...)
	}
	for _, p := range view.LocalPods {
		fs = append(fs, podFlows(view, p)...)
	}
	fs.Sort()
	if err := fs.CheckUnique(); err != nil {
		return nil, err
	}
	return fs, nil
}

// flow builds one Flow.
func flow(t Table, priority uint16, cookie uint64, m match, acts string) Flow {
	return Flow{Table: t.ID, Priority: priority, Cookie: cookie, Match: m.String(), Actions: acts}
}

// conntrackReplies reports whether the datapath shares the host's conntrack, so that OVS can un-NAT
// replies of host-DNATed service traffic itself (OpenShift SDN's way). On the userspace datapath OVS has a
// conntrack of its own; the host masquerades service traffic instead and the replies return via tun0.
func conntrackReplies(v *model.NodeView) bool {
	return v.Datapath == model.DatapathSystem
}

// nodeFlows are the flows that depend only on the ClusterNetwork and this node's subnet.
func nodeFlows(v *model.NodeView) []Flow {
	c := NodeCookie()
	gw := host(v.Gateway)
	multicast := netip.MustParsePrefix(multicastRange)
	fromTunnel := actions(moveTunIDToReg(SourceVNIDReg), gotoTable(VXLANIngressTable))
	var fs []Flow
	add := func(t Table, prio uint16, m match, acts string) { fs = append(fs, flow(t, prio, c, m, acts)) }

	// Classifier.
	if conntrackReplies(v) {
		add(ClassifierTable, prioConntrack, match{ctState: "-trk", proto: "ip"}, conntrack(ClassifierTable))
	}
	for _, cn := range v.ClusterNetworks {
		add(ClassifierTable, prioFromTunnel, match{proto: "arp", inPort: VXLANOFPort, nwSrc: cn.CIDR, nwDst: v.Subnet}, fromTunnel)
		add(ClassifierTable, prioFromTunnel, match{proto: "ip", inPort: VXLANOFPort, nwSrc: cn.CIDR}, fromTunnel)
		add(ClassifierTable, prioFromTunnel, match{proto: "ip", inPort: VXLANOFPort, nwDst: cn.CIDR}, fromTunnel)
		add(ClassifierTable, prioFromTunnel, match{proto: "arp", inPort: TunOFPort, nwSrc: gw, nwDst: cn.CIDR}, gotoTable(RoutingTable))
		if conntrackReplies(v) {
			add(ClassifierTable, prioDNATReturn, match{proto: "ip", inPort: TunOFPort, nwSrc: v.Subnet, nwDst: cn.CIDR}, gotoTable(DNATReturnTable))
		}
	}
	add(ClassifierTable, prioPortDrop, match{inPort: VXLANOFPort}, drop)
	add(ClassifierTable, prioFromGateway, match{proto: "ip", inPort: TunOFPort, nwSrc: gw}, gotoTable(RoutingTable))
	add(ClassifierTable, prioTunMulticast, match{proto: "ip", inPort: TunOFPort, nwDst: multicast}, drop)
	add(ClassifierTable, prioFromTunnel, match{proto: "ip", inPort: TunOFPort}, gotoTable(RoutingTable))
	add(ClassifierTable, prioPortDrop, match{inPort: TunOFPort}, drop)
	add(ClassifierTable, prioFromPod, match{proto: "arp"}, gotoTable(PodSpoofGuardTable))
	add(ClassifierTable, prioFromPod, match{proto: "ip"}, gotoTable(PodSpoofGuardTable))
	add(ClassifierTable, prioDefaultAction, match{}, drop)

	// VXLANIngress: the per-node accept flows are remote-node flows.
	add(VXLANIngressTable, prioDefaultAction, match{}, drop)

	// PodSpoofGuard: pods may not emit VXLAN (to anyone); the per-pod accept flows are pod flows.
	add(PodSpoofGuardTable, prioNoVXLANFromPods, match{proto: "udp", tpDst: v.VXLANPort}, drop)
	add(PodSpoofGuardTable, prioDefaultAction, match{}, drop)

	if conntrackReplies(v) {
		add(DNATReturnTable, prioDefaultAction, match{}, drop)
	}

	// Routing.
	add(RoutingTable, prioToGateway, match{proto: "arp", nwDst: gw}, output(TunOFPort))
	add(RoutingTable, prioToGateway, match{proto: "ip", nwDst: gw}, output(TunOFPort))
	if conntrackReplies(v) {
		add(RoutingTable, prioReplyUnNAT, match{ctState: "+rpl", proto: "ip", nwDst: v.Subnet}, conntrackNAT(LocalIPTable))
	}
	add(RoutingTable, prioToLocalSubnet, match{proto: "arp", nwDst: v.Subnet}, gotoTable(LocalARPTable))
	add(RoutingTable, prioToLocalSubnet, match{proto: "ip", nwDst: v.Subnet}, gotoTable(LocalIPTable))
	for _, cn := range v.ClusterNetworks {
		add(RoutingTable, prioToCluster, match{proto: "arp", nwDst: cn.CIDR}, gotoTable(RemoteARPTable))
		add(RoutingTable, prioToCluster, match{proto: "ip", nwDst: cn.CIDR}, gotoTable(RemoteIPTable))
	}
	add(RoutingTable, prioToCluster, match{proto: "ip", nwDst: v.ServiceNetwork}, gotoTable(ServicesTable))
	add(RoutingTable, prioMulticastDrop, match{proto: "ip", nwDst: multicast}, drop)
	add(RoutingTable, prioToEgress, match{proto: "ip"}, gotoTable(EgressTable))
	add(RoutingTable, prioDefaultAction, match{}, drop)

	add(LocalARPTable, prioDefaultAction, match{}, drop)
	add(RemoteARPTable, prioDefaultAction, match{}, drop)

	add(ServicesTable, prioService, match{proto: "ip", nwDst: v.ServiceNetwork}, output(TunOFPort))
	add(ServicesTable, prioDefaultAction, match{}, drop)

	add(LocalIPTable, prioDefaultAction, match{}, drop)

	// IngressIsolation: the node itself may always reach its pods; in Subnet mode everyone may.
	add(IngressIsolationTable, prioFromGatewayAllowed, match{proto: "ip", nwSrc: gw}, outputReg(DestPortReg))
	if v.Mode == model.ModeSubnet {
		add(IngressIsolationTable, prioSameVNID, match{}, outputReg(DestPortReg))
	}
	add(IngressIsolationTable, prioDefaultAction, match{}, drop)

	add(RemoteIPTable, prioDefaultAction, match{}, drop)

	add(EgressTable, prioDefaultAction, match{}, output(TunOFPort))

	add(VersionTable, prioDefaultAction, match{}, note(versionNote(v)))
	return fs
}

// versionNote is the content of table 253's note: mode, pipeline round (2 bytes) and datapath strategy, so
// that a person or a later agent can tell from a dump which pipeline a bridge runs.
func versionNote(v *model.NodeView) []byte {
	var mode, strategy byte
	switch v.Mode {
	case model.ModeSubnet:
		mode = 0
	}
	switch v.Datapath {
	case model.DatapathSystem:
		strategy = 1
	case model.DatapathNetdev:
		strategy = 2
	}
	return []byte{mode, byte(PipelineRound >> 8), byte(PipelineRound & 0xff), strategy}
}

// remoteNodeFlows accept VXLAN from node n and tunnel ARP and IP for its subnet to it, carrying the
// source VNID in tun_id.
func remoteNodeFlows(n model.RemoteNode) []Flow {
	c := RemoteNodeCookie(n.Subnet)
	tunnel := actions(moveRegToTunID(SourceVNIDReg), setTunDst(n.HostIP), output(VXLANOFPort))
	return []Flow{
		flow(VXLANIngressTable, prioRemoteNode, c, match{tunSrc: n.HostIP}, gotoTable(RoutingTable)),
		flow(RemoteARPTable, prioRemoteNode, c, match{proto: "arp", nwDst: n.Subnet}, tunnel),
		flow(RemoteIPTable, prioRemoteNode, c, match{proto: "ip", nwDst: n.Subnet}, tunnel),
	}
}

// podFlows let pod p send only from its own addresses and deliver ARP and IP for its address to its port.
func podFlows(v *model.NodeView, p model.LocalPod) []Flow {
	c := PodCookie(p.IP)
	ip := host(p.IP)
	fs := []Flow{
		flow(PodSpoofGuardTable, prioPod, c, match{proto: "arp", inPort: p.OFPort, dlSrc: p.MAC, nwSrc: ip, arpSha: p.MAC},
			actions(loadReg(p.VNID, SourceVNIDReg), gotoTable(RoutingTable))),
		flow(PodSpoofGuardTable, prioPod, c, match{proto: "ip", inPort: p.OFPort, dlSrc: p.MAC, nwSrc: ip},
			actions(loadReg(p.VNID, SourceVNIDReg), gotoTable(RoutingTable))),
		flow(LocalARPTable, prioPod, c, match{proto: "arp", nwDst: ip}, output(p.OFPort)),
		flow(LocalIPTable, prioPod, c, match{proto: "ip", nwDst: ip},
			actions(loadReg(p.VNID, DestVNIDReg), loadReg(uint32(p.OFPort), DestPortReg), gotoTable(IngressIsolationTable))),
	}
	if conntrackReplies(v) {
		fs = append(fs, flow(DNATReturnTable, prioPod, c, match{proto: "ip", nwSrc: ip},
			actions(loadReg(p.VNID, SourceVNIDReg), gotoTable(RoutingTable))))
	}
	return fs
}
