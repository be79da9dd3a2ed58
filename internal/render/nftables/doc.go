// Package nftables renders the desired Service NAT and egress masquerade ruleset of one node, table ip
// vxflow, as a pure function of a validated model.ServiceSet, in a form that prints exactly as
// `nft list table ip vxflow` lists it back and that internal/apply/nft programs over netlink.
package nftables
