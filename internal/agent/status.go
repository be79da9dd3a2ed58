package agent

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

// Reasons of the Programmed condition the agent sets on its HostSubnet.
const (
	ReasonProgrammed            = "Programmed"
	ReasonClusterNetworkMissing = "ClusterNetworkMissing"
	ReasonHostSubnetMissing     = "HostSubnetMissing"
	ReasonInvalidConfiguration  = "InvalidConfiguration"
	ReasonPartiallyProgrammed   = "PartiallyProgrammed"
	ReasonApplyFailed           = "ApplyFailed"
)

// SyncReport is what one sync did, the input of the agent's status.
type SyncReport struct {
	// Generation is the HostSubnet generation the sync rendered.
	Generation int64
	// Time is when the sync finished.
	Time time.Time
	// Flows and NFTRules count what is on the node after the sync.
	Flows, NFTRules int
	// StateHash identifies the rendered desired state.
	StateHash string
	// MTU and Datapath are the node's pod MTU and br0 datapath type.
	MTU      int
	Datapath string
	// NFTLayout is the nftables endpoint layout (see HostSubnetAgentStatus).
	NFTLayout string
	// Reason and Message explain the outcome; Reason is ReasonProgrammed when everything was applied.
	Reason, Message string

	// skipped are the node sync's objects left out, which withServices merges with the Service proxy's.
	skipped []string
}

// statusApplyObject builds the server-side-apply body of the agent's part of HostSubnet status: the
// Programmed condition and status.agent. Only these fields are owned by the agent's field manager, so the
// controller's Allocated condition and gatewayIP are never overwritten.
func statusApplyObject(name string, r SyncReport, lastTransition metav1.Time) *unstructured.Unstructured {
	status := metav1.ConditionTrue
	if r.Reason != ReasonProgrammed {
		status = metav1.ConditionFalse
	}
	agent := map[string]any{
		"lastSync":           r.Time.UTC().Format(time.RFC3339),
		"observedGeneration": r.Generation,
		"flows":              int64(r.Flows),
		"nftRules":           int64(r.NFTRules),
		"mtu":                int64(r.MTU),
	}
	if r.StateHash != "" {
		agent["stateHash"] = r.StateHash
	}
	if r.Datapath != "" {
		agent["datapathType"] = r.Datapath
	}
	if r.NFTLayout != "" {
		agent["nftLayout"] = r.NFTLayout
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "HostSubnet",
		"metadata":   map[string]any{"name": name},
		"status": map[string]any{
			"conditions": []any{map[string]any{
				"type":               v1alpha1.ConditionProgrammed,
				"status":             string(status),
				"reason":             r.Reason,
				"message":            r.Message,
				"observedGeneration": r.Generation,
				"lastTransitionTime": lastTransition.UTC().Format(time.RFC3339),
			}},
			"agent": agent,
		},
	}}
	return u
}

// programmedTransitionTime keeps the condition's lastTransitionTime when its status does not change.
func programmedTransitionTime(hs *v1alpha1.HostSubnet, r SyncReport, now time.Time) metav1.Time {
	want := metav1.ConditionTrue
	if r.Reason != ReasonProgrammed {
		want = metav1.ConditionFalse
	}
	if hs != nil {
		for _, c := range hs.Status.Conditions {
			if c.Type == v1alpha1.ConditionProgrammed && c.Status == want {
				return c.LastTransitionTime
			}
		}
	}
	return metav1.NewTime(now)
}

// statusChanged says whether a report differs from what the HostSubnet shows in a way worth a write;
// a steady node writes its status at most every refresh interval.
func statusChanged(hs *v1alpha1.HostSubnet, r SyncReport, refresh time.Duration) bool {
	if hs == nil {
		return false
	}
	a := hs.Status.Agent
	if a == nil || a.LastSync == nil {
		return true
	}
	var cond *metav1.Condition
	for i := range hs.Status.Conditions {
		if hs.Status.Conditions[i].Type == v1alpha1.ConditionProgrammed {
			cond = &hs.Status.Conditions[i]
		}
	}
	switch {
	case cond == nil, cond.Reason != r.Reason, cond.Message != r.Message, cond.ObservedGeneration != r.Generation:
		return true
	case a.ObservedGeneration != r.Generation, int(a.Flows) != r.Flows, int(a.NFTRules) != r.NFTRules,
		a.StateHash != r.StateHash, int(a.MTU) != r.MTU, a.DatapathType != r.Datapath, a.NFTLayout != r.NFTLayout:
		return true
	}
	return r.Time.Sub(a.LastSync.Time) >= refresh
}
