package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vxflow/vxflow/test/lab/proc"
)

// buildLabBin builds vxflow-lab (the lab runs it as the control plane and the pods' servers).
func buildLabBin(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vxflow-lab")
	cmd := exec.Command("go", "build", "-o", out, "./test/lab/cmd/vxflow-lab")
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build vxflow-lab: %v\n%s", err, b)
	}
	return out
}

// TestUpAddRemoveDown brings up a two-node lab without vxflow's own components and checks the
// infrastructure: TLS to the API server over the underlay from a node with its agent's identity and RBAC,
// underlay reachability, adding and removing a node, and a teardown that leaves nothing behind.
func TestUpAddRemoveDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, Open vSwitch)")
	}
	if _, err := os.Stat(filepath.Join(RepoRoot(), "bin", "k8s", "kube-apiserver")); err != nil {
		t.Fatalf("no control plane in bin/k8s (run `make control-plane`): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cfg := Config{
		Name:         fmt.Sprintf("lt%d", os.Getpid()),
		StateDir:     filepath.Join(t.TempDir(), "lab"),
		LabBin:       buildLabBin(t),
		Nodes:        2,
		NoAgents:     true,
		NoController: true,
		Out:          &out,
	}
	t.Cleanup(func() {
		if err := Down(context.Background(), cfg); err != nil {
			t.Errorf("Down: %v", err)
		}
		if t.Failed() {
			t.Logf("lab output:\n%s", out.String())
		}
	})
	start := time.Now()
	l, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Logf("Up took %s", time.Since(start))

	// An agent's identity, from inside its node's namespace, over the underlay, verifying the certificate.
	rc, err := l.RESTConfigFor("agent-node2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rc.Host, "https://192.168.100.10:6443") || len(rc.CAData) == 0 || rc.Insecure {
		t.Fatalf("agent kubeconfig: host %q, CA %d bytes, insecure %v; want the underlay address and a CA", rc.Host, len(rc.CAData), rc.Insecure)
	}
	rc.Dial = DialContextIn(l.NetNS("node2"))
	agent, err := client.New(rc, client.Options{Scheme: Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var nodes corev1.NodeList
	if err := agent.List(ctx, &nodes); err != nil {
		t.Fatalf("the agent of node2 cannot list nodes over the underlay: %v", err)
	}
	if len(nodes.Items) != 2 {
		t.Fatalf("got %d nodes, want 2", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		want := map[string]string{"node1": "192.168.100.11", "node2": "192.168.100.12"}[n.Name]
		if len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != want {
			t.Errorf("Node %s addresses %v, want InternalIP %s", n.Name, n.Status.Addresses, want)
		}
	}
	err = agent.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("an agent deleting a Node got %v, want Forbidden (config/rbac/agent)", err)
	}
	// kubectl from a node's namespace with the admin kubeconfig.
	kubectl := exec.CommandContext(ctx, "ip", "netns", "exec", l.NetNS("node1"),
		filepath.Join(l.K8sBinDir, "kubectl"), "--kubeconfig", l.Kubeconfig("admin"), "get", "crd", "-o", "name")
	if b, err := kubectl.CombinedOutput(); err != nil || !strings.Contains(string(b), "hostsubnets.network.vxflow.io") {
		t.Fatalf("kubectl get crd from node1: %v\n%s", err, b)
	}

	// The underlay: both nodes reach each other, the control plane and the external client, and each OVS
	// holds br-ex with ul0.
	for _, from := range []string{"node1", "node2"} {
		for _, to := range []string{"192.168.100.10", "192.168.100.11", "192.168.100.12", "192.168.100.100"} {
			if err := Ping(ctx, l.NetNS(from), to); err != nil {
				t.Error(err)
			}
		}
		ports, err := l.NodeOVS(from).Vsctl(ctx, "list-ports", "br-ex")
		if err != nil || strings.TrimSpace(ports) != "ul0" {
			t.Errorf("%s: br-ex ports %q, %v; want ul0", from, ports, err)
		}
	}

	name, err := l.AddNode(ctx)
	if err != nil || name != "node3" {
		t.Fatalf("AddNode = %q, %v; want node3", name, err)
	}
	if err := Ping(ctx, l.NetNS("node1"), "192.168.100.13"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.Kubeconfig("agent-node3")); err != nil {
		t.Fatalf("no agent kubeconfig for the added node: %v", err)
	}
	if err := l.RemoveNode(ctx, "node3"); err != nil {
		t.Fatal(err)
	}
	if netnsExists(l.NetNS("node3")) {
		t.Fatal("node3's namespace remains after RemoveNode")
	}
	if err := agent.Get(ctx, client.ObjectKey{Name: "node3"}, &corev1.Node{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Node node3 after RemoveNode: %v, want NotFound", err)
	}

	// Down removes every process, namespace and file, and is idempotent.
	files, err := proc.PIDFiles(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range files {
		pid, _ := proc.ReadPIDFile(f)
		pids = append(pids, pid)
	}
	if len(pids) < 7 { // control plane program, kube-apiserver, etcd, 2 × (ovsdb-server, ovs-vswitchd)
		t.Fatalf("recorded %d PIDs (%v), want at least 7", len(pids), files)
	}
	// As after a crash: the control plane program dies without stopping kube-apiserver and etcd.
	cpPID, _ := proc.ReadPIDFile(l.pidFile("controlplane"))
	if err := syscall.Kill(cpPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Down took %s", time.Since(start))
	for _, pid := range pids {
		if proc.Alive(pid) {
			t.Errorf("PID %d (%s) survived Down", pid, proc.Comm(pid))
		}
	}
	if ns, _ := listNetNS(cfg.Name); len(ns) != 0 {
		t.Errorf("namespaces survived Down: %v", ns)
	}
	if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir survived Down: %v", err)
	}
	if err := Down(ctx, cfg); err != nil {
		t.Errorf("a second Down: %v", err)
	}
}
