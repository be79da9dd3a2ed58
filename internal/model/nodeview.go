package model

import (
	"net"
	"net/netip"

	"k8s.io/apimachinery/pkg/types"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

// DatapathType is the Open vSwitch datapath of br0; it decides how replies to service traffic find their
// way back (see design.md, "Replies and the datapath").
type DatapathType string

const (
	// DatapathSystem is the kernel datapath: OVS's ct() shares the host's conntrack, so replies of
	// host-DNATed service traffic can be un-NATed inside OVS.
	DatapathSystem DatapathType = "system"
	// DatapathNetdev is the userspace datapath: OVS has its own conntrack, so service traffic must be
	// masqueraded by the host and its replies come back through tun0.
	DatapathNetdev DatapathType = "netdev"
)

// Mode is the isolation model of the pod network; only Subnet exists today.
type Mode string

const (
	// ModeSubnet is a flat network: every pod reaches every pod, VNID 0 on the wire.
	ModeSubnet Mode = Mode(v1alpha1.NetworkModeSubnet)
)

// Defaults and limits that the API leaves to the node.
const (
	// DefaultVXLANPort is the IANA VXLAN port, used when the ClusterNetwork leaves vxlanPort unset.
	DefaultVXLANPort = 4789
	// VXLANOverhead is what VXLAN adds to each inner packet: 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 8 (VXLAN).
	VXLANOverhead = 50
	// MinMTU is the smallest pod MTU accepted, the IPv4 minimum datagram every host must accept.
	MinMTU = 576
	// FirstPodOFPort is the first OpenFlow port number a pod may have: 1 is vxlan0 and 2 is tun0.
	FirstPodOFPort = 3
	// MaxOFPort is the largest port number Open vSwitch assigns (its OVSDB schema caps ofport_request here).
	MaxOFPort = 65279
	// GlobalVNID is the virtual network ID of every pod in Subnet mode.
	GlobalVNID = 0
)

// NodeFacts are what the node agent observes about its own node and the API does not hold.
type NodeFacts struct {
	// NodeIP is the node's underlay IPv4 address; this node's HostSubnet must carry it as hostIP.
	NodeIP netip.Addr
	// UnderlayMTU is the MTU of the interface that carries VXLAN to other nodes.
	UnderlayMTU int
	// Datapath is br0's datapath type.
	Datapath DatapathType
}

// LocalPod is a pod attached to this node's br0; as input it is what the CNI server and OVSDB recorded, in
// a NodeView it has been validated.
type LocalPod struct {
	// Namespace and Name identify the pod.
	Namespace, Name string
	// SandboxID is the container runtime's sandbox ID, recorded in the OVS port's external_ids.
	SandboxID string
	// IP is the pod's address, inside this node's subnet.
	IP netip.Addr
	// MAC is the pod's eth0 address; it must equal PodMAC(IP). Left empty in the input, it is derived.
	MAC net.HardwareAddr
	// OFPort is the OpenFlow port number of the pod's veth on br0, at least FirstPodOFPort.
	OFPort int32
	// VNID is the pod's virtual network ID; always GlobalVNID in Subnet mode.
	VNID uint32
}

// Key is the pod's namespace/name, used in field paths and logs.
func (p LocalPod) Key() string {
	return p.Namespace + "/" + p.Name
}

// NodeInput is everything BuildNodeView needs: the API objects the agent watches and the node's facts.
type NodeInput struct {
	// ClusterNetwork is the cluster's singleton ClusterNetwork named default.
	ClusterNetwork *v1alpha1.ClusterNetwork
	// HostSubnets are all HostSubnets, this node's own included.
	HostSubnets []v1alpha1.HostSubnet
	// NodeName is the name of this node, which is also the name of its HostSubnet.
	NodeName string
	// Facts are the node facts the API does not hold.
	Facts NodeFacts
	// Pods are the pods attached to this node's bridge.
	Pods []LocalPod
}

// ClusterCIDR is one pod address range and the prefix length of the node subnets carved from it.
type ClusterCIDR struct {
	// CIDR is the range, for example 10.128.0.0/14.
	CIDR netip.Prefix
	// HostPrefix is the prefix length of each node subnet, for example 23.
	HostPrefix int
}

// RemoteNode is another node's VTEP and pod subnet, the target of this node's VXLAN tunnels.
type RemoteNode struct {
	// Name is the node's (and its HostSubnet's) name.
	Name string
	// UID is the HostSubnet's UID.
	UID types.UID
	// HostIP is the node's underlay address: VXLAN packets for Subnet are sent to it, and VXLAN packets
	// are accepted only from the HostIPs of known nodes.
	HostIP netip.Addr
	// Subnet is the node's pod range.
	Subnet netip.Prefix
}

// NodeView is the validated, self-consistent picture of the overlay from one node: everything the
// OpenFlow renderer needs and nothing it would have to check again.
type NodeView struct {
	// NodeName is this node's name.
	NodeName string
	// NodeIP is this node's underlay address (its HostSubnet's hostIP).
	NodeIP netip.Addr
	// HostSubnetUID and HostSubnetGeneration identify the HostSubnet the view was built from, for status.
	HostSubnetUID        types.UID
	HostSubnetGeneration int64
	// Datapath is br0's datapath type; it selects how service replies are handled.
	Datapath DatapathType
	// Mode is the isolation model.
	Mode Mode
	// ClusterNetworks are the pod ranges, in ClusterNetwork order.
	ClusterNetworks []ClusterCIDR
	// ServiceNetwork is the range of Service ClusterIPs.
	ServiceNetwork netip.Prefix
	// VXLANPort is the UDP port of the VXLAN tunnels.
	VXLANPort uint16
	// MTU is the pod and tun0 MTU: ClusterNetwork.spec.mtu, or UnderlayMTU - VXLANOverhead.
	MTU int
	// UnderlayMTU is the MTU of the underlay interface, as observed.
	UnderlayMTU int
	// Subnet is this node's pod range.
	Subnet netip.Prefix
	// Gateway is the first address of Subnet, held by tun0.
	Gateway netip.Addr
	// RemoteNodes are the other nodes, sorted by name.
	RemoteNodes []RemoteNode
	// LocalPods are the pods on this node's bridge, sorted by namespace/name.
	LocalPods []LocalPod
	// Skipped are the remote HostSubnets and pods left out of the view because they are invalid or
	// conflict with something that was kept; everything else is still programmed.
	Skipped []*FieldError
}
