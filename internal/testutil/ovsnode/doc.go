// Package ovsnode starts a private Open vSwitch (ovsdb-server and ovs-vswitchd, userspace datapath) inside a
// network namespace for a test, so OVS tests never touch the host's switch and can run side by side.
//
// Each Node has its own directory (database, run directory with the control and bridge sockets, logs) and its
// own network namespace, both with unique names; t.Cleanup stops the daemons by the PIDs they were started with
// and deletes the namespace and the directory, also when the test fails. The OVS tools are run with
// OVS_RUNDIR pointing at the node's run directory, which is how ovs-ofctl finds <bridge>.mgmt and ovs-appctl
// finds ovs-vswitchd (see lab.md, pitfall 1).
package ovsnode
