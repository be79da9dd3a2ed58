package conditions

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Reasons of the HostSubnet Allocated condition; the False ones match internal/ipam's conflict reasons.
const (
	// ReasonAllocated means the subnet is inside a cluster network and no older HostSubnet overlaps it.
	ReasonAllocated = "Allocated"
	// ReasonOverlap means an older HostSubnet holds addresses of this subnet.
	ReasonOverlap = "Overlap"
	// ReasonDuplicate means an older HostSubnet holds exactly this subnet.
	ReasonDuplicate = "Duplicate"
	// ReasonOutsideClusterNetwork means the subnet lies in no cluster network, for example because its range
	// was removed from the ClusterNetwork.
	ReasonOutsideClusterNetwork = "OutsideClusterNetwork"
	// ReasonInvalidSubnet means spec.subnet cannot be read as a node subnet.
	ReasonInvalidSubnet = "InvalidSubnet"
	// ReasonNoClusterNetwork means there is no ClusterNetwork default to check the subnet against.
	ReasonNoClusterNetwork = "NoClusterNetwork"
)

// Reasons of the ClusterNetwork Ready and Degraded conditions.
const (
	// ReasonSubnetsAvailable means at least one node subnet is free.
	ReasonSubnetsAvailable = "SubnetsAvailable"
	// ReasonPoolFull means every node subnet is in use (Ready=False); Degraded follows once a node waits.
	ReasonPoolFull = "PoolFull"
	// ReasonPoolExhausted means nodes wait for a subnet and none is free.
	ReasonPoolExhausted = "PoolExhausted"
	// ReasonRangeInUse means HostSubnets lie outside every cluster network, which is what removing a range
	// that live subnets use leaves behind.
	ReasonRangeInUse = "RangeInUse"
	// ReasonConflictingHostSubnets means some HostSubnets overlap others and were refused.
	ReasonConflictingHostSubnets = "ConflictingHostSubnets"
	// ReasonInvalidSpec means the spec passed the schema but cannot be used (the controller's own check).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonAsExpected is the reason of a condition in its healthy state.
	ReasonAsExpected = "AsExpected"
)

// Set adds or updates c in conds, keeping lastTransitionTime when the status does not change, and reports
// whether anything changed.
func Set(conds *[]metav1.Condition, c metav1.Condition) bool {
	return meta.SetStatusCondition(conds, c)
}

// Get returns the condition of type t, or nil.
func Get(conds []metav1.Condition, t string) *metav1.Condition {
	return meta.FindStatusCondition(conds, t)
}

// IsTrue reports whether the condition of type t exists and is True.
func IsTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}

// Equal reports whether two conditions say the same thing, ignoring lastTransitionTime.
func Equal(a, b *metav1.Condition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message &&
		a.ObservedGeneration == b.ObservedGeneration
}
