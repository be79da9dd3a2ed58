// Command vxflow-cni is the CNI plugin the container runtime executes for every pod sandbox; it forwards each
// request to the node's vxflow-agent over a unix socket and prints the agent's CNI result or error.
package main

import (
	"fmt"
	"os"

	"github.com/vxflow/vxflow/internal/cni/plugin"
)

const usage = `vxflow-cni is vxflow's CNI plugin (CNI spec 1.1; it also accepts configurations of 0.3.0 to 1.0.0).

The container runtime runs it with CNI_COMMAND set to ADD, DEL, CHECK, STATUS, GC or VERSION, the other CNI_*
variables, and the network configuration on stdin. It forwards the request to the node's vxflow-agent over the
agent's unix socket ("socket" in the configuration, default /var/run/vxflow/cni.sock, root only), which
allocates the pod's address from the node's HostSubnet, creates the veth, attaches it to br0 and programs the
pod's flows. The plugin prints the agent's CNI result, or a CNI error with a code and a message: 11 when the
agent is not running or the node network is not ready (the runtime retries), 50 for STATUS in that case,
100 when the node's subnet has no free address, 101 when CHECK finds something broken, 102 for other setup
failures.

vxflow-agent writes the conflist (10-vxflow.conflist) into the CNI configuration directory once its node
network is ready, and installs this binary into the CNI binary directory (vxflow-agent install-cni).
It is not meant to be run by hand; to exercise it, use the upstream cnitool with that conflist:
  CNI_PATH=/opt/cni/bin NETCONFPATH=/etc/cni/net.d cnitool add vxflow /var/run/netns/<name>
`

func main() {
	for _, a := range os.Args[1:] {
		if a == "--help" || a == "-h" || a == "help" {
			fmt.Print(usage)
			return
		}
	}
	if err := plugin.Main(); err != nil {
		os.Exit(1)
	}
}
