package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
)

// PodNetwork is what the CNI server needs from the agent: the node's network and the pod flows. The agent
// implements it; the server never writes flows itself, so pods go through the same render/apply path as
// everything else.
type PodNetwork interface {
	// NodeConfig returns this node's subnet, gateway, MTU, cluster CIDRs, service network and datapath, or an
	// error saying why the node network is not ready yet (it becomes the CNI error's message).
	NodeConfig() (NodeNetConfig, error)
	// PodAttached records the pod (IP, MAC, OFPort, SandboxID set) and returns once the agent has rendered
	// and applied its flows. Called again for the same sandbox it updates the record; it must be safe to call
	// concurrently for different sandboxes.
	PodAttached(ctx context.Context, pod model.LocalPod) error
	// PodDetached forgets the sandbox's pod and returns once its flows are gone; an unknown sandbox is not an
	// error.
	PodDetached(ctx context.Context, sandboxID string) error
	// PodFlowsPresent reports whether the pod's flows are on the switch (CHECK).
	PodFlowsPresent(ctx context.Context, pod model.LocalPod) (bool, error)
}

// NodeNetConfig is the part of the node's network a pod's interface is made from.
type NodeNetConfig struct {
	// Subnet is this node's pod range (its HostSubnet); pod addresses come from it.
	Subnet netip.Prefix
	// Gateway is tun0's address, the first address of Subnet; never given to a pod.
	Gateway netip.Addr
	// MTU is the overlay MTU of pod interfaces.
	MTU int
	// ClusterNetworks are the cluster's pod ranges; pods reach them on-link (they ARP for remote pods, which
	// answer through the tunnel), as in OpenShift SDN.
	ClusterNetworks []netip.Prefix
	// ServiceNetwork is the Service ClusterIP range, routed via Gateway.
	ServiceNetwork netip.Prefix
	// Datapath is br0's datapath type; the userspace one needs checksum offload off in pods.
	Datapath model.DatapathType
}

// NodeNetConfigFromView extracts the pods' part of a NodeView, for the agent's NodeConfig.
func NodeNetConfigFromView(v *model.NodeView) NodeNetConfig {
	c := NodeNetConfig{
		Subnet:         v.Subnet,
		Gateway:        v.Gateway,
		MTU:            v.MTU,
		ServiceNetwork: v.ServiceNetwork,
		Datapath:       v.Datapath,
	}
	for _, cn := range v.ClusterNetworks {
		c.ClusterNetworks = append(c.ClusterNetworks, cn.CIDR)
	}
	return c
}

// validate checks what the server relies on, so a half-built config never gives a pod a wrong address.
func (c NodeNetConfig) validate() error {
	var errs []error
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		errs = append(errs, fmt.Errorf("node subnet %q is not an IPv4 range with room for pods", c.Subnet))
	} else if c.Subnet != c.Subnet.Masked() {
		errs = append(errs, fmt.Errorf("node subnet %s is not a network address", c.Subnet))
	}
	if !c.Gateway.IsValid() || (c.Subnet.IsValid() && !c.Subnet.Contains(c.Gateway)) {
		errs = append(errs, fmt.Errorf("gateway %q is not inside the node subnet %s", c.Gateway, c.Subnet))
	}
	if c.MTU < model.MinMTU {
		errs = append(errs, fmt.Errorf("MTU %d is below %d", c.MTU, model.MinMTU))
	}
	for _, cn := range c.ClusterNetworks {
		if !cn.IsValid() || !cn.Addr().Is4() {
			errs = append(errs, fmt.Errorf("cluster network %q is not an IPv4 range", cn))
		}
	}
	if c.ServiceNetwork.IsValid() && !c.ServiceNetwork.Addr().Is4() {
		errs = append(errs, fmt.Errorf("service network %s is not an IPv4 range", c.ServiceNetwork))
	}
	return errors.Join(errs...)
}

// Ports is the part of internal/apply/ovs the server uses; ovs.Interface satisfies it.
type Ports interface {
	// EnsurePodPortAt adds the interface to br0 with externalIDs (or updates them), asking for ofport when
	// it creates the port (0: none), and returns the ofport ovs-vswitchd assigned, which may differ.
	EnsurePodPortAt(ctx context.Context, name string, externalIDs map[string]string, ofport int) (int, error)
	// OfportFree reports whether no port other than name has or asks for ofport.
	OfportFree(ctx context.Context, name string, ofport int) (bool, error)
	// DeletePort removes the port; a missing port is not an error.
	DeletePort(ctx context.Context, name string) error
	// ListPodPorts returns the pod ports of br0.
	ListPodPorts(ctx context.Context) ([]ovs.PodPort, error)
}

var _ Ports = ovs.Interface(nil)

// Keys of the external_ids the server puts on a pod's OVS interface; reconciliation and `vxflowctl` read them.
const (
	// ExternalIDSandbox is the sandbox (container) ID; its presence marks a port as the CNI server's.
	ExternalIDSandbox = "sandbox"
	// ExternalIDIfName is the interface name inside the pod.
	ExternalIDIfName = "ifname"
	// ExternalIDIP is the pod's IPv4 address.
	ExternalIDIP = "ip"
	// ExternalIDPodNamespace and ExternalIDPodName identify the pod (from CNI_ARGS).
	ExternalIDPodNamespace = "pod-namespace"
	ExternalIDPodName      = "pod-name"
)
