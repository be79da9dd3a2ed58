package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vxflow/vxflow/test/lab/proc"
)

// ovsSchema is the Open_vSwitch database schema the packaged daemons use.
const ovsSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// OVS describes one node's private Open vSwitch: its own database, run directory and logs under the node's
// state directory, its daemons inside the node's network namespace.
type OVS struct {
	NetNS  string
	Dir    string
	RunDir string
	DBSock string
}

func newOVS(netns, nodeDir string) OVS {
	dir := filepath.Join(nodeDir, "ovs")
	return OVS{NetNS: netns, Dir: dir, RunDir: filepath.Join(dir, "run"), DBSock: filepath.Join(dir, "run", "db.sock")}
}

// DBEndpoint returns the database endpoint in ovs-vsctl and libovsdb syntax.
func (o OVS) DBEndpoint() string { return "unix:" + o.DBSock }

// Env returns the environment OVS's tools need to find this node's daemons and bridges (lab.md pitfall 1:
// without OVS_RUNDIR the daemons cannot create their control sockets).
func (o OVS) Env() []string {
	return []string{"OVS_RUNDIR=" + o.RunDir, "OVS_LOGDIR=" + filepath.Join(o.Dir, "log"), "OVS_DBDIR=" + filepath.Join(o.Dir, "db")}
}

// pidFile returns the pidfile a daemon writes.
func (o OVS) pidFile(daemon string) string { return filepath.Join(o.RunDir, daemon+".pid") }

// Run runs an OVS tool (or any command) in the node's namespace with the node's OVS environment.
func (o OVS) Run(ctx context.Context, name string, args ...string) (string, error) {
	return nsRun(ctx, o.NetNS, o.Env(), name, args...)
}

// Vsctl runs ovs-vsctl against the node's database.
func (o OVS) Vsctl(ctx context.Context, args ...string) (string, error) {
	return o.Run(ctx, "ovs-vsctl", append([]string{"--db=" + o.DBEndpoint(), "--timeout=10"}, args...)...)
}

// start creates the database and starts ovsdb-server and ovs-vswitchd.
func (o OVS) start(ctx context.Context, hostname string) error {
	for _, d := range []string{"db", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o750); err != nil {
			return fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	db := filepath.Join(o.Dir, "db", "conf.db")
	if _, err := run(ctx, nil, "ovsdb-tool", "create", db, ovsSchema); err != nil {
		return err
	}
	if err := o.startDaemon(ctx, "ovsdb-server", db, "--remote=punix:"+o.DBSock); err != nil {
		return err
	}
	if _, err := o.Vsctl(ctx, "--no-wait", "init", "--", "set", "Open_vSwitch", ".",
		"external_ids:hostname="+hostname, "external_ids:system-id="+hostname); err != nil {
		return err
	}
	return o.StartVSwitchd(ctx)
}

// StartVSwitchd starts ovs-vswitchd; --detach returns once it has read its configuration.
func (o OVS) StartVSwitchd(ctx context.Context) error {
	return o.startDaemon(ctx, "ovs-vswitchd", o.DBEndpoint())
}

// StopVSwitchd stops ovs-vswitchd by its recorded PID (SIGTERM, then SIGKILL), as a crash or upgrade would:
// the database and the tap devices stay, the OpenFlow flows are gone (lab.md pitfall 8).
func (o OVS) StopVSwitchd() error {
	return proc.StopPIDFile(o.pidFile("ovs-vswitchd"), o.Dir, syscall.SIGTERM, 5*time.Second)
}

// VSwitchdPID returns the PID of the running ovs-vswitchd (0 when stopped).
func (o OVS) VSwitchdPID() int {
	pid, _ := proc.ReadPIDFile(o.pidFile("ovs-vswitchd"))
	if pid != 0 && !proc.Ours(pid, o.Dir) {
		return 0
	}
	return pid
}

// stop stops both daemons.
func (o OVS) stop() error {
	if err := o.StopVSwitchd(); err != nil {
		return err
	}
	return proc.StopPIDFile(o.pidFile("ovsdb-server"), o.Dir, syscall.SIGTERM, 5*time.Second)
}

func (o OVS) startDaemon(ctx context.Context, name string, args ...string) error {
	args = append(args,
		"--pidfile="+o.pidFile(name),
		"--log-file="+filepath.Join(o.Dir, "log", name+".log"),
		"-vconsole:off", "--no-chdir", "--detach")
	if _, err := o.Run(ctx, name, args...); err != nil {
		return fmt.Errorf("failed to start %s in %s: %w", name, o.NetNS, err)
	}
	pid, err := proc.ReadPIDFile(o.pidFile(name))
	if err != nil || pid == 0 {
		return fmt.Errorf("failed to read the PID of %s in %s: %v", name, o.NetNS, err)
	}
	return nil
}

// FlowMatches returns, for every flow of an `ovs-ofctl --no-stats dump-flows` output whose line contains
// substr, its "table=T,priority=P,<match>" in the form `ovs-ofctl --strict del-flows` accepts (a flow
// printed without a table is in table 0).
func FlowMatches(dump, substr string) []string {
	var out []string
	for _, line := range strings.Split(dump, "\n") {
		i := strings.Index(line, " actions=")
		if i < 0 || !strings.Contains(line, substr) {
			continue
		}
		var parts []string
		table := "table=0"
		for _, f := range strings.Split(strings.TrimSpace(line[:i]), ", ") {
			switch {
			case strings.HasPrefix(f, "cookie="):
			case strings.HasPrefix(f, "table="):
				table = f
			default:
				parts = append(parts, f)
			}
		}
		out = append(out, table+","+strings.Join(parts, ","))
	}
	return out
}
