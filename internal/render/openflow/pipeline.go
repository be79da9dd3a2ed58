package openflow

import (
	"fmt"
	"strconv"
)

// The bridge and its two fixed ports, as OpenShift SDN lays them out; pods get ofports from FirstPodOFPort on.
const (
	// BridgeName is the integration bridge every pod, vxlan0 and tun0 are attached to.
	BridgeName = "br0"
	// VXLANPortName is the flow-based VXLAN port (options remote_ip=flow, key=flow).
	VXLANPortName = "vxlan0"
	// VXLANOFPort is vxlan0's ofport; flows test in_port against it and output to it.
	VXLANOFPort = 1
	// TunPortName is the internal port that holds the node's gateway address.
	TunPortName = "tun0"
	// TunOFPort is tun0's ofport.
	TunOFPort = 2
)

// Table is one OpenFlow table of br0's pipeline; the set of them is declared once, in Pipeline.
type Table struct {
	// ID is the OpenFlow table number. The numbers are OpenShift SDN's, so that its documentation and
	// people's habits still apply.
	ID uint8
	// Name is the table's short name, used by the CLI's trace and in logs.
	Name string
	// Purpose says in one sentence what the table decides.
	Purpose string
}

// The tables of the pipeline. README.md walks through them with every flow.
var (
	// ClassifierTable sorts packets by ingress port: vxlan0, tun0 or a pod.
	ClassifierTable = Table{0, "Classifier", "classify by in_port: VXLAN from the cluster (tun_id copied to reg0), tun0 (the host), or pods; conntrack first on the system datapath"}
	// VXLANIngressTable accepts VXLAN only from known nodes.
	VXLANIngressTable = Table{10, "VXLANIngress", "accept VXLAN only from the hostIP (tun_src) of a known remote HostSubnet"}
	// PodSpoofGuardTable lets a pod send only from its own IP and MAC.
	PodSpoofGuardTable = Table{20, "PodSpoofGuard", "let a pod send IP and ARP only from its own IP and MAC (0a:58:<IPv4>), never VXLAN; load its VNID into reg0"}
	// DNATReturnTable re-tags a local pod's service traffic that comes back from the host after DNAT.
	DNATReturnTable = Table{25, "DNATReturn", "system datapath only: a local pod's packet back from tun0 after the host DNATed it; load the pod's VNID into reg0"}
	// RoutingTable decides where a packet goes by destination.
	RoutingTable = Table{30, "Routing", "route by destination: the gateway (tun0), a local pod, a remote subnet, the service network, or out via egress"}
	// LocalARPTable delivers ARP to local pods.
	LocalARPTable = Table{40, "LocalARP", "deliver ARP to the local pod that owns arp_tpa"}
	// RemoteARPTable tunnels ARP to the node that owns the target.
	RemoteARPTable = Table{50, "RemoteARP", "tunnel ARP for a remote subnet to its node: tun_id from reg0, tun_dst = hostIP, output vxlan0"}
	// ServicesTable hands service traffic to the host.
	ServicesTable = Table{60, "Services", "send traffic for the service network to tun0, where the host's nftables DNAT it"}
	// LocalIPTable delivers IP to local pods.
	LocalIPTable = Table{70, "LocalIP", "IP to a local pod: destination VNID into reg1, its ofport into reg2"}
	// IngressIsolationTable decides whether the source may reach the destination pod.
	IngressIsolationTable = Table{80, "IngressIsolation", "admit traffic to the pod in reg2 (Subnet mode admits everything; Multitenant will compare reg0 and reg1)"}
	// RemoteIPTable tunnels IP to the node that owns the destination.
	RemoteIPTable = Table{90, "RemoteIP", "tunnel IP for a remote subnet to its node: tun_id from reg0, tun_dst = hostIP, output vxlan0"}
	// EgressTable sends traffic for outside the cluster to the host.
	EgressTable = Table{100, "Egress", "send traffic for outside the cluster to tun0, where the host routes and masquerades it"}
	// VersionTable holds the version note and is never reached by packets.
	VersionTable = Table{253, "Version", "a note with the mode, pipeline round and datapath strategy; never reached by packets"}
)

// Pipeline is every table in order.
var Pipeline = []Table{
	ClassifierTable, VXLANIngressTable, PodSpoofGuardTable, DNATReturnTable, RoutingTable, LocalARPTable,
	RemoteARPTable, ServicesTable, LocalIPTable, IngressIsolationTable, RemoteIPTable, EgressTable, VersionTable,
}

var tablesByID = func() map[uint8]Table {
	m := make(map[uint8]Table, len(Pipeline))
	for _, t := range Pipeline {
		m[t.ID] = t
	}
	return m
}()

// LookupTable returns the pipeline table with OpenFlow number id.
func LookupTable(id uint8) (Table, bool) {
	t, ok := tablesByID[id]
	return t, ok
}

// TableName returns the name of table id, or "table<id>" for a table outside the pipeline, for traces and
// logs.
func TableName(id uint8) string {
	if t, ok := tablesByID[id]; ok {
		return t.Name
	}
	return "table" + strconv.Itoa(int(id))
}

// Register is a 32-bit Nicira register with the meaning the pipeline gives it.
type Register struct {
	// N is the register number: reg<N>.
	N int
	// Purpose says what the pipeline keeps in it.
	Purpose string
}

// The registers. tun_id[0..31] carries the source VNID on the wire; tun_dst selects the remote VTEP.
var (
	// SourceVNIDReg holds the sender's VNID: copied from tun_id for VXLAN, loaded per pod in table 20/25, 0
	// for tun0; it becomes tun_id when the packet is tunnelled.
	SourceVNIDReg = Register{0, "source VNID"}
	// DestVNIDReg holds the destination pod's VNID, loaded in table 70 for table 80's isolation check.
	DestVNIDReg = Register{1, "destination VNID"}
	// DestPortReg holds the destination pod's ofport, loaded in table 70; table 80 outputs to it.
	DestPortReg = Register{2, "destination ofport"}
)

// field is the register's NXM name as ovs-ofctl prints it in actions, for example NXM_NX_REG0[].
func (r Register) field() string {
	return fmt.Sprintf("NXM_NX_REG%d[]", r.N)
}

// tunIDField is the VNID's place in the tunnel key, as ovs-ofctl prints it.
const tunIDField = "NXM_NX_TUN_ID[0..31]"

// Priorities, per table; higher wins. Every table except Egress and Version ends with a priority-0 drop,
// so that drops show up in n_packets. Two flows of one table never share a priority when one could match
// a packet the other matches: OVS would pick either (TestRenderShape checks the catch-all case).
const (
	// Classifier (0).
	prioConntrack     = 1000 // system datapath: untracked IP goes through ct() first
	prioFromGateway   = 400  // IP from tun0 sourced by the gateway itself (and masqueraded service traffic)
	prioDNATReturn    = 300  // system datapath: a local pod's packet back from tun0 after DNAT
	prioTunMulticast  = 250  // multicast from the host is not forwarded
	prioFromTunnel    = 200  // VXLAN (in_port=1) and tun0 (in_port=2) traffic that is accepted
	prioPortDrop      = 150  // anything else from vxlan0 or tun0
	prioFromPod       = 100  // IP and ARP from any other port (pods)
	prioDefaultAction = 0    // the last flow of every table

	// VXLANIngress (10), RemoteARP (50), RemoteIP (90): one flow per remote node.
	prioRemoteNode = 100

	// PodSpoofGuard (20), DNATReturn (25), LocalARP (40), LocalIP (70): per-pod flows.
	prioNoVXLANFromPods = 300
	prioPod             = 100

	// Routing (30).
	prioToGateway     = 300
	prioReplyUnNAT    = 250 // system datapath: replies to host-DNATed service traffic are un-NATed here
	prioToLocalSubnet = 200
	prioToCluster     = 100 // remote subnets and the service network
	prioMulticastDrop = 25
	prioToEgress      = 10 // any other IP; above the priority-0 drop, which it would otherwise overlap

	// Services (60).
	prioService = 100

	// IngressIsolation (80).
	prioFromGatewayAllowed = 300
	prioSameVNID           = 200
)

// multicastRange is 224.0.0.0/4, which the pipeline does not forward (OpenShift SDN's multicast is opt-in
// per namespace, a Multitenant feature).
const multicastRange = "224.0.0.0/4"
