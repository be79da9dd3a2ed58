package ovs

import (
	"context"
	"time"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// The bridge layout OpenShift SDN established and the flow pipeline relies on (openshift-sdn.md §3).
const (
	// DefaultBridge is the SDN bridge.
	DefaultBridge = "br0"
	// VXLANPort is the tunnel port; its ofport is fixed because table 0 classifies by in_port.
	VXLANPort = "vxlan0"
	// VXLANOfport is the OpenFlow port number requested for VXLANPort.
	VXLANOfport = 1
	// TunPort is the internal port that carries the node's gateway address.
	TunPort = "tun0"
	// TunOfport is the OpenFlow port number requested for TunPort.
	TunOfport = 2
	// MaxOfport is the highest OpenFlow port number an interface may ask for (ofport_request).
	MaxOfport = 65279
	// DefaultVXLANDstPort is the IANA VXLAN port, used when BridgeSpec.VXLANDstPort is zero.
	DefaultVXLANDstPort = 4789
)

// Datapath types of BridgeSpec.DatapathType.
const (
	// DatapathSystem is the kernel datapath (needs the openvswitch kernel module).
	DatapathSystem = "system"
	// DatapathNetdev is the userspace datapath (no kernel module; VXLAN needs the node IP on an OVS bridge,
	// see UnderlaySpec).
	DatapathNetdev = "netdev"
)

// BridgeSpec declares the SDN bridge and its two fixed ports.
type BridgeSpec struct {
	// DatapathType is DatapathSystem or DatapathNetdev; empty means DatapathSystem.
	DatapathType string
	// VXLANDstPort is the UDP port of vxlan0 (ClusterNetwork.vxlanPort); zero means DefaultVXLANDstPort.
	VXLANDstPort int
	// TunMTU is tun0's MTU request (the pod MTU); zero leaves mtu_request unset.
	TunMTU int
}

// UnderlaySpec declares the bridge that holds the underlay NIC for OVS native tunneling (userspace datapath):
// ovs-vswitchd routes and resolves the outer VXLAN header itself and only through an OVS bridge, so the node
// IP must live on that bridge (lab.md part A §3). Moving the address is internal/apply/link's job.
type UnderlaySpec struct {
	// Bridge is the underlay bridge, for example "br-ex".
	Bridge string
	// NIC is the underlay interface that becomes a port of Bridge, for example "eth0".
	NIC string
	// DatapathType of Bridge; empty means DatapathNetdev, the only datapath that needs this layout.
	DatapathType string
}

// PodPort is a port of the SDN bridge other than vxlan0, tun0 and the bridge's own internal port.
type PodPort struct {
	// Name is the port (and interface) name, the host end of the pod's veth.
	Name string
	// Ofport is the OpenFlow port number ovs-vswitchd assigned; -1 when it failed to add the interface.
	Ofport int
	// ExternalIDs are the interface's external_ids as given to EnsurePodPort.
	ExternalIDs map[string]string
}

// SyncResult says what a flow Sync sent, so callers and tests can prove that only changed flows were sent.
type SyncResult struct {
	// Added counts flows whose key (table, priority, match) the switch did not have.
	Added int
	// Modified counts flows whose key the switch had with another cookie or other actions.
	Modified int
	// Deleted counts flows the switch had that are not desired.
	Deleted int
	// Total is the number of flows on the bridge after the Sync (the number of desired flows).
	Total int
	// Reset reports that the bridge held no flows although the previous Sync of this applier had left some:
	// ovs-vswitchd was restarted (or the bridge flushed by hand) and this Sync reprogrammed everything.
	Reset bool
	// Duration is the wall time of the Sync, dump and bundle included.
	Duration time.Duration
}

// FlowMods is the number of flow-mods the Sync sent in its bundle.
func (r SyncResult) FlowMods() int { return r.Added + r.Modified + r.Deleted }

// Interface is what the node agent and the CNI plugin need from Open vSwitch; Switch is the real
// implementation and Fake a stateful one for unit tests.
type Interface interface {
	// EnsureBridge creates the SDN bridge with vxlan0 and tun0, or corrects the columns that differ from spec;
	// it never deletes or recreates an existing bridge. It returns a description of each change made, empty
	// when nothing differed.
	EnsureBridge(ctx context.Context, spec BridgeSpec) ([]string, error)
	// EnsureUnderlayBridge creates the native-tunneling underlay bridge with the NIC as a port, or corrects
	// it; it returns the changes made, empty when nothing differed.
	EnsureUnderlayBridge(ctx context.Context, spec UnderlaySpec) ([]string, error)
	// EnsurePodPort adds the interface name to the SDN bridge with externalIDs (or updates the IDs of an
	// existing port) and waits until ovs-vswitchd has assigned its ofport, which it returns. Calling it again
	// returns the same ofport and changes nothing.
	EnsurePodPort(ctx context.Context, name string, externalIDs map[string]string) (int, error)
	// EnsurePodPortAt is EnsurePodPort asking ovs-vswitchd for ofport (ofport_request; 0 asks for nothing), so
	// that the pod's flows can be written before the port exists. ovs-vswitchd assigns another number when
	// that one is taken: callers compare the ofport returned with the one they asked for.
	EnsurePodPortAt(ctx context.Context, name string, externalIDs map[string]string, ofport int) (int, error)
	// OfportFree reports whether no interface of the switch other than name has or asks for ofport.
	OfportFree(ctx context.Context, name string, ofport int) (bool, error)
	// DeletePort removes the port from the SDN bridge; a missing port is not an error.
	DeletePort(ctx context.Context, name string) error
	// ListPodPorts returns the pod ports of the SDN bridge sorted by name; an empty list when there are none.
	ListPodPorts(ctx context.Context) ([]PodPort, error)
	// BridgeExternalIDs returns the SDN bridge's external_ids (agent metadata that survives restarts).
	BridgeExternalIDs(ctx context.Context) (map[string]string, error)
	// SetBridgeExternalIDs sets the given keys in the SDN bridge's external_ids, keeping the others; an empty
	// value deletes the key.
	SetBridgeExternalIDs(ctx context.Context, ids map[string]string) error
	// Sync makes the bridge's flows equal to desired: it dumps the bridge, diffs by Flow.Key comparing cookie
	// and actions, and sends only the difference in one atomic bundle (nothing when there is none). On error
	// the bridge is unchanged.
	Sync(ctx context.Context, desired []openflow.Flow) (SyncResult, error)
	// SyncChanges is Sync diffing against what the last Sync or SyncChanges left instead of a dump, so that
	// a pod's flows cost one bundle and no dump; drift is the next Sync's to find. Without such a memory (the
	// first sync, or after a failure) it is a Sync.
	SyncChanges(ctx context.Context, desired []openflow.Flow) (SyncResult, error)
	// Dump returns the bridge's flows in dump order; an empty list when it has none.
	Dump(ctx context.Context) ([]openflow.Flow, error)
	// Drifted reports, cheaply, whether the bridge's flow count differs from what the last Sync left (an
	// ovs-vswitchd restart leaves 0 flows, a hand-deleted flow one less); true before the first Sync. Flows
	// changed in place are only found by the next Sync, so the agent also syncs periodically.
	Drifted(ctx context.Context) (bool, error)
}
