// Package cli implements vxflowctl, which makes vxflow explain itself: it renders a node's flows and nftables
// ruleset offline from manifests, shows the live status of the overlay, and traces a packet hop by hop.
package cli
