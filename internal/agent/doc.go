// Package agent is the node agent's sync loop: it observes the API and the node, builds the node's model,
// renders the desired OpenFlow flows and nftables rules and has the appliers converge the node onto them,
// then reports to the node's HostSubnet status.
package agent
