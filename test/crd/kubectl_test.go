package crd

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/testutil/envtestutil"
)

func samplesDir() string { return filepath.Join(envtestutil.RepoRoot(), "config", "samples") }

// resourceVersions returns "name=resourceVersion" lines for every sample, to detect writes.
func resourceVersions(t *testing.T) string {
	t.Helper()
	out, err := kubectl(t, "", "get", "-f", samplesDir(), "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}")
	if err != nil {
		t.Fatalf("failed to read the samples back: %v\n%s", err, out)
	}
	return out
}

func TestSamplesApplyAndServerSideApplyIsStable(t *testing.T) {
	out, err := kubectl(t, "", "apply", "-f", samplesDir())
	if err != nil {
		t.Fatalf("kubectl apply -f config/samples/ failed: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = kubectl(t, "", "delete", "-f", samplesDir(), "--wait=false") })
	for _, want := range []string{"clusternetwork.network.vxflow.io/default", "hostsubnet.network.vxflow.io/f5-vtep"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply did not report %s:\n%s", want, out)
		}
	}

	// GitOps tools apply server-side over and over: the second apply must not change anything, which it
	// would if defaulting fought the applied configuration.
	if out, err := kubectl(t, "", "apply", "--server-side", "--force-conflicts", "-f", samplesDir()); err != nil {
		t.Fatalf("first server-side apply failed: %v\n%s", err, out)
	}
	before := resourceVersions(t)
	if out, err := kubectl(t, "", "apply", "--server-side", "-f", samplesDir()); err != nil {
		t.Fatalf("second server-side apply failed: %v\n%s", err, out)
	}
	if after := resourceVersions(t); after != before {
		t.Errorf("the second server-side apply changed the objects:\nbefore %s\nafter  %s", before, after)
	}
	if out, err := kubectl(t, "", "diff", "--server-side", "-f", samplesDir()); err != nil {
		t.Errorf("kubectl diff --server-side reports a difference after apply: %v\n%s", err, out)
	}

	out, err = kubectl(t, "", "get", "hostsubnets")
	if err != nil {
		t.Fatalf("kubectl get hostsubnets failed: %v\n%s", err, out)
	}
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if got, want := strings.Join(header, " "), "NAME HOST HOST IP SUBNET READY AGE"; got != want {
		t.Errorf("kubectl get hostsubnets columns = %q, want %q", got, want)
	}
	if !strings.Contains(out, "192.168.100.250") || !strings.Contains(out, "10.131.254.0/23") {
		t.Errorf("kubectl get hostsubnets does not show the sample's host IP and subnet:\n%s", out)
	}
	out, err = kubectl(t, "", "get", "cn")
	if err != nil {
		t.Fatalf("kubectl get cn (short name) failed: %v\n%s", err, out)
	}
	for _, want := range []string{"CLUSTER CIDRS", "SERVICE NETWORK", "MODE", "ALLOCATED", "10.128.0.0/14", "172.30.0.0/16", "Subnet"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get cn does not show %q:\n%s", want, out)
		}
	}
}

func TestKubectlExplainTeachesTheFields(t *testing.T) {
	out, err := kubectl(t, "", "explain", "clusternetwork.spec.clusterNetworks")
	if err != nil {
		t.Fatalf("kubectl explain failed: %v\n%s", err, out)
	}
	for _, want := range []string{"cidr", "hostPrefix", "pod address range", "each node's subnet"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain clusternetwork.spec.clusterNetworks does not mention %q:\n%s", want, out)
		}
	}
	out, err = kubectl(t, "", "explain", "hostsubnet.spec")
	if err != nil {
		t.Fatalf("kubectl explain failed: %v\n%s", err, out)
	}
	for _, want := range []string{"hostIP", "VTEP", "subnet", "gateway"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain hostsubnet.spec does not mention %q:\n%s", want, out)
		}
	}
}

func TestKustomizeRendersTheDefaultConfig(t *testing.T) {
	out, err := kubectl(t, "", "kustomize", filepath.Join(envtestutil.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatalf("kubectl kustomize config/default failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"kind: CustomResourceDefinition", "name: clusternetworks.network.vxflow.io", "name: hostsubnets.network.vxflow.io",
		"kind: Deployment", "--leader-elect=true", "kind: DaemonSet", "hostNetwork: true", "privileged: true", "--node-ip=$(NODE_IP)",
		"path: /var/run/openvswitch", "path: /etc/cni/net.d", "path: /opt/cni/bin", "kind: ClusterRole",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl kustomize config/default output lacks %q", want)
		}
	}
	// Least privilege: nobody gets a wildcard.
	if strings.Contains(out, `- '*'`) || strings.Contains(out, `- "*"`) {
		t.Errorf("the rendered RBAC grants a wildcard:\n%s", out)
	}
}
