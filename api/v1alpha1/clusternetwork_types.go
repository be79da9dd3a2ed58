/*
Copyright 2026 The vxflow Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterNetworkName is the only name a ClusterNetwork may have: the cluster has one overlay.
const ClusterNetworkName = "default"

// NetworkMode selects how pods of different namespaces may reach each other.
// +kubebuilder:validation:Enum=Subnet
type NetworkMode string

const (
	// NetworkModeSubnet is a flat pod network: every pod reaches every pod (VNID 0 on the wire).
	NetworkModeSubnet NetworkMode = "Subnet"
)

// Condition types and reasons shared by the controller, the agent and the CLI.
const (
	// ConditionReady means the object is fully usable: on ClusterNetwork, the configuration is valid and
	// subnets can be handed out.
	ConditionReady = "Ready"
	// ConditionDegraded means something needs a person's attention; the reason and message say what.
	ConditionDegraded = "Degraded"
	// ConditionAllocated means the controller accepted this HostSubnet's subnet as the node's own.
	ConditionAllocated = "Allocated"
	// ConditionProgrammed means the node agent applied this node's flows, rules and routes.
	ConditionProgrammed = "Programmed"
)

// ClusterNetworkEntry is one pod address range and the size of the share each node gets from it.
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || self.hostPrefix > cidr(self.cidr).prefixLength()",messageExpression="'hostPrefix must be longer than the prefix length of ' + self.cidr + ', or no node subnet fits in it'"
type ClusterNetworkEntry struct {
	// cidr is a pod address range in canonical form, for example 10.128.0.0/14. Each node's subnet is carved
	// out of it. Only IPv4 ranges are accepted today; IPv6 entries will be added to this same list.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="'cidr ' + self + ' is not a CIDR: write it as address/prefix, for example 10.128.0.0/14'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() == 4",messageExpression="'cidr ' + self + ' is not IPv4: only IPv4 cluster networks are supported'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",messageExpression="'cidr ' + self + ' is not canonical: the bits after the prefix length must be zero (for example 10.128.0.0/14, not 10.128.0.1/14)'"
	CIDR string `json:"cidr"`

	// hostPrefix is the prefix length of each node's subnet, for example 23 gives every node a /23
	// (510 pod addresses). It must be longer than the cidr's prefix and at most 30.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=30
	HostPrefix int32 `json:"hostPrefix"`
}

// ClusterNetworkSpec is the overlay's address plan and encapsulation settings.
// +kubebuilder:validation:XValidation:rule="self.clusterNetworks.all(a, !isCIDR(a.cidr) || self.clusterNetworks.all(b, a.cidr == b.cidr || !isCIDR(b.cidr) || (!cidr(a.cidr).containsCIDR(cidr(b.cidr)) && !cidr(b.cidr).containsCIDR(cidr(a.cidr)))))",message="clusterNetworks must not overlap each other: every pod address must belong to exactly one range"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.serviceNetwork) || self.clusterNetworks.all(c, !isCIDR(c.cidr) || (!cidr(c.cidr).containsCIDR(cidr(self.serviceNetwork)) && !cidr(self.serviceNetwork).containsCIDR(cidr(c.cidr))))",messageExpression="'serviceNetwork ' + self.serviceNetwork + ' overlaps a cluster network: service addresses and pod addresses must not share a range'"
type ClusterNetworkSpec struct {
	// clusterNetworks are the pod address ranges, tried in order when a node needs a subnet.
	// Ranges may be added at any time; the hostPrefix of an existing range cannot change.
	// +required
	// +listType=map
	// +listMapKey=cidr
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="oldSelf.all(o, self.all(n, n.cidr != o.cidr || n.hostPrefix == o.hostPrefix))",message="the hostPrefix of an existing cluster network cannot change: node subnets already depend on it; add a new range instead"
	ClusterNetworks []ClusterNetworkEntry `json:"clusterNetworks"`

	// serviceNetwork is the range Service ClusterIPs come from, for example 172.30.0.0/16. It must match the
	// API server's --service-cluster-ip-range and must not overlap any cluster network.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="'serviceNetwork ' + self + ' is not a CIDR: write it as address/prefix, for example 172.30.0.0/16'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() == 4",messageExpression="'serviceNetwork ' + self + ' is not IPv4: only IPv4 service networks are supported'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",messageExpression="'serviceNetwork ' + self + ' is not canonical: the bits after the prefix length must be zero (for example 172.30.0.0/16, not 172.30.0.1/16)'"
	ServiceNetwork string `json:"serviceNetwork"`

	// vxlanPort is the UDP port of the VXLAN tunnel between nodes. Change it only when 4789 is taken on the
	// underlay (VMware NSX uses it, for example).
	// +optional
	// +kubebuilder:default=4789
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	VXLANPort int32 `json:"vxlanPort,omitempty"`

	// mtu is the pod interface MTU on every node. Leave it unset so each node uses its underlay MTU minus the
	// 50 bytes of VXLAN overhead (1450 on a 1500 underlay); a value above that drops large packets silently.
	// +optional
	// +kubebuilder:validation:Minimum=576
	// +kubebuilder:validation:Maximum=65000
	MTU *int32 `json:"mtu,omitempty"`

	// mode is the isolation model of the pod network and cannot change after creation. Only Subnet (a flat
	// network, as OpenShift SDN's ovs-subnet plugin) exists today.
	// +optional
	// +kubebuilder:default=Subnet
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="mode cannot change after creation: switching isolation models would renumber every pod's traffic"
	Mode NetworkMode `json:"mode,omitempty"`
}

// ClusterNetworkStatus is what the controller observed about the overlay.
type ClusterNetworkStatus struct {
	// observedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Ready (subnets can be handed out) and Degraded (with the reason, for example
	// PoolExhausted or a range that live subnets still use was removed).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// subnetsTotal is how many node subnets the cluster networks can hold.
	// +optional
	SubnetsTotal int64 `json:"subnetsTotal,omitempty"`

	// subnetsAllocated is how many of them HostSubnets use.
	// +optional
	SubnetsAllocated int64 `json:"subnetsAllocated,omitempty"`
}

// ClusterNetwork is the cluster's pod overlay: its address ranges, how they are split between nodes, the
// service range and the VXLAN settings. There is exactly one, named default.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cn,categories=vxflow
// +kubebuilder:printcolumn:name="Cluster CIDRs",type=string,JSONPath=`.spec.clusterNetworks[*].cidr`
// +kubebuilder:printcolumn:name="Service Network",type=string,JSONPath=`.spec.serviceNetwork`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Allocated",type=integer,JSONPath=`.status.subnetsAllocated`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.subnetsTotal`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",messageExpression="'ClusterNetwork must be named default, not ' + self.metadata.name + ': a cluster has exactly one overlay'"
type ClusterNetwork struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired overlay.
	// +required
	Spec ClusterNetworkSpec `json:"spec"`

	// status is what the controller observed.
	// +optional
	Status ClusterNetworkStatus `json:"status,omitempty"`
}

// ClusterNetworkList is a list of ClusterNetworks.
// +kubebuilder:object:root=true
type ClusterNetworkList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterNetwork `json:"items"`
}
