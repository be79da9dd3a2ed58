package controllers

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/ipam"
)

// network is what the controller needs from ClusterNetwork default, parsed once.
type network struct {
	ranges  []ipam.Range
	service netip.Prefix
}

// parseNetwork turns a ClusterNetwork spec into allocator ranges; the schema already checked each field, so
// an error here means the schema and the allocator disagree, which is reported rather than trusted.
func parseNetwork(spec *vxflowv1alpha1.ClusterNetworkSpec) (network, error) {
	var n network
	for _, e := range spec.ClusterNetworks {
		p, err := netip.ParsePrefix(e.CIDR)
		if err != nil {
			return network{}, fmt.Errorf("failed to parse cluster network %q: %w", e.CIDR, err)
		}
		n.ranges = append(n.ranges, ipam.Range{CIDR: p, HostPrefix: int(e.HostPrefix)})
	}
	if err := ipam.ValidateRanges(n.ranges); err != nil {
		return network{}, fmt.Errorf("failed to use cluster networks: %w", err)
	}
	if spec.ServiceNetwork != "" {
		p, err := netip.ParsePrefix(spec.ServiceNetwork)
		if err != nil {
			return network{}, fmt.Errorf("failed to parse service network %q: %w", spec.ServiceNetwork, err)
		}
		n.service = p
	}
	return n, nil
}

// claimOf is a HostSubnet as the ledger sees it; a subnet that does not parse becomes the zero Prefix, which
// the ledger refuses as InvalidSubnet.
func claimOf(hs *vxflowv1alpha1.HostSubnet) ipam.Claim {
	p, err := netip.ParsePrefix(hs.Spec.Subnet)
	if err != nil {
		p = netip.Prefix{}
	}
	return ipam.Claim{Name: hs.Name, Subnet: p, Created: hs.CreationTimestamp.Time}
}

// isControllerMade reports whether the controller allocated hs for a Node; hand-made HostSubnets carry no
// node-uid annotation and are never changed or deleted by the controller.
func isControllerMade(hs *vxflowv1alpha1.HostSubnet) bool {
	_, ok := hs.Annotations[vxflowv1alpha1.NodeUIDAnnotation]
	return ok
}

// nodeIP picks the node's VTEP address: its first IPv4 InternalIP that can carry VXLAN, that is a global
// unicast address outside the pod and service ranges. It returns why not when there is none.
func nodeIP(node *corev1.Node, n network) (netip.Addr, string) {
	why := "the Node has no InternalIP address"
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
			why = fmt.Sprintf("InternalIP %q is not an IP address", a.Address)
		case !ip.Is4():
			why = fmt.Sprintf("InternalIP %s is not IPv4", ip)
		case !ip.IsGlobalUnicast():
			why = fmt.Sprintf("InternalIP %s cannot carry VXLAN (loopback, link-local, multicast or unspecified)", ip)
		case n.service.IsValid() && n.service.Contains(ip):
			why = fmt.Sprintf("InternalIP %s is inside the service network %s", ip, n.service)
		default:
			for _, r := range n.ranges {
				if r.CIDR.Contains(ip) {
					why = fmt.Sprintf("InternalIP %s is inside the cluster network %s", ip, r.CIDR)
					ip = netip.Addr{}
					break
				}
			}
			if ip.IsValid() {
				return ip, ""
			}
		}
	}
	return netip.Addr{}, why
}
