// Package link is the only code that changes the node's kernel networking for the SDN: tun0's gateway
// address, routes and MTU, the sysctls the packet path needs, the pod MTU check against the underlay, and
// moving the node IP onto an OVS bridge for the userspace datapath's native tunneling; all by diff.
package link
