// Package lab builds vxflow's multi-node lab on one machine: a control plane, nodes and an external client as
// network namespaces on a shared underlay, each node with its own Open vSwitch, and pods created through the
// real CNI plugin as a kubelet would; `make demo`, `make e2e` and the CLI tests all drive it through this API.
package lab
