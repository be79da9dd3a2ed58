package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vxflow/vxflow/test/lab/proc"
)

// PodSpec describes a pod the lab creates.
type PodSpec struct {
	Namespace string
	Name      string
	Node      string
	Labels    map[string]string
	// Ports the pod's HTTP server listens on (all TCP); default one port named "http", 8080.
	Ports []corev1.ContainerPort
}

// Pod is a pod the lab created.
type Pod struct {
	PodState
	// URL is http://<podIP>:<first port>.
	URL string
}

// CreatePod creates a pod as a kubelet would: the Pod object (scheduled to spec.Node), a network namespace,
// a CNI ADD through the node's conflist and plugin (run from the node's namespace), the pod's HTTP server in
// its namespace, and finally the Pod's status (Running, Ready, podIP). It needs the node's agent: the agent
// writes the conflist and serves the plugin's socket.
func (l *Lab) CreatePod(ctx context.Context, spec PodSpec) (*Pod, error) {
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	if len(spec.Ports) == 0 {
		spec.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
	}
	st, err := l.State()
	if err != nil {
		return nil, err
	}
	if _, ok := st.Node(spec.Node); !ok {
		return nil, fmt.Errorf("failed to create pod %s/%s: no node %q in lab %s", spec.Namespace, spec.Name, spec.Node, l.Name)
	}
	if _, ok := st.Pod(spec.Namespace, spec.Name); ok {
		return nil, fmt.Errorf("failed to create pod %s/%s: it exists", spec.Namespace, spec.Name)
	}
	c, err := l.Client()
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, c, spec.Namespace, l.Name); err != nil {
		return nil, err
	}
	labels := map[string]string{LabLabel: l.Name}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: spec.Node,
			Containers: []corev1.Container{{
				Name: "server", Image: "vxflow-lab/serve", Ports: spec.Ports,
				Command: []string{"vxflow-lab", "serve"},
			}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
	if err := c.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("failed to create Pod %s/%s: %w", spec.Namespace, spec.Name, err)
	}

	ps := PodState{
		Namespace: spec.Namespace, Name: spec.Name, Node: spec.Node,
		NetNS: l.PodNetNS(spec.Namespace, spec.Name), ContainerID: randomHex(32), UID: string(pod.UID),
	}
	// Record the pod before touching the machine, so Down and DeletePod find what a failure leaves.
	if err := updateState(l.StateDir, func(s *State) error { s.Pods = append(s.Pods, ps); return nil }); err != nil {
		return nil, err
	}
	if err := addNetNS(ctx, ps.NetNS); err != nil {
		return nil, err
	}
	res, err := l.cni(ctx, "ADD", ps)
	if err != nil {
		return nil, err
	}
	podIP, err := resultIP(res)
	if err != nil {
		return nil, fmt.Errorf("failed to read the CNI result of %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	ps.IP = podIP.String()
	if err := updateState(l.StateDir, func(s *State) error {
		i := slices.IndexFunc(s.Pods, func(p PodState) bool { return p.Namespace == ps.Namespace && p.Name == ps.Name })
		if i >= 0 {
			s.Pods[i] = ps
		}
		return nil
	}); err != nil {
		return nil, err
	}

	argv := []string{filepath.Join(l.binDir(), "vxflow-lab"), "serve", "--name=" + spec.Name, "--state-dir=" + l.StateDir}
	for _, p := range spec.Ports {
		argv = append(argv, "--listen=:"+strconv.Itoa(int(p.ContainerPort)))
	}
	if _, err := proc.Start(proc.Spec{
		NetNS: ps.NetNS, Argv: argv, Log: l.logFile(podKey(ps)), PIDFile: l.pidFile(podKey(ps)), Marker: l.StateDir,
	}); err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", spec.Ports[0].ContainerPort)
	if err := waitFor(ctx, 10*time.Second, func() error { _, err := Get(ctx, ps.NetNS, url, time.Second); return err }); err != nil {
		return nil, fmt.Errorf("failed to start the server of pod %s/%s: %w; log:\n%s", spec.Namespace, spec.Name, err, l.Tail(podKey(ps), 10))
	}

	now := metav1.Now()
	hostIP := ""
	if n, ok := st.Node(spec.Node); ok {
		hostIP = n.IP
	}
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    hostIP,
		HostIPs:   []corev1.HostIP{{IP: hostIP}},
		PodIP:     ps.IP,
		PodIPs:    []corev1.PodIP{{IP: ps.IP}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "server", Image: "vxflow-lab/serve", ImageID: "vxflow-lab/serve", Ready: true, Started: new(bool),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	*pod.Status.ContainerStatuses[0].Started = true
	if err := c.Status().Update(ctx, pod); err != nil {
		return nil, fmt.Errorf("failed to report the status of Pod %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	l.logf("Created pod %s/%s on %s with IP %s", spec.Namespace, spec.Name, spec.Node, ps.IP)
	return &Pod{PodState: ps, URL: fmt.Sprintf("http://%s:%d", ps.IP, spec.Ports[0].ContainerPort)}, nil
}

// DeletePod stops a pod's server, runs CNI DEL, deletes its namespace and its Pod object. Missing pieces are
// skipped, so it also cleans up after a failed CreatePod.
func (l *Lab) DeletePod(ctx context.Context, namespace, name string) error {
	st, err := l.State()
	if err != nil {
		return err
	}
	ps, ok := st.Pod(namespace, name)
	if !ok {
		return fmt.Errorf("failed to delete pod %s/%s: the lab did not create it", namespace, name)
	}
	var errs []error
	if err := proc.StopPIDFile(l.pidFile(podKey(ps)), l.StateDir, syscall.SIGTERM, 5*time.Second); err != nil {
		errs = append(errs, err)
	}
	if netnsExists(ps.NetNS) {
		if _, err := l.cni(ctx, "DEL", ps); err != nil {
			errs = append(errs, err)
		}
		if err := ip(ctx, "netns", "del", ps.NetNS); err != nil {
			errs = append(errs, err)
		}
	}
	c, err := l.Client()
	if err != nil {
		return err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := c.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("failed to delete Pod %s/%s: %w", namespace, name, err))
	}
	if err := updateState(l.StateDir, func(s *State) error {
		s.Pods = slices.DeleteFunc(s.Pods, func(p PodState) bool { return p.Namespace == namespace && p.Name == name })
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Pod returns a pod the lab created.
func (l *Lab) Pod(namespace, name string) (*Pod, error) {
	st, err := l.State()
	if err != nil {
		return nil, err
	}
	ps, ok := st.Pod(namespace, name)
	if !ok {
		return nil, fmt.Errorf("failed to find pod %s/%s in lab %s", namespace, name, l.Name)
	}
	return &Pod{PodState: ps, URL: "http://" + ps.IP + ":8080"}, nil
}

// cni runs CNI ADD or DEL for a pod with the first .conflist of the node's CNI configuration directory (the
// kubelet's rule), from the node's network namespace.
func (l *Lab) cni(ctx context.Context, command string, ps PodState) (*types100.Result, error) {
	confDir := filepath.Join(l.NodeDir(ps.Node), "net.d")
	var files []string
	// The agent writes the conflist once the node's network is ready; a kubelet keeps pods waiting until then
	// (NetworkReady=false), so ADD waits too. DEL without a conflist has nothing to talk to: a pod whose ADD
	// never ran has nothing to undo.
	wait := 30 * time.Second
	if command == "DEL" {
		wait = 0
	} else if l.AgentPID(ps.Node) == 0 {
		return nil, fmt.Errorf("failed to run CNI ADD for pod %s/%s: no agent runs on %s (see %s)", ps.Namespace, ps.Name,
			ps.Node, l.logFile("agent-"+ps.Node))
	}
	err := waitFor(ctx, wait, func() error {
		var err error
		files, err = libcni.ConfFiles(confDir, []string{".conflist"})
		if err == nil && len(files) == 0 {
			err = errors.New("no conflist yet")
		}
		return err
	})
	if err != nil {
		if command == "DEL" {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to find a CNI conflist in %s after %s (is the agent of %s running? see %s): %w",
			confDir, wait, ps.Node, l.logFile("agent-"+ps.Node), err)
	}
	slices.Sort(files)
	list, err := libcni.NetworkConfFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("failed to load %s: %w", files[0], err)
	}
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{l.cniBinDir()}, filepath.Join(l.NodeDir(ps.Node), "cni-cache"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: ps.ContainerID,
		NetNS:       NetNSPath(ps.NetNS),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", ps.Namespace},
			{"K8S_POD_NAME", ps.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", ps.ContainerID},
			{"K8S_POD_UID", ps.UID},
		},
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var res *types100.Result
	// The plugin runs where a kubelet would run it: in the node's namespace (a child inherits the network
	// namespace of the thread that forks it).
	err = ns.WithNetNSPath(NetNSPath(l.NetNS(ps.Node)), func(ns.NetNS) error {
		switch command {
		case "ADD":
			r, err := cniConf.AddNetworkList(ctx, list, rt)
			if err != nil {
				return err
			}
			res, err = types100.NewResultFromResult(r)
			return err
		case "DEL":
			return cniConf.DelNetworkList(ctx, list, rt)
		}
		return fmt.Errorf("unknown CNI command %s", command)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to run CNI %s for pod %s/%s on %s: %w", command, ps.Namespace, ps.Name, ps.Node, err)
	}
	return res, nil
}

// resultIP returns the first IPv4 address of a CNI result.
func resultIP(r *types100.Result) (netip.Addr, error) {
	if r == nil {
		return netip.Addr{}, errors.New("empty result")
	}
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no IPv4 address in %v", r.IPs)
}

func ensureNamespace(ctx context.Context, c client.Client, name, lab string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabLabel: lab}}}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, &corev1.Namespace{}); err == nil {
		return nil
	}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create namespace %s: %w", name, err)
	}
	return nil
}

func podKey(ps PodState) string { return "pod-" + ps.Namespace + "-" + ps.Name }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitFor retries f until it succeeds or timeout passes, returning its last error.
func waitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
