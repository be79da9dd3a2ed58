// Package ipam hands out node subnets from the cluster networks: a pure, bitmap-backed allocator and a ledger
// that decides, the same way from any starting point, which HostSubnet holds a subnet and which conflicts.
package ipam
