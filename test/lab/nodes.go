package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vxflow/vxflow/test/lab/controlplane"
	"github.com/vxflow/vxflow/test/lab/proc"
)

// LabLabel marks the objects the lab created, with the lab's name as value.
const LabLabel = "vxflow.io/lab"

// registerNode creates the Node object of node i (with its InternalIP in status, as a kubelet reports it)
// and a kubeconfig for its agent.
func (l *Lab) registerNode(ctx context.Context, i int) error {
	name := NodeName(i)
	c, err := l.Client()
	if err != nil {
		return err
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		LabLabel:                 l.Name,
	}}}
	if err := c.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create Node %s: %w", name, err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: NodeIP(i).String()},
			{Type: corev1.NodeHostName, Address: name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "LabNodeReady",
			Message: "the node's namespace and Open vSwitch are up", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "v1.37.2"},
	}
	if err := c.Status().Update(ctx, node); err != nil {
		return fmt.Errorf("failed to report the status of Node %s: %w", name, err)
	}
	if _, err := controlplane.AddUser(ctx, l.StateDir, controlplane.UserRequest{
		Stem: "agent-" + name, Name: "vxflow-agent:" + name, Groups: []string{controlplane.AgentsGroup},
	}); err != nil {
		return err
	}
	return nil
}

// AddNode adds a node to a running lab (the next free nodeN): its namespace, OVS and underlay port, its
// Node object and, unless the lab runs without agents, its agent. It returns the node's name.
func (l *Lab) AddNode(ctx context.Context) (string, error) {
	st, err := l.State()
	if err != nil {
		return "", err
	}
	i := 1
	for slices.ContainsFunc(st.Nodes, func(n NodeState) bool { return n.Index == i }) {
		i++
	}
	if i > MaxNodes {
		return "", fmt.Errorf("failed to add a node: the lab has %d already", MaxNodes)
	}
	name := NodeName(i)
	if err := l.createNodeNetwork(ctx, i); err != nil {
		return name, err
	}
	if err := l.writeAccessFile(); err != nil {
		return name, err
	}
	if err := l.registerNode(ctx, i); err != nil {
		return name, err
	}
	for _, t := range []string{ControlPlaneIP.String(), ExternalIP.String()} {
		if err := Ping(ctx, l.NetNS(name), t); err != nil {
			return name, err
		}
	}
	if !l.NoAgents {
		if err := l.StartAgent(ctx, name); err != nil && !errors.Is(err, ErrMissingBinary) {
			return name, err
		}
	}
	l.logf("Added node %s (%s)", name, NodeIP(i))
	return name, nil
}

// RemoveNode removes a node as if it was decommissioned: its pods, its agent, its Node object, its OVS and
// its namespace.
func (l *Lab) RemoveNode(ctx context.Context, name string) error {
	st, err := l.State()
	if err != nil {
		return err
	}
	if _, ok := st.Node(name); !ok {
		return fmt.Errorf("failed to remove node %s: no such node in lab %s", name, l.Name)
	}
	for _, p := range st.Pods {
		if p.Node == name {
			if err := l.DeletePod(ctx, p.Namespace, p.Name); err != nil {
				return err
			}
		}
	}
	if err := l.StopAgent(name); err != nil {
		return err
	}
	c, err := l.Client()
	if err != nil {
		return err
	}
	if err := c.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to delete Node %s: %w", name, err)
	}
	if err := l.NodeOVS(name).stop(); err != nil {
		return err
	}
	if err := ip(ctx, "netns", "del", l.NetNS(name)); err != nil {
		return err
	}
	// The switch port went with the namespace (its veth peer); nothing else refers to the node.
	if err := os.RemoveAll(l.NodeDir(name)); err != nil {
		return fmt.Errorf("failed to remove %s: %w", l.NodeDir(name), err)
	}
	if err := updateState(l.StateDir, func(s *State) error {
		s.Nodes = slices.DeleteFunc(s.Nodes, func(n NodeState) bool { return n.Name == name })
		return nil
	}); err != nil {
		return err
	}
	if err := l.writeAccessFile(); err != nil {
		return err
	}
	l.logf("Removed node %s", name)
	return nil
}

// AgentCommand returns the command line the lab starts a node's agent with.
func (l *Lab) AgentCommand(node string) ([]string, error) {
	st, err := l.State()
	if err != nil {
		return nil, err
	}
	n, ok := st.Node(node)
	if !ok {
		return nil, fmt.Errorf("failed to find node %s in lab %s", node, l.Name)
	}
	o, dir := l.NodeOVS(node), l.NodeDir(node)
	args := []string{filepath.Join(l.binDir(), "vxflow-agent"),
		"--node-name=" + node,
		"--kubeconfig=" + l.Kubeconfig("agent-"+node),
		"--ovs-db=" + o.DBEndpoint(),
		"--ovs-rundir=" + o.RunDir,
		"--datapath=netdev",
		"--underlay-bridge=br-ex",
		"--underlay-nic=ul0",
		"--node-ip=" + n.IP,
		"--cni-socket=" + filepath.Join(dir, "cni.sock"),
		"--cni-conf-dir=" + filepath.Join(dir, "net.d"),
		"--cni-bin-dir=" + l.cniBinDir(),
		"--state-dir=" + filepath.Join(dir, "lib"),
		"--metrics-bind-address=" + AgentMetricsAddr,
	}
	return append(args, l.AgentArgs...), nil
}

// StartAgent (re)starts a node's vxflow-agent inside the node's namespace from the freshly built binary; it
// fails with ErrMissingBinary while bin/vxflow-agent does not exist. A running agent is stopped first.
func (l *Lab) StartAgent(ctx context.Context, node string) error {
	if err := l.StopAgent(node); err != nil {
		return err
	}
	if err := installBinary(filepath.Join(l.BinDir, "vxflow-agent"), filepath.Join(l.binDir(), "vxflow-agent")); err != nil {
		return err
	}
	// The agent installs the CNI plugin into --cni-bin-dir only when deployed as a DaemonSet; here the lab
	// does it, as the DaemonSet's init container would.
	if err := installBinary(filepath.Join(l.BinDir, "vxflow-cni"), filepath.Join(l.cniBinDir(), "vxflow-cni")); err != nil {
		return err
	}
	argv, err := l.AgentCommand(node)
	if err != nil {
		return err
	}
	for _, d := range []string{"net.d", "lib"} {
		if err := os.MkdirAll(filepath.Join(l.NodeDir(node), d), 0o750); err != nil {
			return fmt.Errorf("failed to create the agent's %s: %w", d, err)
		}
	}
	p, err := proc.Start(proc.Spec{
		NetNS:   l.NetNS(node),
		Argv:    argv,
		Env:     append(l.NodeOVS(node).Env(), "PATH="+os.Getenv("PATH")),
		Log:     l.logFile("agent-" + node),
		PIDFile: l.pidFile("agent-" + node),
		Marker:  l.StateDir,
	})
	if err != nil {
		return err
	}
	// An agent that dies at once (bad flags, missing permissions) is reported here, not in a later check.
	select {
	case <-p.Exited():
		return fmt.Errorf("failed to start the agent of %s: it exited at once; log tail:\n%s", node, l.Tail("agent-"+node, 20))
	case <-time.After(300 * time.Millisecond):
	}
	l.logf("Started vxflow-agent on %s (PID %d)", node, p.PID)
	return nil
}

// AgentPID returns the PID of a node's running agent (0 when none runs).
func (l *Lab) AgentPID(node string) int { return l.livePID("agent-" + node) }

// KillAgent sends sig to a node's agent and waits until it is gone (SIGKILL simulates a crash).
func (l *Lab) KillAgent(node string, sig syscall.Signal) error {
	return proc.StopPIDFile(l.pidFile("agent-"+node), l.StateDir, sig, 10*time.Second)
}

// StopAgent stops a node's agent gracefully (SIGTERM, then SIGKILL after 10 s).
func (l *Lab) StopAgent(node string) error { return l.KillAgent(node, syscall.SIGTERM) }

// StartController (re)starts vxflow-controller in the control plane's namespace with the controller user's
// kubeconfig; it fails with ErrMissingBinary while bin/vxflow-controller does not exist.
func (l *Lab) StartController(ctx context.Context) error {
	if err := l.StopController(); err != nil {
		return err
	}
	bin := filepath.Join(l.binDir(), "vxflow-controller")
	if err := installBinary(filepath.Join(l.BinDir, "vxflow-controller"), bin); err != nil {
		return err
	}
	kc := l.Kubeconfig("controller")
	// Leader election stays on, as deployed (config/manager): the lab binds its Role to the controller's group.
	argv := append([]string{bin, "--kubeconfig=" + kc,
		"--metrics-bind-address=127.0.0.1:9441", "--health-probe-bind-address=127.0.0.1:9442"}, l.ControllerArgs...)
	p, err := proc.Start(proc.Spec{
		NetNS:   l.NetNS(roleControlPlane),
		Argv:    argv,
		Env:     []string{"KUBECONFIG=" + kc},
		Log:     l.logFile("controller"),
		PIDFile: l.pidFile("controller"),
		Marker:  l.StateDir,
	})
	if err != nil {
		return err
	}
	select {
	case <-p.Exited():
		return fmt.Errorf("failed to start vxflow-controller: it exited at once; log tail:\n%s", l.Tail("controller", 20))
	case <-time.After(300 * time.Millisecond):
	}
	l.logf("Started vxflow-controller (PID %d)", p.PID)
	return nil
}

// StopController stops vxflow-controller.
func (l *Lab) StopController() error {
	return proc.StopPIDFile(l.pidFile("controller"), l.StateDir, syscall.SIGTERM, 10*time.Second)
}

// ControllerPID returns the PID of the running controller (0 when none runs).
func (l *Lab) ControllerPID() int { return l.livePID("controller") }

// RestartVSwitchd stops a node's ovs-vswitchd and starts it again, returning how long it was down; all
// OpenFlow flows are lost, which the agent must notice and repair.
func (l *Lab) RestartVSwitchd(ctx context.Context, node string) (time.Duration, error) {
	o := l.NodeOVS(node)
	start := time.Now()
	if err := o.StopVSwitchd(); err != nil {
		return 0, err
	}
	if err := o.StartVSwitchd(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (l *Lab) livePID(key string) int {
	pid, _ := proc.ReadPIDFile(l.pidFile(key))
	if pid != 0 && proc.Ours(pid, l.StateDir) {
		return pid
	}
	return 0
}

// AgentMetricsAddr is where the lab makes every agent serve /metrics, /healthz and /readyz (inside its
// node's namespace).
const AgentMetricsAddr = "127.0.0.1:9443"

// WaitAgentReady waits until a node's agent answers /readyz (it converged and its last sync succeeded).
func (l *Lab) WaitAgentReady(ctx context.Context, node string, timeout time.Duration) error {
	err := waitFor(ctx, timeout, func() error {
		_, err := Get(ctx, l.NetNS(node), "http://"+AgentMetricsAddr+"/readyz", time.Second)
		return err
	})
	if err != nil {
		return fmt.Errorf("the agent of %s is not ready after %s: %w", node, timeout, err)
	}
	return nil
}
