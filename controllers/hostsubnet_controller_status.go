package controllers

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/conditions"
	"github.com/vxflow/vxflow/internal/ipam"
)

// setAllocatedCondition sets Allocated from the pool's verdict: True when the HostSubnet holds its subnet,
// False with the conflict's reason otherwise.
func setAllocatedCondition(hs *vxflowv1alpha1.HostSubnet, v verdict) {
	c := metav1.Condition{
		Type:               vxflowv1alpha1.ConditionAllocated,
		Status:             metav1.ConditionTrue,
		Reason:             conditions.ReasonAllocated,
		Message:            fmt.Sprintf("Subnet %s is this node's", hs.Spec.Subnet),
		ObservedGeneration: hs.Generation,
	}
	switch {
	case v.noNetwork:
		c.Status, c.Reason = metav1.ConditionFalse, conditions.ReasonNoClusterNetwork
		c.Message = fmt.Sprintf("There is no usable ClusterNetwork %s to check subnet %s against",
			vxflowv1alpha1.ClusterNetworkName, hs.Spec.Subnet)
	case v.conflict != nil:
		c.Status, c.Reason = metav1.ConditionFalse, conflictReason(v.conflict.Reason)
		c.Message = conflictMessage(hs.Spec.Subnet, v.conflict)
	}
	conditions.Set(&hs.Status.Conditions, c)
}

// setGatewayIP publishes the node's gateway, the first address of the subnet, only while the subnet is
// allocated: a refused subnet has no gateway anyone should use.
func setGatewayIP(hs *vxflowv1alpha1.HostSubnet, v verdict) {
	hs.Status.GatewayIP = ""
	if !v.noNetwork && v.conflict == nil {
		hs.Status.GatewayIP = gatewayOf(hs.Spec.Subnet)
	}
}

func conflictReason(r ipam.Reason) string {
	switch r {
	case ipam.ReasonDuplicate:
		return conditions.ReasonDuplicate
	case ipam.ReasonOverlap:
		return conditions.ReasonOverlap
	case ipam.ReasonOutsideClusterNetwork:
		return conditions.ReasonOutsideClusterNetwork
	default:
		return conditions.ReasonInvalidSubnet
	}
}

func conflictMessage(subnet string, ce *ipam.ConflictError) string {
	switch ce.Reason {
	case ipam.ReasonDuplicate:
		return fmt.Sprintf("Subnet %s is already held by HostSubnet %s", subnet, namesList(ce.With, 10))
	case ipam.ReasonOverlap:
		return fmt.Sprintf("Subnet %s overlaps the subnet held by HostSubnet %s", subnet, namesList(ce.With, 10))
	case ipam.ReasonOutsideClusterNetwork:
		return fmt.Sprintf("Subnet %s is outside every cluster network of ClusterNetwork %s; if its range was removed, add it back or delete this HostSubnet",
			subnet, vxflowv1alpha1.ClusterNetworkName)
	default:
		return fmt.Sprintf("Subnet %q is not a canonical IPv4 prefix of length at most /%d", subnet, ipam.MaxHostPrefix)
	}
}

// namesList joins names, keeping a message short when there are many.
func namesList(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}
