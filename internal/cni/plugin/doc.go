// Package plugin is the vxflow-cni binary's logic: it forwards each CNI command to the node agent's CNI server
// over a unix socket and turns the answer, or the reason there is none, into a CNI result or error.
package plugin
