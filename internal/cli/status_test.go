package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/testutil/envtestutil"
)

var statusNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func makeTestClusterNetwork(mutate ...func(*v1alpha1.ClusterNetwork)) *v1alpha1.ClusterNetwork {
	cn := &v1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Generation: 1},
		Spec: v1alpha1.ClusterNetworkSpec{
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
			ServiceNetwork:  "172.30.0.0/16", VXLANPort: 4789, Mode: v1alpha1.NetworkModeSubnet,
		},
		Status: v1alpha1.ClusterNetworkStatus{
			ObservedGeneration: 1, SubnetsTotal: 512, SubnetsAllocated: 3,
			Conditions: []metav1.Condition{
				{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: metav1.NewTime(statusNow.Add(-time.Hour))},
				{Type: "Degraded", Status: metav1.ConditionFalse, Reason: "AsExpected", LastTransitionTime: metav1.NewTime(statusNow.Add(-time.Hour))},
			},
		},
	}
	for _, m := range mutate {
		m(cn)
	}
	return cn
}

func makeTestHostSubnet(name, ip, subnet string, mutate ...func(*v1alpha1.HostSubnet)) v1alpha1.HostSubnet {
	hs := v1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:       v1alpha1.HostSubnetSpec{Host: name, HostIP: ip, Subnet: subnet},
		Status: v1alpha1.HostSubnetStatus{
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{
				{Type: "Allocated", Status: metav1.ConditionTrue, Reason: "Allocated", LastTransitionTime: metav1.NewTime(statusNow.Add(-time.Hour))},
				{Type: "Programmed", Status: metav1.ConditionTrue, Reason: "Programmed", ObservedGeneration: 1,
					Message: "46 flows", LastTransitionTime: metav1.NewTime(statusNow.Add(-50 * time.Minute))},
			},
			Agent: &v1alpha1.HostSubnetAgentStatus{LastSync: &metav1.Time{Time: statusNow.Add(-30 * time.Second)}, ObservedGeneration: 1,
				Flows: 46, NFTRules: 38, StateHash: "0123456789abcdef", MTU: 1450, DatapathType: "netdev"},
		},
	}
	for _, m := range mutate {
		m(&hs)
	}
	return hs
}

func setCondition(hs *v1alpha1.HostSubnet, c metav1.Condition) {
	for i := range hs.Status.Conditions {
		if hs.Status.Conditions[i].Type == c.Type {
			hs.Status.Conditions[i] = c
			return
		}
	}
	hs.Status.Conditions = append(hs.Status.Conditions, c)
}

func nodes(names ...string) []corev1.Node {
	var out []corev1.Node
	for _, n := range names {
		out = append(out, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return out
}

func TestBuildStatus(t *testing.T) {
	healthy := func() *ClusterState {
		return &ClusterState{
			ClusterNetwork: makeTestClusterNetwork(),
			HostSubnets: []v1alpha1.HostSubnet{
				makeTestHostSubnet("node1", "10.10.12.11", "10.128.0.0/23"),
				makeTestHostSubnet("node2", "10.10.12.12", "10.128.2.0/23"),
			},
			Nodes: nodes("node1", "node2"),
		}
	}
	tests := []struct {
		name     string
		mutate   func(*ClusterState)
		healthy  bool
		problems []string // "severity object: message-substring", in order
		firstHS  string
	}{
		{name: "all programmed", healthy: true, firstHS: "node1"},
		{name: "no ClusterNetwork", mutate: func(s *ClusterState) { s.ClusterNetwork = nil },
			problems: []string{"error ClusterNetwork default: does not exist"}, firstHS: "node1"},
		{name: "ClusterNetwork not ready and degraded", mutate: func(s *ClusterState) {
			s.ClusterNetwork.Status.Conditions = []metav1.Condition{
				{Type: "Ready", Status: metav1.ConditionFalse, Reason: "PoolExhausted", Message: "no subnet left"},
				{Type: "Degraded", Status: metav1.ConditionTrue, Reason: "PoolExhausted", Message: "no subnet left"}}
			s.ClusterNetwork.Status.SubnetsAllocated = 512
		}, problems: []string{"error ClusterNetwork default: Ready=False PoolExhausted: no subnet left",
			"error ClusterNetwork default: Degraded PoolExhausted", "warning ClusterNetwork default: all 512 node subnets are allocated"}, firstHS: "node1"},
		{name: "a node failed to program: errors first, that node first", mutate: func(s *ClusterState) {
			setCondition(&s.HostSubnets[1], metav1.Condition{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "ApplyFailed",
				Message: "failed to program br0's flows: bundle refused"})
		}, problems: []string{"error HostSubnet node2: Programmed=False ApplyFailed: failed to program br0's flows"}, firstHS: "node2"},
		{name: "a silent agent", mutate: func(s *ClusterState) {
			s.HostSubnets[0].Status.Agent.LastSync = &metav1.Time{Time: statusNow.Add(-10 * time.Minute)}
		}, healthy: true, problems: []string{"warning HostSubnet node1: last sync 10m ago"}, firstHS: "node1"},
		{name: "an agent behind the spec", mutate: func(s *ClusterState) { s.HostSubnets[1].Generation = 2 },
			healthy: true, problems: []string{"warning HostSubnet node2: programmed generation 1, the spec is generation 2"}, firstHS: "node2"},
		{name: "no agent on a node, none expected without a Node", mutate: func(s *ClusterState) {
			for i := range s.HostSubnets {
				s.HostSubnets[i].Status.Conditions = s.HostSubnets[i].Status.Conditions[:1]
				s.HostSubnets[i].Status.Agent = nil
			}
			s.Nodes = nodes("node1")
		}, problems: []string{"error HostSubnet node1: no agent has reported"}, firstHS: "node1"},
		{name: "a Node without HostSubnet", mutate: func(s *ClusterState) { s.Nodes = nodes("node1", "node2", "node3") },
			problems: []string{"error Node node3: has no HostSubnet"}, firstHS: "node1"},
		{name: "not allocated", mutate: func(s *ClusterState) {
			setCondition(&s.HostSubnets[0], metav1.Condition{Type: "Allocated", Status: metav1.ConditionFalse, Reason: "SubnetConflict", Message: "overlaps node2"})
		}, problems: []string{"error HostSubnet node1: Allocated=False SubnetConflict: overlaps node2"}, firstHS: "node1"},
		{name: "objects left out and MTUs differ", mutate: func(s *ClusterState) {
			setCondition(&s.HostSubnets[1], metav1.Condition{Type: "Programmed", Status: metav1.ConditionTrue, Reason: "PartiallyProgrammed",
				Message: "left out: pods[a/b].ip: 10.0.0.1 is not inside this node's subnet"})
			s.HostSubnets[0].Status.Agent.MTU = 1400
		}, healthy: true, problems: []string{"warning HostSubnet node2: PartiallyProgrammed: left out",
			"warning HostSubnets: nodes use different pod MTUs (1400 on node1; 1450 on node2)"}, firstHS: "node2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := healthy()
			if tc.mutate != nil {
				tc.mutate(st)
			}
			r := BuildStatus(st, statusNow, DefaultStaleAfter)
			if r.Healthy != tc.healthy {
				t.Errorf("healthy %v, want %v; problems %+v", r.Healthy, tc.healthy, r.Problems)
			}
			if len(r.Problems) != len(tc.problems) {
				t.Fatalf("problems %+v, want %v", r.Problems, tc.problems)
			}
			for i, p := range r.Problems {
				got := p.Severity + " " + p.Object + ": " + p.Message
				if !strings.HasPrefix(got, tc.problems[i]) && !strings.Contains(got, tc.problems[i]) {
					t.Errorf("problem %d = %q, want %q", i, got, tc.problems[i])
				}
			}
			if r.HostSubnets[0].Name != tc.firstHS {
				t.Errorf("first HostSubnet %s, want %s", r.HostSubnets[0].Name, tc.firstHS)
			}
		})
	}
}

// TestStatusEnvtest runs `vxflowctl status` against a real kube-apiserver and etcd with vxflow's CRDs.
func TestStatusEnvtest(t *testing.T) {
	env, cfg := envtestutil.Start(t)
	admin, err := env.AddUser(envtest.User{Name: "vxflowctl-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Nothing yet: the overlay is not configured.
	out, errOut, code := runCLI(t, "", "status", "--kubeconfig", kubeconfig, "--exit-code")
	if code != 1 || !strings.Contains(out, "ClusterNetwork default: does not exist") {
		t.Fatalf("empty cluster: exit %d, output:\n%s%s", code, out, errOut)
	}

	now := time.Now()
	cn := makeTestClusterNetwork()
	status := cn.Status
	cn.Status = v1alpha1.ClusterNetworkStatus{}
	cn.ResourceVersion = ""
	cn.Generation = 0
	mustDo(t, c.Create(ctx, cn))
	cn.Status = status
	for i := range cn.Status.Conditions {
		cn.Status.Conditions[i].LastTransitionTime = metav1.NewTime(now.Add(-time.Hour))
	}
	mustDo(t, c.Status().Update(ctx, cn))
	for _, n := range []string{"node1", "node2", "node3"} {
		mustDo(t, c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}))
	}
	for i, hs := range []v1alpha1.HostSubnet{
		makeTestHostSubnet("node1", "10.10.12.11", "10.128.0.0/23"),
		makeTestHostSubnet("node2", "10.10.12.12", "10.128.2.0/23", func(h *v1alpha1.HostSubnet) {
			setCondition(h, metav1.Condition{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "ApplyFailed",
				Message: "failed to program Service NAT: netlink: operation not permitted", LastTransitionTime: metav1.NewTime(now)})
		}),
		makeTestHostSubnet("node3", "10.10.12.13", "10.128.4.0/23"),
	} {
		st := hs.Status
		hs.Status, hs.Generation = v1alpha1.HostSubnetStatus{}, 0
		mustDo(t, c.Create(ctx, &hs))
		hs.Status = st
		for j := range hs.Status.Conditions {
			hs.Status.Conditions[j].ObservedGeneration = hs.Generation
			if hs.Status.Conditions[j].LastTransitionTime.IsZero() || hs.Status.Conditions[j].LastTransitionTime.Year() == statusNow.Year() {
				hs.Status.Conditions[j].LastTransitionTime = metav1.NewTime(now.Add(-time.Hour))
			}
		}
		hs.Status.Agent.LastSync = &metav1.Time{Time: now.Add(-[]time.Duration{0, 30 * time.Second, 10 * time.Minute}[i])}
		mustDo(t, c.Status().Update(ctx, &hs))
	}

	out, errOut, code = runCLI(t, "", "status", "--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	t.Logf("vxflowctl status:\n%s", out)
	for _, want := range []string{
		"ClusterNetwork default: Ready=True (Ready), Degraded=False (AsExpected)",
		"cluster networks: 10.128.0.0/14 (/23 per node); service network 172.30.0.0/16",
		"mode Subnet, VXLAN UDP 4789, MTU auto",
		"capacity: 3 of 512 node subnets allocated",
		"Problems (2):",
		"ERROR    HostSubnet node2: Programmed=False ApplyFailed: failed to program Service NAT",
		"WARNING  HostSubnet node3: last sync 10m ago",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	lines := strings.Split(out, "\n")
	var rows []string
	for i, l := range lines {
		if strings.HasPrefix(l, "HOSTSUBNET") {
			rows = lines[i+1 : i+4]
		}
	}
	if len(rows) != 3 || !strings.HasPrefix(rows[0], "node2 ") || !strings.HasPrefix(rows[1], "node3 ") || !strings.HasPrefix(rows[2], "node1 ") {
		t.Errorf("rows not problems-first: %q", rows)
	}
	if !strings.Contains(rows[2], "0123456789abcdef") || !strings.Contains(rows[2], "netdev") || !strings.Contains(rows[2], "46") {
		t.Errorf("node1's row lacks the agent's report: %q", rows[2])
	}

	out, _, code = runCLI(t, "", "status", "--kubeconfig", kubeconfig, "-o", "json", "--exit-code")
	if code != 1 {
		t.Errorf("--exit-code with an error-level problem: exit %d, want 1", code)
	}
	var r StatusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, out)
	}
	if r.Healthy || len(r.Problems) != 2 || r.HostSubnets[0].Name != "node2" || r.HostSubnets[0].Programmed.Reason != "ApplyFailed" ||
		r.ClusterNetwork == nil || r.ClusterNetwork.SubnetsTotal != 512 || r.HostSubnets[2].Agent.StateHash != "0123456789abcdef" {
		t.Errorf("JSON report: %+v", r)
	}

	// KUBECONFIG is honoured like kubectl does.
	t.Setenv("KUBECONFIG", kubeconfig)
	if out, errOut, code := runCLI(t, "", "status", "-o", "json"); code != 0 || !strings.Contains(out, `"subnetsTotal": 512`) {
		t.Errorf("with $KUBECONFIG: exit %d: %s%s", code, out, errOut)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ client.Client // the envtest client above is controller-runtime's
