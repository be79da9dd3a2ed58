package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current output")

// runCLI runs vxflowctl with args and returns its standard output, standard error and exit status.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewRootCommand(Streams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), ExitCode(err)
}

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("failed to read %s (run go test ./internal/cli -update): %v", path, err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test ./internal/cli -update after checking the change):\n%s", path,
			lineDiff(string(want), got))
	}
}

// lineDiff is a short unified diff for test failures.
func lineDiff(want, got string) string {
	d, _, _, err := unifiedDiff(want, got, "want", "got")
	if err != nil {
		return err.Error()
	}
	return d
}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		args   []string
	}{
		{"seed node1, agent's default datapath", "render-seed-node1.golden",
			[]string{"render", "--node", "node1", "-f", "testdata/seed"}},
		{"seed node1, userspace datapath", "render-seed-node1-netdev.golden",
			[]string{"render", "--node", "node1", "-f", "testdata/seed", "--datapath", "netdev"}},
		{"seed node2 holds the endpoint pod, ofport assigned", "render-seed-node2-netdev.golden",
			[]string{"render", "--node", "node2", "-f", "testdata/seed/almighty.yaml", "-f", "testdata/seed/nodes.yaml",
				"-f", "testdata/seed/clusternetwork.yaml", "--datapath", "netdev"}},
		{"seed node1 as JSON", "render-seed-node1.json.golden",
			[]string{"render", "--node", "node1", "-f", "testdata/seed", "--datapath", "netdev", "-o", "json"}},
		{"diff: a second replica and a client on node1", "render-diff-node1.golden",
			[]string{"render", "--node", "node1", "-f", "testdata/seed", "--diff", "-f", "testdata/seed-change", "--datapath", "netdev"}},
		{"diff as JSON, flows only", "render-diff-node1.json.golden",
			[]string{"render", "--node", "node1", "-f", "testdata/seed-change", "--against", "testdata/seed", "--datapath", "netdev",
				"--only", "openflow", "-o", "json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, "", tc.args...)
			wantCode := 0
			if strings.Contains(tc.golden, "diff") {
				wantCode = 1
			}
			if code != wantCode {
				t.Fatalf("exit status %d, want %d; stderr: %s", code, wantCode, errOut)
			}
			checkGolden(t, tc.golden, out)
		})
	}
}

// TestRenderSeedContent checks the facts the golden file must hold, so that a wrong -update cannot pass.
func TestRenderSeedContent(t *testing.T) {
	out, errOut, code := runCLI(t, "", "render", "--node", "node1", "-f", "testdata/seed", "--datapath", "netdev")
	if code != 0 {
		t.Fatalf("exit status %d: %s", code, errOut)
	}
	for _, want := range []string{
		// VXLAN to node2, which owns the endpoint's subnet.
		"table=90,priority=100,ip,nw_dst=10.128.2.0/23 actions=move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:10.10.12.12->tun_dst,output:1",
		// The service network goes to tun0.
		"table=60,priority=100,ip,nw_dst=172.30.0.0/16 actions=output:2",
		// The LoadBalancer IP and the ClusterIP are map elements; the Service chain DNATs to the endpoint
		// the endpoint map holds at the index numgen picks.
		"10.10.12.208 . tcp . 8080 : goto external-almighty/almighty5/tcp/web",
		"172.30.91.5 . tcp . 8080 : goto service-almighty/almighty5/tcp/web",
		"meta l4proto tcp dnat ip to numgen random mod 1 offset 4096 map @service-endpoints-1",
		"elements = { 4096 : 10.128.2.151 . 8080 }",
		// Service traffic forwarded to another node is marked, then masqueraded random-fully.
		"meta mark set meta mark | 0x00000001",
		"masquerade fully-random",
		"pod MTU 1450",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render output lacks %q", want)
		}
	}
	if !strings.Contains(errOut, "Deployment (1)") || !strings.Contains(errOut, "Namespace (1)") {
		t.Errorf("stderr does not name the ignored kinds: %q", errOut)
	}
}

// TestRenderMatchesRenderer proves render uses the agent's renderer: its flows for the lab's pods are the
// renderer's own output for the same view.
func TestRenderMatchesRenderer(t *testing.T) {
	st, err := LoadManifests([]string{"testdata/seed"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := RenderNode(st, RenderOptions{Node: "node2", Datapath: "netdev"})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := openflow.Render(ns.View)
	if err != nil {
		t.Fatal(err)
	}
	if fs.String() != ns.Flows.String() {
		t.Errorf("render's flows differ from openflow.Render of its view")
	}
	if len(ns.Pods) != 1 || ns.Pods[0].OFPort != 3 || ns.Pods[0].PortOrigin != "assigned" {
		t.Errorf("pods = %+v, want almighty5 on ofport 3 (assigned)", ns.Pods)
	}
	if ns.StateHash != StateHash(fs) || len(ns.StateHash) != 16 {
		t.Errorf("state hash %q", ns.StateHash)
	}
}

func TestRenderJSONIsValid(t *testing.T) {
	out, _, code := runCLI(t, "", "render", "--node", "node1", "-f", "testdata/seed", "-o", "json")
	if code != 0 {
		t.Fatal(out)
	}
	var v struct {
		Node     string `json:"node"`
		OpenFlow struct {
			Flows []struct {
				Owner string `json:"owner"`
			} `json:"flows"`
		} `json:"openflow"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("invalid JSON: %v", err)
	}
	owners := map[string]bool{}
	for _, f := range v.OpenFlow.Flows {
		owners[f.Owner] = true
	}
	for _, want := range []string{"Node node1", "HostSubnet node2", "HostSubnet node3"} {
		if !owners[want] {
			t.Errorf("no flow owned by %q in %v", want, owners)
		}
	}
}

func TestRenderOFPortAnnotationAndStdin(t *testing.T) {
	seed, err := os.ReadFile("testdata/seed/nodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cn, err := os.ReadFile("testdata/seed/clusternetwork.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pods := `
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: b, namespace: ns1, annotations: {network.vxflow.io/ofport: "3"}}
  spec: {nodeName: node1, containers: [{name: c, image: i}]}
  status: {podIP: 10.128.0.20}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: ns1}
  spec: {nodeName: node1, containers: [{name: c, image: i}]}
  status: {podIP: 10.128.0.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: done, namespace: ns1}
  spec: {nodeName: node1, containers: [{name: c, image: i}]}
  status: {podIP: 10.128.0.30, phase: Succeeded}
`
	stdin := string(seed) + "\n---\n" + string(cn) + "\n---\n" + pods
	out, errOut, code := runCLI(t, stdin, "render", "--node", "node1", "-f", "-", "--only", "openflow", "--datapath", "netdev")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"table=70,priority=100,ip,nw_dst=10.128.0.20 actions=load:0->NXM_NX_REG1[],load:0x3->NXM_NX_REG2[]",
		"table=70,priority=100,ip,nw_dst=10.128.0.10 actions=load:0->NXM_NX_REG1[],load:0x4->NXM_NX_REG2[]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "10.128.0.30") {
		t.Errorf("a finished pod was rendered")
	}
	if strings.Contains(out, "table ip vxflow") {
		t.Errorf("--only openflow printed the nftables section")
	}
}

func TestRenderErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badYAML := write("bad-yaml.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n---\n# second\napiVersion: v1\nkind: Pod\nmetadata: [\n")
	typo := write("typo.yaml", "# header\n---\napiVersion: network.vxflow.io/v1alpha1\nkind: HostSubnet\nmetadata:\n  name: n1\nspec:\n  host: n1\n  hostIp: 10.0.0.1\n  subnet: 10.128.0.0/23\n")
	unknownKind := write("kind.yaml", "apiVersion: network.vxflow.io/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: x\n")
	dup := write("dup.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n")
	noKind := write("nokind.yaml", "metadata: {name: s}\n")
	badSubnet := write("bad-subnet.yaml", "apiVersion: network.vxflow.io/v1alpha1\nkind: HostSubnet\nmetadata: {name: node9}\nspec: {host: node9, hostIP: 10.10.12.19, subnet: 10.128.3.0/23}\n")
	seed := "testdata/seed"
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"invalid YAML, with the file's line", []string{"render", "--node", "n", "-f", badYAML},
			[]string{"bad-yaml.yaml:6 (document 2): invalid YAML", "line 9"}},
		{"unknown field", []string{"render", "--node", "n", "-f", typo},
			[]string{"typo.yaml:3 (document 2): HostSubnet n1: failed to decode", `unknown field "spec.hostIp"`}},
		{"unknown vxflow kind", []string{"render", "--node", "n", "-f", unknownKind},
			[]string{"kind.yaml:1 (document 1): EgressPolicy x: network.vxflow.io/v1alpha1/EgressPolicy is not a kind"}},
		{"duplicate object", []string{"render", "--node", "n", "-f", dup},
			[]string{"dup.yaml:5 (document 2): Service a/s: defined twice (first at ", "dup.yaml:1 (document 1))"}},
		{"no kind", []string{"render", "--node", "n", "-f", noKind}, []string{"nokind.yaml:1 (document 1): apiVersion and kind are required"}},
		{"missing node", []string{"render", "--node", "node7", "-f", seed},
			[]string{`no HostSubnet named "node7"`, "node1, node2, node3"}},
		{"bad remote subnet is skipped with its position", []string{"render", "--node", "node1", "-f", seed, "-f", badSubnet},
			[]string{"bad-subnet.yaml:1 (document 1): hostSubnets[node9].spec.subnet: 10.128.3.0/23 is not canonical"}},
		{"invalid own subnet is fatal with its position", []string{"render", "--node", "node9", "-f", seed, "-f", badSubnet},
			[]string{"failed to render node node9: ", "bad-subnet.yaml:1 (document 1): hostSubnets[node9].spec.subnet"}},
		{"no such file", []string{"render", "--node", "n", "-f", filepath.Join(dir, "nope")}, []string{"no such file"}},
		{"--diff without changed files", []string{"render", "--node", "node1", "-f", seed, "--diff"}, []string{"--diff needs the changed manifests"}},
		{"bad datapath", []string{"render", "--node", "node1", "-f", seed, "--datapath", "dpdk"}, []string{`--datapath "dpdk"`}},
		{"MTU too large for the underlay", []string{"render", "--node", "node1", "-f", seed, "--underlay-mtu", "600"},
			[]string{"facts.underlayMTU: 600 is too small"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, "", tc.args...)
			all := out + errOut
			if strings.Contains(tc.name, "skipped") {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
			} else if code != 2 {
				t.Fatalf("exit status %d, want 2; output: %s", code, all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
		})
	}
}

func TestRenderDiffNoChange(t *testing.T) {
	out, errOut, code := runCLI(t, "", "render", "--node", "node3", "-f", "testdata/seed", "--diff", "-f", "testdata/seed")
	if code != 0 {
		t.Fatalf("exit %d, want 0: %s", code, errOut)
	}
	if !strings.Contains(out, "# no change on node node3") {
		t.Errorf("output: %s", out)
	}
}

// TestRenderFollowsTheAgentsNFTLayout checks that a node whose agent reports a non-default nftables layout is
// rendered with it, so trace compares the live table with the table the agent really renders.
func TestRenderFollowsTheAgentsNFTLayout(t *testing.T) {
	st, err := LoadManifests([]string{"testdata/seed"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := RenderNode(st, RenderOptions{Node: "node1", Datapath: "netdev"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.HostSubnets {
		if st.HostSubnets[i].Name == "node1" {
			st.HostSubnets[i].Status.Agent = &v1alpha1.HostSubnetAgentStatus{NFTLayout: "InlineEndpoints"}
		}
	}
	inline, err := RenderNode(st, RenderOptions{Node: "node1", Datapath: "netdev"})
	if err != nil {
		t.Fatal(err)
	}
	if inline.Facts.NFTLayout != "InlineEndpoints" {
		t.Errorf("facts = %+v, want the agent's InlineEndpoints layout", inline.Facts)
	}
	want := nftables.NewRenderer(nftables.Options{InlineEndpoints: true}).Render(inline.Services)
	if inline.Ruleset.String() != want.String() {
		t.Errorf("the table differs from the InlineEndpoints rendering")
	}
	if inline.Ruleset.String() == plain.Ruleset.String() {
		t.Errorf("the InlineEndpoints table is the same as the default one; the seed should show the difference")
	}
}
