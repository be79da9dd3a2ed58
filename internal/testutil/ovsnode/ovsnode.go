package ovsnode

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Schema is the Open_vSwitch database schema the packaged daemons use.
const Schema = "/usr/share/openvswitch/vswitch.ovsschema"

var seq atomic.Int64

// uniqueName returns a name that is unique on the machine for this process: label, PID and a counter.
// Interface-name-like limits do not apply to netns names, but they stay short to keep logs readable.
func uniqueName(label string) string {
	return fmt.Sprintf("vx%s-%d-%d", label, os.Getpid(), seq.Add(1))
}

// RequireRoot skips the test unless it runs as root; every test of this package's users needs root for
// network namespaces and OVS.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, Open vSwitch)")
	}
}

// NewNetNS creates an empty network namespace with a unique name (loopback up) and deletes it in Cleanup.
// It returns the name, usable with `ip netns exec` and under /run/netns.
func NewNetNS(t testing.TB, label string) string {
	t.Helper()
	RequireRoot(t)
	name := uniqueName(label)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("failed to create netns %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("failed to delete netns %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("failed to set lo up in %s: %v: %s", name, err, out)
	}
	return name
}

// RunIn runs a command inside the named network namespace and returns its combined output.
func RunIn(netns, name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", netns, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("failed to run %s %s in %s: %w: %s", name, strings.Join(args, " "), netns, err, out)
	}
	return string(out), nil
}

// MustIP runs `ip -n netns args...` and fails the test on error.
func MustIP(t testing.TB, netns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("failed to run ip -n %s %s: %v: %s", netns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NetNSPath returns the bind-mount path of a named network namespace.
func NetNSPath(name string) string { return filepath.Join("/run/netns", name) }

// Node is one Open vSwitch instance in its own network namespace.
type Node struct {
	// NetNS is the name of the network namespace the daemons run in (their tap devices, such as bridge
	// internal ports, appear there).
	NetNS string
	// Dir holds the database (db/), the run directory (run/) and the logs (log/).
	Dir string
	// RunDir is the daemons' OVS_RUNDIR: db.sock, <bridge>.mgmt, the pidfiles and control sockets.
	RunDir string
	// DBSocket is the path of ovsdb-server's unix socket.
	DBSocket string

	t          testing.TB
	ovsdbPID   int
	vswitchPID int
}

// Start creates a network namespace and a directory, starts ovsdb-server and ovs-vswitchd in them and
// initialises the database; Cleanup undoes all of it. It fails the test when the OVS binaries are missing.
func Start(t testing.TB, label string) *Node {
	t.Helper()
	RequireRoot(t)
	for _, b := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("failed to find %s: install openvswitch-switch and iproute2: %v", b, err)
		}
	}
	// os.MkdirTemp, not t.TempDir: unix socket paths are limited to 107 bytes and test names can be long.
	dir, err := os.MkdirTemp("", "ovsnode-")
	if err != nil {
		t.Fatalf("failed to create the node directory: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("failed to remove %s: %v", dir, err)
		}
	})
	n := &Node{
		NetNS:    NewNetNS(t, label),
		Dir:      dir,
		RunDir:   filepath.Join(dir, "run"),
		DBSocket: filepath.Join(dir, "run", "db.sock"),
		t:        t,
	}
	for _, d := range []string{"db", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatalf("failed to create %s: %v", d, err)
		}
	}
	// Registered after the netns and dir cleanups, so it runs before them (LIFO).
	t.Cleanup(n.stopAll)

	db := filepath.Join(dir, "db", "conf.db")
	if out, err := n.command("ovsdb-tool", "create", db, Schema).CombinedOutput(); err != nil {
		t.Fatalf("failed to create the OVS database: %v: %s", err, out)
	}
	n.ovsdbPID = n.startDaemon("ovsdb-server", db, "--remote=punix:"+n.DBSocket)
	n.Vsctl("--no-wait", "init")
	n.StartVSwitchd()
	return n
}

// DBEndpoint returns the OVSDB endpoint in libovsdb and ovs-vsctl syntax ("unix:<path>").
func (n *Node) DBEndpoint() string { return "unix:" + n.DBSocket }

// Env returns the environment the OVS tools need to find this node's daemons and bridges.
func (n *Node) Env() []string {
	return append(os.Environ(),
		"OVS_RUNDIR="+n.RunDir,
		"OVS_LOGDIR="+filepath.Join(n.Dir, "log"),
		"OVS_DBDIR="+filepath.Join(n.Dir, "db"),
	)
}

// command returns a command run inside the node's network namespace with the node's OVS environment.
func (n *Node) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.NetNS, name}, args...)...)
	cmd.Env = n.Env()
	return cmd
}

// Run runs a command inside the node's network namespace with the node's OVS environment and returns its
// stdout; the error carries stderr.
func (n *Node) Run(name string, args ...string) (string, error) {
	cmd := n.command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("failed to run %s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustRun is Run that fails the test on error.
func (n *Node) MustRun(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Vsctl runs ovs-vsctl against the node's database and fails the test on error.
func (n *Node) Vsctl(args ...string) string {
	n.t.Helper()
	return n.MustRun("ovs-vsctl", append([]string{"--db=" + n.DBEndpoint(), "--timeout=10"}, args...)...)
}

// Ofctl runs `ovs-ofctl -O OpenFlow13` (bridges are found in the node's run directory) and fails the test
// on error.
func (n *Node) Ofctl(args ...string) string {
	n.t.Helper()
	return n.MustRun("ovs-ofctl", append([]string{"-O", "OpenFlow13", "--timeout=10"}, args...)...)
}

// Appctl runs ovs-appctl against the node's ovs-vswitchd and fails the test on error.
func (n *Node) Appctl(args ...string) string {
	n.t.Helper()
	return n.MustRun("ovs-appctl", append([]string{"--timeout=10"}, args...)...)
}

// VSwitchdPID returns the PID of the running ovs-vswitchd, 0 when it is stopped.
func (n *Node) VSwitchdPID() int { return n.vswitchPID }

// StartVSwitchd starts ovs-vswitchd; it returns once the daemon has read its configuration (--detach).
func (n *Node) StartVSwitchd() {
	n.t.Helper()
	if n.vswitchPID != 0 {
		n.t.Fatalf("ovs-vswitchd of %s already runs as PID %d", n.NetNS, n.vswitchPID)
	}
	n.vswitchPID = n.startDaemon("ovs-vswitchd", n.DBEndpoint())
}

// StopVSwitchd stops ovs-vswitchd by its PID (SIGTERM, SIGKILL after 5 s), as a crash or an upgrade would;
// the database and its configuration stay.
func (n *Node) StopVSwitchd() {
	n.t.Helper()
	if err := n.stop(n.vswitchPID, "ovs-vswitchd"); err != nil {
		n.t.Fatal(err)
	}
	n.vswitchPID = 0
}

// WaitBridge waits until ovs-vswitchd serves OpenFlow on bridge (its <bridge>.mgmt socket answers).
func (n *Node) WaitBridge(bridge string, timeout time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := n.Run("ovs-ofctl", "-O", "OpenFlow13", "--timeout=2", "dump-aggregate", bridge)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("bridge %s of %s did not come up in %s: %v", bridge, n.NetNS, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDaemon starts an OVS daemon detached inside the namespace and returns the PID from its pidfile.
func (n *Node) startDaemon(name string, args ...string) int {
	n.t.Helper()
	pidfile := filepath.Join(n.RunDir, name+".pid")
	args = append(args,
		"--pidfile="+pidfile,
		"--log-file="+filepath.Join(n.Dir, "log", name+".log"),
		"-vconsole:off", "--no-chdir", "--detach")
	if out, err := n.command(name, args...).CombinedOutput(); err != nil {
		n.t.Fatalf("failed to start %s in %s: %v: %s", name, n.NetNS, err, out)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		n.t.Fatalf("failed to read the pidfile of %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		n.t.Fatalf("failed to parse the pidfile of %s: %v", name, err)
	}
	return pid
}

// stopAll stops the daemons (ovs-vswitchd first) and, when the test failed, logs the tail of their logs.
func (n *Node) stopAll() {
	if n.t.Failed() {
		for _, name := range []string{"ovs-vswitchd", "ovsdb-server"} {
			b, _ := os.ReadFile(filepath.Join(n.Dir, "log", name+".log"))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			n.t.Logf("%s log of %s (tail):\n%s", name, n.NetNS, strings.Join(lines, "\n"))
		}
	}
	if err := n.stop(n.vswitchPID, "ovs-vswitchd"); err != nil {
		n.t.Error(err)
	}
	n.vswitchPID = 0
	if err := n.stop(n.ovsdbPID, "ovsdb-server"); err != nil {
		n.t.Error(err)
	}
	n.ovsdbPID = 0
}

// stop kills pid if, and only if, it still is the daemon this node started (its command line names the
// node's directory), then waits for it to exit.
func (n *Node) stop(pid int, name string) error {
	if pid == 0 || !alive(pid) {
		return nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(n.Dir)) {
		return nil // gone, or the PID was reused by something that is not ours
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to stop %s (PID %d): %w", name, pid, err)
	}
	for range 250 {
		if !alive(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to kill %s (PID %d): %w", name, pid, err)
	}
	for range 250 {
		if !alive(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("failed to stop %s (PID %d): still running after SIGKILL", name, pid)
}

// alive reports whether pid runs and is not a zombie: detached daemons are re-parented to PID 1, which may
// reap them only later.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself contain spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
