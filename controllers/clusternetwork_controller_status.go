package controllers

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/conditions"
	"github.com/vxflow/vxflow/internal/ipam"
)

// clusterNetworkState is everything the ClusterNetwork status is computed from.
type clusterNetworkState struct {
	poolSummary
	// waiting are Nodes with a usable address and no HostSubnet; filled only when the pool is full, since
	// otherwise a Node without a subnet is just one the allocator has not reached yet.
	waiting []string
}

// setCapacity copies the pool's counts.
func setCapacity(cn *vxflowv1alpha1.ClusterNetwork, st clusterNetworkState) {
	cn.Status.SubnetsTotal = int64(st.total)
	cn.Status.SubnetsAllocated = int64(st.allocated)
}

// setReadyCondition is True while the spec is usable and at least one subnet is free.
func setReadyCondition(cn *vxflowv1alpha1.ClusterNetwork, st clusterNetworkState) {
	c := metav1.Condition{Type: vxflowv1alpha1.ConditionReady, ObservedGeneration: st.generation}
	switch {
	case st.netErr != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, conditions.ReasonInvalidSpec, capitalize(st.netErr.Error())
	case st.allocated >= st.total:
		c.Status, c.Reason = metav1.ConditionFalse, conditions.ReasonPoolFull
		c.Message = fmt.Sprintf("%d of %d subnets allocated: a new node gets no subnet until one is freed or a range is added", st.allocated, st.total)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, conditions.ReasonSubnetsAvailable
		c.Message = fmt.Sprintf("%d of %d subnets allocated", st.allocated, st.total)
	}
	conditions.Set(&cn.Status.Conditions, c)
}

// setDegradedCondition is True when something needs a person: Nodes waiting on a full pool, HostSubnets
// outside every range (what removing a range that live subnets use leaves), or refused HostSubnets. The
// reason is the most urgent problem; the message lists all of them.
func setDegradedCondition(cn *vxflowv1alpha1.ClusterNetwork, st clusterNetworkState) {
	c := metav1.Condition{Type: vxflowv1alpha1.ConditionDegraded, ObservedGeneration: st.generation}
	var problems []string
	var outside, conflicting []string
	for _, l := range st.losers {
		switch l.reason {
		case ipam.ReasonOutsideClusterNetwork:
			outside = append(outside, fmt.Sprintf("%s (%s)", l.name, l.subnet))
		default:
			conflicting = append(conflicting, fmt.Sprintf("%s (%s)", l.name, l.reason))
		}
	}
	if st.netErr != nil {
		c.Reason = conditions.ReasonInvalidSpec
		problems = append(problems, capitalize(st.netErr.Error()))
	}
	if len(st.waiting) > 0 && st.allocated >= st.total {
		if c.Reason == "" {
			c.Reason = conditions.ReasonPoolExhausted
		}
		problems = append(problems, fmt.Sprintf("%d of %d subnets allocated; %d nodes wait for a subnet: %s",
			st.allocated, st.total, len(st.waiting), namesList(st.waiting, 10)))
	}
	if len(outside) > 0 {
		if c.Reason == "" {
			c.Reason = conditions.ReasonRangeInUse
		}
		problems = append(problems, fmt.Sprintf("%d HostSubnets lie outside every cluster network, so the range they use cannot be removed: %s",
			len(outside), namesList(outside, 10)))
	}
	if len(conflicting) > 0 {
		if c.Reason == "" {
			c.Reason = conditions.ReasonConflictingHostSubnets
		}
		problems = append(problems, fmt.Sprintf("%d HostSubnets were refused: %s", len(conflicting), namesList(conflicting, 10)))
	}
	if len(problems) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, conditions.ReasonAsExpected, "Every node with a usable address can get a subnet"
	} else {
		c.Status, c.Message = metav1.ConditionTrue, strings.Join(problems, "; ")
	}
	conditions.Set(&cn.Status.Conditions, c)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
