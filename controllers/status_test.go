package controllers

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/conditions"
	"github.com/vxflow/vxflow/internal/ipam"
)

func TestSetAllocatedConditionAndGatewayIP(t *testing.T) {
	tests := []struct {
		name        string
		subnet      string
		v           verdict
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
		wantGateway string
	}{
		{
			name: "holds its subnet", subnet: "10.128.2.0/23",
			wantStatus: metav1.ConditionTrue, wantReason: conditions.ReasonAllocated, wantMessage: "10.128.2.0/23 is this node's", wantGateway: "10.128.2.1",
		},
		{
			name: "duplicate", subnet: "10.128.2.0/23",
			v:          verdict{conflict: &ipam.ConflictError{Reason: ipam.ReasonDuplicate, With: []string{"a"}}},
			wantStatus: metav1.ConditionFalse, wantReason: conditions.ReasonDuplicate, wantMessage: "already held by HostSubnet a",
		},
		{
			name: "overlap with many", subnet: "10.128.0.0/16",
			v:          verdict{conflict: &ipam.ConflictError{Reason: ipam.ReasonOverlap, With: strings.Split("a b c d e f g h i j k l", " ")}},
			wantStatus: metav1.ConditionFalse, wantReason: conditions.ReasonOverlap, wantMessage: "a, b, c, d, e, f, g, h, i, j and 2 more",
		},
		{
			name: "outside", subnet: "10.0.0.0/24",
			v:          verdict{conflict: &ipam.ConflictError{Reason: ipam.ReasonOutsideClusterNetwork}},
			wantStatus: metav1.ConditionFalse, wantReason: conditions.ReasonOutsideClusterNetwork, wantMessage: "outside every cluster network",
		},
		{
			name: "malformed", subnet: "10.0.0.0/31",
			v:          verdict{conflict: &ipam.ConflictError{Reason: ipam.ReasonInvalidSubnet}},
			wantStatus: metav1.ConditionFalse, wantReason: conditions.ReasonInvalidSubnet, wantMessage: "not a canonical IPv4 prefix",
		},
		{
			name: "no cluster network", subnet: "10.128.2.0/23",
			v:          verdict{noNetwork: true, conflict: &ipam.ConflictError{Reason: ipam.ReasonOutsideClusterNetwork}},
			wantStatus: metav1.ConditionFalse, wantReason: conditions.ReasonNoClusterNetwork, wantMessage: "no usable ClusterNetwork default",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := &vxflowv1alpha1.HostSubnet{Spec: vxflowv1alpha1.HostSubnetSpec{Subnet: tt.subnet}}
			hs.Generation = 3
			hs.Status.GatewayIP = "stale"
			setAllocatedCondition(hs, tt.v)
			setGatewayIP(hs, tt.v)
			c := conditions.Get(hs.Status.Conditions, vxflowv1alpha1.ConditionAllocated)
			if c == nil || c.Status != tt.wantStatus || c.Reason != tt.wantReason || !strings.Contains(c.Message, tt.wantMessage) {
				t.Fatalf("Allocated = %+v, want %s %s containing %q", c, tt.wantStatus, tt.wantReason, tt.wantMessage)
			}
			if c.ObservedGeneration != 3 {
				t.Fatalf("observedGeneration = %d, want 3", c.ObservedGeneration)
			}
			if hs.Status.GatewayIP != tt.wantGateway {
				t.Fatalf("gatewayIP = %q, want %q", hs.Status.GatewayIP, tt.wantGateway)
			}
		})
	}
}

func TestSetClusterNetworkConditions(t *testing.T) {
	sub := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	tests := []struct {
		name          string
		st            clusterNetworkState
		wantReady     metav1.ConditionStatus
		wantReadyWhy  string
		wantDegraded  metav1.ConditionStatus
		wantDegReason string
		wantMessage   []string
	}{
		{
			name:      "healthy",
			st:        clusterNetworkState{poolSummary: poolSummary{present: true, total: 512, allocated: 3}},
			wantReady: metav1.ConditionTrue, wantReadyWhy: conditions.ReasonSubnetsAvailable,
			wantDegraded: metav1.ConditionFalse, wantDegReason: conditions.ReasonAsExpected,
			wantMessage: []string{"can get a subnet"},
		},
		{
			name:      "full, nobody waiting",
			st:        clusterNetworkState{poolSummary: poolSummary{present: true, total: 4, allocated: 4}},
			wantReady: metav1.ConditionFalse, wantReadyWhy: conditions.ReasonPoolFull,
			wantDegraded: metav1.ConditionFalse, wantDegReason: conditions.ReasonAsExpected,
		},
		{
			name: "exhausted",
			st: clusterNetworkState{poolSummary: poolSummary{present: true, total: 4, allocated: 4},
				waiting: []string{"n5", "n6"}},
			wantReady: metav1.ConditionFalse, wantReadyWhy: conditions.ReasonPoolFull,
			wantDegraded: metav1.ConditionTrue, wantDegReason: conditions.ReasonPoolExhausted,
			wantMessage: []string{"4 of 4 subnets allocated; 2 nodes wait for a subnet: n5, n6"},
		},
		{
			name: "range removed while in use, and a conflict",
			st: clusterNetworkState{poolSummary: poolSummary{present: true, total: 4, allocated: 1, losers: []refused{
				{name: "n9", subnet: sub("10.200.0.0/24"), reason: ipam.ReasonOutsideClusterNetwork},
				{name: "vtep", subnet: sub("10.128.0.0/22"), reason: ipam.ReasonOverlap},
			}}},
			wantReady: metav1.ConditionTrue, wantReadyWhy: conditions.ReasonSubnetsAvailable,
			wantDegraded: metav1.ConditionTrue, wantDegReason: conditions.ReasonRangeInUse,
			wantMessage: []string{"n9 (10.200.0.0/24)", "1 HostSubnets were refused: vtep (Overlap)"},
		},
		{
			name: "only conflicts",
			st: clusterNetworkState{poolSummary: poolSummary{present: true, total: 4, allocated: 1, losers: []refused{
				{name: "dup", subnet: sub("10.128.0.0/24"), reason: ipam.ReasonDuplicate},
			}}},
			wantReady: metav1.ConditionTrue, wantReadyWhy: conditions.ReasonSubnetsAvailable,
			wantDegraded: metav1.ConditionTrue, wantDegReason: conditions.ReasonConflictingHostSubnets,
			wantMessage: []string{"dup (Duplicate)"},
		},
		{
			name:      "unusable spec",
			st:        clusterNetworkState{poolSummary: poolSummary{present: true, netErr: errors.New("cluster networks a and b overlap")}},
			wantReady: metav1.ConditionFalse, wantReadyWhy: conditions.ReasonInvalidSpec,
			wantDegraded: metav1.ConditionTrue, wantDegReason: conditions.ReasonInvalidSpec,
			wantMessage: []string{"Cluster networks a and b overlap"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.st.generation = 7
			cn := &vxflowv1alpha1.ClusterNetwork{}
			setCapacity(cn, tt.st)
			setReadyCondition(cn, tt.st)
			setDegradedCondition(cn, tt.st)
			if cn.Status.SubnetsTotal != int64(tt.st.total) || cn.Status.SubnetsAllocated != int64(tt.st.allocated) {
				t.Fatalf("capacity = %d/%d", cn.Status.SubnetsAllocated, cn.Status.SubnetsTotal)
			}
			r := conditions.Get(cn.Status.Conditions, vxflowv1alpha1.ConditionReady)
			if r.Status != tt.wantReady || r.Reason != tt.wantReadyWhy || r.ObservedGeneration != 7 {
				t.Fatalf("Ready = %+v, want %s %s", r, tt.wantReady, tt.wantReadyWhy)
			}
			d := conditions.Get(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)
			if d.Status != tt.wantDegraded || d.Reason != tt.wantDegReason {
				t.Fatalf("Degraded = %+v, want %s %s", d, tt.wantDegraded, tt.wantDegReason)
			}
			for _, m := range tt.wantMessage {
				if !strings.Contains(d.Message, m) {
					t.Fatalf("Degraded message %q lacks %q", d.Message, m)
				}
			}
		})
	}
}
