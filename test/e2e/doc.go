// Package e2e is vxflow's end-to-end suite: it brings up the network-namespace lab (test/lab) with the real
// controller, agents and CNI plugin, and proves the packet walks of design.md §3 plus recovery from crashes
// and hand edits. It needs root and runs with `make e2e` (build tag e2e).
package e2e
