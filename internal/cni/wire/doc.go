// Package wire is the protocol between the vxflow-cni plugin and the node agent's CNI server: the network
// configuration the plugin reads, the request and response it sends over the agent's unix socket, and the CNI
// error codes both sides use; it is kept free of the agent's dependencies so the plugin binary stays small.
package wire
