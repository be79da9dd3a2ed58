// Package layering keeps the architecture honest: it fails when a package imports what its layer must not
// (the API only apimachinery; the renderers nothing that does I/O; only the appliers touch OVS, netlink or
// nf_tables).
package layering
