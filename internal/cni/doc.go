// Package cni is the node agent's side of the CNI plugin: a server on a unix socket that attaches pods to br0
// (address from the node's HostSubnet, veth, OVS port, flows through the agent) and detaches them, with
// persisted allocations, per-sandbox parallelism and leak collection; plus the conflist writer and the plugin
// installer the agent runs.
package cni
