package ovsnode

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestStartRestartStop is an integration test: it starts a real OVS in a netns, restarts ovs-vswitchd and
// checks that everything is gone after Cleanup.
func TestStartRestartStop(t *testing.T) {
	RequireRoot(t)
	var n *Node
	var pids []int
	t.Run("node", func(t *testing.T) {
		n = Start(t, "selftest")
		t.Cleanup(func() { pids = []int{n.ovsdbPID, n.vswitchPID} }) // runs before the node's own cleanup
		n.Vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev", "fail-mode=secure",
			"protocols=OpenFlow13")
		n.WaitBridge("br0", 10*time.Second)
		n.Ofctl("add-flow", "br0", "table=0,priority=1,actions=drop")
		if out := n.Ofctl("dump-flows", "br0"); !strings.Contains(out, "priority=1 actions=drop") {
			t.Fatalf("flow not installed: %s", out)
		}
		if out := n.MustRun("ip", "link", "show", "br0"); !strings.Contains(out, "br0") {
			t.Fatalf("br0 tap not in the node netns: %s", out)
		}
		old := n.VSwitchdPID()
		n.StopVSwitchd()
		if alive(old) {
			t.Fatalf("ovs-vswitchd %d still alive", old)
		}
		n.StartVSwitchd()
		n.WaitBridge("br0", 10*time.Second)
		if n.VSwitchdPID() == old {
			t.Fatalf("ovs-vswitchd PID did not change")
		}
		if out := n.Ofctl("dump-flows", "br0"); strings.Contains(out, "actions=drop") {
			t.Fatalf("flows survived an ovs-vswitchd restart: %s", out)
		}
	})
	for _, pid := range pids {
		if pid == 0 || alive(pid) {
			t.Errorf("daemon PID %d not stopped by cleanup (pids %v)", pid, pids)
		}
	}
	if _, err := os.Stat(NetNSPath(n.NetNS)); !os.IsNotExist(err) {
		t.Errorf("netns %s still exists: %v", n.NetNS, err)
	}
	if _, err := os.Stat(n.Dir); !os.IsNotExist(err) {
		t.Errorf("dir %s still exists: %v", n.Dir, err)
	}
}
