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

// Annotations the controller reads and writes on HostSubnets.
const (
	// NodeUIDAnnotation records the UID of the Node a HostSubnet was allocated for, so that a Node deleted and
	// re-created under the same name never inherits a stale object.
	NodeUIDAnnotation = "network.vxflow.io/node-uid"
)

// HostSubnetSpec is one node's VTEP address and its share of the cluster network. The singular fields hold
// the IPv4 values; dual-stack will add plural fields beside them, as Pod has podIP and podIPs.
// +kubebuilder:validation:XValidation:rule="self.subnet == oldSelf.subnet",message="subnet cannot change: pods on the node use addresses from it; delete the HostSubnet and let the controller allocate a new one"
type HostSubnetSpec struct {
	// host is the name of the node this subnet belongs to; it must equal metadata.name. A HostSubnet whose
	// host is not a Node (an external VTEP, for example) is kept as long as it is valid.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Host string `json:"host"`

	// hostIP is the node's IPv4 underlay address, the VTEP that VXLAN packets for this subnet are sent to.
	// The controller keeps it equal to the Node's InternalIP.
	// +required
	// +kubebuilder:validation:MinLength=7
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",messageExpression="'hostIP ' + self + ' is not an IPv4 address: write it as four decimal numbers, for example 192.168.100.11'"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip.isCanonical(self)",messageExpression="'hostIP ' + self + ' is not in canonical form: remove leading zeros'"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).isGlobalUnicast()",messageExpression="'hostIP ' + self + ' cannot carry VXLAN: loopback, unspecified, link-local, multicast and broadcast addresses are not node addresses'"
	HostIP string `json:"hostIP"`

	// subnet is the node's pod range in canonical form, for example 10.128.2.0/23, inside one of the
	// ClusterNetwork's ranges. The first address is the node's gateway (tun0); pods get the others.
	// It cannot change once set.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="'subnet ' + self + ' is not a CIDR: write it as address/prefix, for example 10.128.2.0/23'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() == 4",messageExpression="'subnet ' + self + ' is not IPv4'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",messageExpression="'subnet ' + self + ' is not canonical: the bits after the prefix length must be zero (for example 10.128.2.0/23, not 10.128.2.1/23)'"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).prefixLength() <= 30",messageExpression="'subnet ' + self + ' is too small: a node needs at least a /30 (a gateway and one pod)'"
	Subnet string `json:"subnet"`
}

// HostSubnetAgentStatus is the node agent's report of what it programmed.
type HostSubnetAgentStatus struct {
	// lastSync is when the agent last finished applying this node's state.
	// +optional
	LastSync *metav1.Time `json:"lastSync,omitempty"`

	// observedGeneration is the HostSubnet generation the last sync rendered.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// flows is the number of OpenFlow flows on br0 after the last sync.
	// +optional
	Flows int32 `json:"flows,omitempty"`

	// nftRules is the number of rules and map elements in the agent's nftables table after the last sync.
	// +optional
	NFTRules int32 `json:"nftRules,omitempty"`

	// stateHash is a hash of the rendered desired state, so a person can check that a node runs what
	// `vxflowctl render` prints for it.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	StateHash string `json:"stateHash,omitempty"`

	// mtu is the pod MTU the node uses (ClusterNetwork.spec.mtu, or its underlay MTU minus 50).
	// +optional
	MTU int32 `json:"mtu,omitempty"`

	// datapathType is the Open vSwitch datapath of br0: system (kernel module) or netdev (userspace).
	// +optional
	// +kubebuilder:validation:MaxLength=16
	DatapathType string `json:"datapathType,omitempty"`

	// nftLayout is how the agent lays out Service endpoints in nftables (its --nft-endpoints flag):
	// EndpointMap (the default), InlineEndpoints or EndpointChains, so that `vxflowctl render` renders the
	// same table; empty is read as EndpointMap.
	// +optional
	// +kubebuilder:validation:Enum=EndpointMap;InlineEndpoints;EndpointChains
	NFTLayout string `json:"nftLayout,omitempty"`
}

// The values of HostSubnetAgentStatus.NFTLayout.
const (
	// NFTLayoutEndpointMap selects endpoints through shared data maps wherever no per-endpoint chain is needed.
	NFTLayoutEndpointMap = "EndpointMap"
	// NFTLayoutInlineEndpoints DNATs from each Service's chain wherever no per-endpoint chain is needed.
	NFTLayoutInlineEndpoints = "InlineEndpoints"
	// NFTLayoutEndpointChains gives every endpoint its own chain.
	NFTLayoutEndpointChains = "EndpointChains"
)

// HostSubnetStatus is what the controller and the node agent observed.
type HostSubnetStatus struct {
	// observedGeneration is the spec generation the controller's conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Allocated (set by the controller: the subnet is this node's, or why not) and
	// Programmed (set by the node agent: flows, rules and routes applied, or why not).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// gatewayIP is the node's gateway on the pod network: the first address of the subnet, held by tun0.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	GatewayIP string `json:"gatewayIP,omitempty"`

	// agent is the node agent's report of its last sync.
	// +optional
	Agent *HostSubnetAgentStatus `json:"agent,omitempty"`
}

// HostSubnet is one node's share of the pod network: the subnet its pods use and the underlay address that
// other nodes tunnel to. The controller creates one per Node, named after it; hand-made ones are respected.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=hsn,categories=vxflow
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=`.spec.host`
// +kubebuilder:printcolumn:name="Host IP",type=string,JSONPath=`.spec.hostIP`
// +kubebuilder:printcolumn:name="Subnet",type=string,JSONPath=`.spec.subnet`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.spec.host == self.metadata.name",messageExpression="'spec.host ' + self.spec.host + ' must equal the HostSubnet name ' + self.metadata.name + ': a HostSubnet is named after its node'"
type HostSubnet struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the node's address assignment.
	// +required
	Spec HostSubnetSpec `json:"spec"`

	// status is what the controller and the node agent observed.
	// +optional
	Status HostSubnetStatus `json:"status,omitempty"`
}

// HostSubnetList is a list of HostSubnets.
// +kubebuilder:object:root=true
type HostSubnetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HostSubnet `json:"items"`
}
