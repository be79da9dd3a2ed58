package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vxflow/vxflow/test/lab/controlplane"
	"github.com/vxflow/vxflow/test/lab/proc"
)

// Lab is a running (or starting) lab; Up creates one, Open attaches to one another process created.
type Lab struct {
	Config
	clients clientCache
}

// ErrMissingBinary says a vxflow binary has not been built yet; steps that need it are skipped.
var ErrMissingBinary = errors.New("binary not built")

// Up creates the lab: the underlay switch, the control plane, the external client and Config.Nodes nodes
// with their OVS, then vxflow-controller and the agents when they are built. On failure it tears down what it
// made unless keepOnError is set (for debugging).
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("failed to bring up the lab: %w", err)
	}
	if err := preflight(cfg); err != nil {
		return nil, err
	}
	l := &Lab{Config: cfg}
	if err := l.up(ctx); err != nil {
		l.logf("Bringing up lab %s failed: %v", cfg.Name, err)
		if os.Getenv("VXFLOW_LAB_KEEP_ON_ERROR") == "" {
			if derr := Down(context.WithoutCancel(ctx), cfg); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return nil, err
	}
	return l, nil
}

// Open attaches to a lab that is up.
func Open(cfg Config) (*Lab, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := loadState(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("failed to open lab %s (is it up? `vxflow-lab up`): %w", cfg.Name, err)
	}
	return &Lab{Config: cfg}, nil
}

// preflight checks what Up needs before it touches anything.
func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("failed to bring up the lab: it needs root (network namespaces, Open vSwitch)")
	}
	var missing []string
	for _, b := range []string{"ip", "sysctl", "ethtool", "ping", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "nft"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	for _, b := range []string{filepath.Join(cfg.K8sBinDir, "kube-apiserver"), filepath.Join(cfg.K8sBinDir, "etcd"), cfg.LabBin} {
		if _, err := os.Stat(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("failed to bring up the lab: missing %s (run hack/install-deps.sh, `make control-plane` and "+
			"`go build -o bin/vxflow-lab ./test/lab/cmd/vxflow-lab`)", strings.Join(missing, ", "))
	}
	if _, err := os.Stat(statePath(cfg.StateDir)); err == nil {
		return fmt.Errorf("failed to bring up lab %s: it is already up (state in %s); run `vxflow-lab down` first", cfg.Name, cfg.StateDir)
	}
	if ns, _ := listNetNS(cfg.Name); len(ns) > 0 {
		return fmt.Errorf("failed to bring up lab %s: namespaces of an earlier run remain (%s); run `vxflow-lab down` first",
			cfg.Name, strings.Join(ns, " "))
	}
	return nil
}

func (l *Lab) up(ctx context.Context) error {
	start := time.Now()
	for _, d := range []string{l.StateDir, l.binDir(), l.cniBinDir(), filepath.Join(l.StateDir, "pids"), filepath.Join(l.StateDir, "logs")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	if err := saveState(l.StateDir, &State{Name: l.Name, Created: time.Now()}); err != nil {
		return err
	}
	if err := installBinary(l.LabBin, filepath.Join(l.binDir(), "vxflow-lab")); err != nil {
		return err
	}
	if err := l.createUnderlay(ctx); err != nil {
		return err
	}
	if err := l.attach(ctx, l.NetNS(roleControlPlane), roleControlPlane, ControlPlaneIP.String()); err != nil {
		return err
	}
	cp, err := l.startControlPlane()
	if err != nil {
		return err
	}
	l.logf("Started the control plane (PID %d) in %s", cp.PID, l.NetNS(roleControlPlane))
	if err := l.attach(ctx, l.NetNS(roleExternal), roleExternal, ExternalIP.String()); err != nil {
		return err
	}
	for i := 1; i <= l.Nodes; i++ {
		if err := l.createNodeNetwork(ctx, i); err != nil {
			return err
		}
	}
	if err := l.writeAccessFile(); err != nil {
		return err
	}
	l.logf("Created %d nodes with Open vSwitch (userspace datapath) in %s", l.Nodes, since(start))
	if err := l.waitControlPlane(ctx, cp); err != nil {
		return err
	}
	l.logf("Control plane ready at https://%s:%d in %s", ControlPlaneIP, APIServerPort, since(start))
	for i := 1; i <= l.Nodes; i++ {
		if err := l.registerNode(ctx, i); err != nil {
			return err
		}
	}
	if err := l.warmUnderlay(ctx); err != nil {
		return err
	}
	l.logf("Underlay: every node reaches the control plane, the external client and each other")
	if !l.NoController {
		if err := l.StartController(ctx); err != nil {
			if !errors.Is(err, ErrMissingBinary) {
				return err
			}
			l.logf("Skipped vxflow-controller: %v", err)
		}
	}
	if !l.NoAgents {
		for i := 1; i <= l.Nodes; i++ {
			if err := l.StartAgent(ctx, NodeName(i)); err != nil {
				if !errors.Is(err, ErrMissingBinary) {
					return err
				}
				l.logf("Skipped the agents: %v", err)
				break
			}
		}
	}
	l.logf("Lab %s is up in %s (state in %s)", l.Name, since(start), l.StateDir)
	return nil
}

// startControlPlane starts `vxflow-lab controlplane` inside the control-plane namespace.
func (l *Lab) startControlPlane() (*proc.Process, error) {
	return proc.Start(proc.Spec{
		NetNS: l.NetNS(roleControlPlane),
		Argv: []string{filepath.Join(l.binDir(), "vxflow-lab"), "controlplane",
			"--state-dir=" + l.StateDir, "--repo-root=" + l.RepoRoot, "--assets=" + l.K8sBinDir,
			"--address=" + ControlPlaneIP.String(), "--port=" + strconv.Itoa(APIServerPort), "--service-cidr=" + ServiceCIDR},
		Log:     l.logFile("controlplane"),
		PIDFile: l.pidFile("controlplane"),
		Marker:  l.StateDir,
	})
}

// waitControlPlane waits for the control plane's ready file, failing early if the process died.
func (l *Lab) waitControlPlane(ctx context.Context, p *proc.Process) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := os.Stat(controlplane.ReadyPath(l.StateDir)); err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("failed to start the control plane: it exited; log tail:\n%s", tail(l.logFile("controlplane"), 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("failed to start the control plane in 90s; log tail:\n%s", tail(l.logFile("controlplane"), 30))
		}
	}
}

// warmUnderlay pings across the underlay from every node: it proves the underlay and fills the kernels'
// neighbour tables (OVS learns tunnel neighbours only later, see LearnTunnelNeighbours).
func (l *Lab) warmUnderlay(ctx context.Context) error {
	st, err := loadState(l.StateDir)
	if err != nil {
		return err
	}
	targets := []string{ControlPlaneIP.String(), ExternalIP.String()}
	for _, n := range st.Nodes {
		targets = append(targets, n.IP)
	}
	for _, n := range st.Nodes {
		for _, t := range targets {
			if t == n.IP {
				continue
			}
			if err := Ping(ctx, n.NetNS, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// LearnTunnelNeighbours makes every node's OVS learn the underlay MAC of every other node, so the first
// VXLAN packet to a node is not dropped while OVS resolves it (lab.md part A, pitfall 5). OVS learns
// neighbours only by snooping ARP while native tunneling is on, i.e. once the agent has created vxlan0:
// call this after the agents programmed their nodes. The kernel's cached entries are flushed first so the
// pings really exchange ARP through br-ex.
func (l *Lab) LearnTunnelNeighbours(ctx context.Context) error {
	st, err := loadState(l.StateDir)
	if err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if err := ip(ctx, "-n", n.NetNS, "neigh", "flush", "dev", "br-ex"); err != nil {
			return err
		}
		for _, peer := range st.Nodes {
			if peer.Name == n.Name {
				continue
			}
			if err := Ping(ctx, n.NetNS, peer.IP); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ping sends pings from a namespace until one is answered (at most 5 s).
func Ping(ctx context.Context, netns, addr string) error {
	_, err := nsRun(ctx, netns, nil, "ping", "-c", "1", "-w", "5", "-q", addr)
	if err != nil {
		return fmt.Errorf("failed to ping %s from %s: %w", addr, netns, err)
	}
	return nil
}

// Down removes everything lab cfg made: its processes (only by recorded PID, after checking each still runs
// a command line naming the state directory), its network namespaces and its state directory. It works on a
// half-built or crashed lab and does nothing when nothing is left.
func Down(ctx context.Context, cfg Config) error {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	var errs []error
	files, err := proc.PIDFiles(cfg.StateDir)
	if err != nil {
		errs = append(errs, err)
	}
	// Clients first, the control plane after its users, the OVS daemons last; ovs-vswitchd before ovsdb-server.
	rank := func(path string) int {
		base := filepath.Base(path)
		switch {
		case strings.HasPrefix(base, "pod-"), strings.HasPrefix(base, "ext-"):
			return 0
		case strings.HasPrefix(base, "agent-"):
			return 1
		case strings.HasPrefix(base, "controller"):
			return 2
		case base == "controlplane.pid":
			return 3
		case strings.HasPrefix(base, "cp-"):
			return 4
		case base == "ovs-vswitchd.pid":
			return 5
		case base == "ovsdb-server.pid":
			return 6
		}
		return 7
	}
	slices.SortStableFunc(files, func(a, b string) int { return rank(a) - rank(b) })
	for _, f := range files {
		grace := 5 * time.Second
		switch base := filepath.Base(f); {
		case base == "controlplane.pid":
			grace = 30 * time.Second // envtest stops kube-apiserver and etcd first
		case strings.HasPrefix(base, "cp-"):
			grace = 2 * time.Second // orphans of a crashed control plane: no one waits for a graceful end
		}
		if err := proc.StopPIDFile(f, cfg.StateDir, syscall.SIGTERM, grace); err != nil {
			errs = append(errs, err)
		}
	}
	nss, err := listNetNS(cfg.Name)
	if err != nil {
		errs = append(errs, err)
	}
	// Pods before nodes, the underlay switch last (cosmetic: deleting a namespace deletes its veth ends).
	slices.SortStableFunc(nss, func(a, b string) int {
		r := func(s string) int {
			switch {
			case strings.HasPrefix(s, cfg.Name+"-pod-"):
				return 0
			case s == cfg.NetNS(roleUnderlay):
				return 2
			}
			return 1
		}
		return r(a) - r(b)
	})
	for _, n := range nss {
		if err := ip(ctx, "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(cfg.StateDir); err != nil {
			errs = append(errs, fmt.Errorf("failed to remove %s: %w", cfg.StateDir, err))
		}
	}
	return errors.Join(errs...)
}

// Down removes the lab (see the package function Down).
func (l *Lab) Down(ctx context.Context) error {
	l.clients.close()
	return Down(ctx, l.Config)
}

// State returns the lab's recorded state.
func (l *Lab) State() (*State, error) { return loadState(l.StateDir) }

// Kubeconfig returns the path of a kubeconfig the control plane wrote: "admin", "controller" or
// "agent-<node>". Its server is the control plane's underlay address, reachable from every lab namespace.
func (l *Lab) Kubeconfig(stem string) string { return controlplane.KubeconfigPath(l.StateDir, stem) }

// NodeDir returns a node's state directory (ovs/, net.d/, lib/, cni.sock).
func (l *Lab) NodeDir(node string) string { return filepath.Join(l.StateDir, node) }

// NodeOVS returns a node's Open vSwitch.
func (l *Lab) NodeOVS(node string) OVS { return newOVS(l.NetNS(node), l.NodeDir(node)) }

// LogFile returns the log of one of the lab's processes ("controlplane", "controller", "agent-node1", ...).
func (l *Lab) LogFile(key string) string { return l.logFile(key) }

func (l *Lab) binDir() string               { return filepath.Join(l.StateDir, "bin") }
func (l *Lab) cniBinDir() string            { return filepath.Join(l.StateDir, "cni-bin") }
func (l *Lab) pidFile(key string) string    { return filepath.Join(l.StateDir, "pids", key+".pid") }
func (l *Lab) logFile(key string) string    { return filepath.Join(l.StateDir, "logs", key+".log") }
func (l *Lab) logf(format string, a ...any) { fmt.Fprintf(l.Out, format+"\n", a...) }

// installBinary copies src to dst through a temporary file and a rename, so processes running the old dst
// keep their inode; running our own copies also puts the state directory into every command line.
func installBinary(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("failed to install %s: %w (%v)", filepath.Base(src), ErrMissingBinary, err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", tmp, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("failed to copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("failed to install %s: %w", dst, err)
	}
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Tail returns the last n lines of one of the lab's logs (see LogFile).
func (l *Lab) Tail(key string, n int) string { return tail(l.logFile(key), n) }

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }
