// Package demo reproduces the seed on a running lab and tells, from the live nftables, routing, OVS and
// conntrack state, what happens to the packet at each hop; `make demo` runs it through `vxflow-lab demo`.
package demo
