// Package nft is the only code that writes nf_tables: it programs the renderer's table ip vxflow into a
// network namespace over netlink, one atomic transaction per sync, sending only what changed.
package nft
