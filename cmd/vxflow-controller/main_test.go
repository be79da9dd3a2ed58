package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
)

// TestBinary builds vxflow-controller, runs it against envtest the way the Deployment does (kubeconfig
// aside), and checks what a person or kubelet sees: --help, /healthz, /readyz, /metrics, and a HostSubnet for
// a Node.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts envtest")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "vxflow-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("failed to build: %v\n%s", err, out)
	}

	help, _ := exec.Command(bin, "--help").CombinedOutput()
	for _, flag := range []string{"-kubeconfig", "-leader-elect", "-metrics-bind-address", "-health-probe-bind-address", "-allocation-lock-duration"} {
		if !strings.Contains(string(help), flag) {
			t.Errorf("--help does not mention %s:\n%s", flag, help)
		}
	}
	if out, err := exec.Command(bin, "stray").CombinedOutput(); err == nil || !strings.Contains(string(out), "unexpected arguments") {
		t.Errorf("a stray argument was accepted: %v\n%s", err, out)
	}

	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets, _ = filepath.Abs(filepath.Join("..", "..", "bin", "k8s"))
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("failed to start envtest from %s: %v", assets, err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = vxflowv1alpha1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustCreate := func(obj client.Object) {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("failed to create %T: %v", obj, err)
		}
	}
	mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "vxflow-system"}})
	mustCreate(&vxflowv1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: vxflowv1alpha1.ClusterNetworkName},
		Spec: vxflowv1alpha1.ClusterNetworkSpec{
			ClusterNetworks: []vxflowv1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
			ServiceNetwork:  "172.30.0.0/16",
		},
	})

	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--kubeconfig", kcPath, "--leader-elect=true", "--leader-election-namespace", "vxflow-system",
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr)
	logs, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("vxflow-controller exited with %v after SIGINT", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("vxflow-controller did not stop within 30s of SIGINT")
		}
		if t.Failed() {
			out, _ := os.ReadFile(logs.Name())
			t.Logf("controller log:\n%s", out)
		}
	})

	waitFor(t, "/readyz to answer 200", func() bool { return get(t, probeAddr, "/readyz") != "" })
	if body := get(t, probeAddr, "/healthz"); body != "ok" {
		t.Errorf("/healthz = %q, want ok", body)
	}
	mustCreate(&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.100.11"}}},
	})
	hs := &vxflowv1alpha1.HostSubnet{}
	waitFor(t, "HostSubnet node-1", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: "node-1"}, hs) == nil && hs.Status.GatewayIP == "10.128.0.1"
	})
	waitFor(t, "the allocation in /metrics", func() bool {
		m := get(t, metricsAddr, "/metrics")
		return strings.Contains(m, "vxflow_controller_subnet_allocations_total 1") &&
			strings.Contains(m, "vxflow_controller_subnets_total 512") &&
			strings.Contains(m, "vxflow_controller_subnets_allocated 1") &&
			strings.Contains(m, `controller_runtime_reconcile_time_seconds_count{controller="node"}`)
	})
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// get returns the body of a 200 answer from http://addr/path, or "".
func get(t *testing.T, addr, path string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s%s", addr, path))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(body)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	NewWithT(t).Eventually(ok).WithTimeout(90*time.Second).WithPolling(100*time.Millisecond).Should(BeTrue(), "waiting for %s", what)
}
