package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vxflow/vxflow/test/lab/controlplane"
	"github.com/vxflow/vxflow/test/lab/proc"
)

// WriteStatus prints what runs in the lab: namespaces, processes, and what the API server says about nodes
// and pods.
func (l *Lab) WriteStatus(ctx context.Context, w io.Writer) error {
	st, err := l.State()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "lab %s (state %s, up since %s)\n", l.Name, l.StateDir, st.Created.Format(time.RFC3339))
	fmt.Fprintln(tw, "WHAT\tNETNS\tADDRESS\tPROCESSES")
	fmt.Fprintf(tw, "control plane\t%s\thttps://%s:%d\t%s\n", l.NetNS(roleControlPlane), ControlPlaneIP, APIServerPort,
		l.procs("controlplane", "cp-kube-apiserver", "cp-etcd", "controller"))
	fmt.Fprintf(tw, "external client\t%s\t%s\t%s\n", l.NetNS(roleExternal), ExternalIP, l.procsWithPrefix("ext-"))
	for _, n := range st.Nodes {
		o := l.NodeOVS(n.Name)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.NetNS, n.IP, strings.Join([]string{
			pidState("ovsdb-server", filepath.Join(o.RunDir, "ovsdb-server.pid"), l.StateDir),
			pidState("ovs-vswitchd", filepath.Join(o.RunDir, "ovs-vswitchd.pid"), l.StateDir),
			l.procs("agent-" + n.Name)}, " "))
	}
	for _, p := range st.Pods {
		fmt.Fprintf(tw, "pod %s/%s on %s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Node, p.NetNS, p.IP, l.procs(podKey(p)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c, err := l.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		fmt.Fprintf(w, "API server: unreachable: %v\n", err)
		return nil
	}
	fmt.Fprintf(w, "API server: %d nodes; kubectl: vxflow-lab kubectl get nodes,hostsubnets (or KUBECONFIG=%s inside any lab namespace)\n",
		len(nodes.Items), controlplane.KubeconfigPath(l.StateDir, "admin"))
	return nil
}

func (l *Lab) procs(keys ...string) string {
	var out []string
	for _, k := range keys {
		out = append(out, pidState(k, l.pidFile(k), l.StateDir))
	}
	return strings.Join(out, " ")
}

func (l *Lab) procsWithPrefix(prefix string) string {
	files, _ := filepath.Glob(filepath.Join(l.StateDir, "pids", prefix+"*.pid"))
	var keys []string
	for _, f := range files {
		keys = append(keys, strings.TrimSuffix(filepath.Base(f), ".pid"))
	}
	if len(keys) == 0 {
		return "-"
	}
	return l.procs(keys...)
}

// pidState renders "name=PID" for a live process, "name=stopped" otherwise.
func pidState(name, pidFile, marker string) string {
	pid, err := proc.ReadPIDFile(pidFile)
	if err != nil || pid == 0 {
		if _, serr := os.Stat(pidFile); serr != nil {
			return name + "=none"
		}
		return name + "=?"
	}
	if !proc.Ours(pid, marker) {
		return fmt.Sprintf("%s=dead(%d)", name, pid)
	}
	return fmt.Sprintf("%s=%d", name, pid)
}

// ExecTarget resolves what `vxflow-lab exec` accepts: cp, ext, ul, a node name, or a pod (namespace/name, or
// a name unique across namespaces). It returns the namespace and extra environment (a node's OVS_RUNDIR).
func (l *Lab) ExecTarget(target string) (string, []string, error) {
	switch target {
	case roleControlPlane, roleExternal, roleUnderlay:
		return l.NetNS(target), nil, nil
	}
	st, err := l.State()
	if err != nil {
		return "", nil, err
	}
	if _, ok := st.Node(target); ok {
		return l.NetNS(target), l.NodeOVS(target).Env(), nil
	}
	var match []PodState
	for _, p := range st.Pods {
		if p.Namespace+"/"+p.Name == target || p.Name == target {
			match = append(match, p)
		}
	}
	switch len(match) {
	case 1:
		return match[0].NetNS, nil, nil
	case 0:
		return "", nil, fmt.Errorf("unknown target %q: use cp, ext, ul, a node name or a pod", target)
	}
	return "", nil, fmt.Errorf("target %q names several pods: use namespace/name", target)
}

// ExecEnv is the environment of commands a person runs in the lab: the admin's KUBECONFIG, vxflowctl's
// node access file, and the control plane's kubectl and vxflow's binaries on PATH.
func (l *Lab) ExecEnv() []string {
	return []string{
		"KUBECONFIG=" + controlplane.KubeconfigPath(l.StateDir, "admin"),
		"VXFLOWCTL_ACCESS_FILE=" + l.AccessFile(),
		"PATH=" + l.BinDir + ":" + l.K8sBinDir + ":" + os.Getenv("PATH"),
	}
}
