package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/cli/nodeaccess"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// replayAccess is a fake node access for unit tests of the walk: it answers ofproto/trace with the outputs
// recorded from the two-node lab (keyed by node and in_port), flow dumps and nftables listings with what
// the renderers produce for the lab's objects, and route lookups with what the lab's kernel said. It
// records every flow it was asked to trace.
type replayAccess struct {
	traces map[string]string // "node/inport" -> testdata/ofproto-trace file
	flows  map[string]string
	nft    map[string]string
	asked  []string
}

var inPortRE = regexp.MustCompile(`(?:^|,)in_port=(\d+)`)

func (r *replayAccess) OFProtoTrace(_ context.Context, node string, req nodeaccess.TraceRequest) (string, error) {
	if err := req.Validate(); err != nil {
		return "", err
	}
	r.asked = append(r.asked, node+": "+req.Flow)
	m := inPortRE.FindStringSubmatch(req.Flow)
	file, ok := r.traces[node+"/"+m[1]]
	if !ok {
		return "", fmt.Errorf("failed to run ovs-appctl ofproto/trace on node %s: no route to host", node)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "ofproto-trace", file+".txt"))
	return string(b), err
}

func (r *replayAccess) DumpFlows(_ context.Context, node, _ string) (string, error) {
	if f, ok := r.flows[node]; ok {
		return f, nil
	}
	return "", fmt.Errorf("node %s is unreachable", node)
}

func (r *replayAccess) NFTTable(_ context.Context, node string) (string, error) {
	if f, ok := r.nft[node]; ok {
		return f, nil
	}
	return "", fmt.Errorf("node %s is unreachable", node)
}

func (r *replayAccess) RouteGet(_ context.Context, _ string, q nodeaccess.RouteQuery) (string, error) {
	if q.IIF != "" {
		return fmt.Sprintf("%s from %s dev tun0 \\    cache iif tun0 \n", q.Dst, q.Src), nil
	}
	return fmt.Sprintf("%s dev tun0 src 10.128.0.1 uid 0 \\    cache \n", q.Dst), nil
}

// replayLab returns the lab's objects (both pods on ofport 3, as in the recordings) and the fake access.
func replayLab(t *testing.T, traces map[string]string) (*ClusterState, *replayAccess) {
	t.Helper()
	objs := strings.NewReplacer("OFPORT_CLIENT", "3", "OFPORT_WEB", "3").Replace(liveObjects)
	st := &ClusterState{Sources: map[string]Source{}, Ignored: map[string]int{}}
	if errs := st.addFile("live.yaml", []byte(objs)); len(errs) > 0 {
		t.Fatal(errs)
	}
	st.sort()
	r := &replayAccess{traces: traces, flows: map[string]string{}, nft: map[string]string{}}
	for _, n := range []string{"node1", "node2"} {
		ns, err := RenderNode(st, RenderOptions{Node: n, Datapath: model.DatapathNetdev, UnderlayMTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		r.flows[n], r.nft[n] = ns.Flows.String(), ns.Ruleset.String()
	}
	return st, r
}

func TestTraceReplay(t *testing.T) {
	tests := []struct {
		name     string
		req      TraceRequest
		traces   map[string]string
		verdict  string
		kinds    []string
		tables   [][]int
		asked    []string // the flows ofproto/trace was asked for
		contains []string
		warnings int
	}{
		{
			name:    "pod to pod across nodes",
			req:     TraceRequest{From: "demo/client", To: "pod/web-0:8080", Namespace: "demo"},
			traces:  map[string]string{"node1/3": "pod-to-remote-pod-node1", "node2/1": "pod-to-remote-pod-node2"},
			verdict: VerdictDelivered,
			kinds:   []string{StepSource, StepOVS, StepVXLAN, StepOVS, StepDeliver},
			tables:  [][]int{{0, 20, 30, 90}, {0, 10, 30, 70, 80}},
			asked: []string{
				"node1: in_port=3,tcp,dl_src=0a:58:0a:80:00:0a,dl_dst=0a:58:0a:80:02:14,nw_src=10.128.0.10,nw_dst=10.128.2.20,nw_ttl=64,tcp_src=40000,tcp_dst=8080",
				"node2: tun_src=192.168.100.1,tun_dst=192.168.100.2,tun_id=0x0,in_port=1,tcp,dl_src=0a:58:0a:80:00:0a,dl_dst=0a:58:0a:80:02:14,nw_src=10.128.0.10,nw_dst=10.128.2.20,nw_ttl=64,tcp_src=40000,tcp_dst=8080",
			},
			contains: []string{"delivered to pod demo/web-0 (10.128.2.20) on port 3 on node node2", "VNI 0, UDP port 4789"},
		},
		{
			name: "pod to ClusterIP by the Service's name",
			req:  TraceRequest{From: "10.128.0.10", To: "demo/web"},
			traces: map[string]string{"node1/3": "pod-to-service-node1", "node1/2": "tun0-to-remote-pod-node1",
				"node2/1": "pod-to-remote-pod-node2"},
			verdict: VerdictDelivered,
			kinds:   []string{StepSource, StepOVS, StepNFTables, StepRoute, StepOVS, StepVXLAN, StepOVS, StepDeliver},
			tables:  [][]int{{0, 20, 30, 60}, {0, 30, 90}, {0, 10, 30, 70, 80}},
			asked: []string{
				"node1: in_port=3,tcp,dl_src=0a:58:0a:80:00:0a,nw_src=10.128.0.10,nw_dst=172.30.0.80,nw_ttl=64,tcp_src=40000,tcp_dst=80",
				"node1: in_port=2,tcp,dl_dst=0a:58:0a:80:02:14,nw_src=10.128.0.1,nw_dst=10.128.2.20,nw_ttl=64,tcp_src=40000,tcp_dst=8080",
				"node2: tun_src=192.168.100.1,tun_dst=192.168.100.2,tun_id=0x0,in_port=1,tcp,dl_dst=0a:58:0a:80:02:14,nw_src=10.128.0.1,nw_dst=10.128.2.20,nw_ttl=64,tcp_src=40000,tcp_dst=8080",
			},
			contains: []string{"Service demo/web port http, ClusterIP 172.30.0.80:80", "DNAT 172.30.0.80:80 -> 10.128.2.20:8080",
				"ip route get 10.128.2.20 from 10.128.0.10 iif tun0: 10.128.2.20 from 10.128.0.10 dev tun0\n",
				"the packet becomes 172.30.0.80:80 -> 10.128.0.10:40000"},
		},
		{
			name:    "the node's host network to a ClusterIP (output hook)",
			req:     TraceRequest{From: "node/node1", To: "svc/web:80", Namespace: "demo"},
			traces:  map[string]string{"node1/2": "tun0-to-remote-pod-node1", "node2/1": "pod-to-remote-pod-node2"},
			verdict: VerdictDelivered,
			kinds:   []string{StepSource, StepNFTables, StepRoute, StepOVS, StepVXLAN, StepOVS, StepDeliver},
			tables:  [][]int{{0, 30, 90}, {0, 10, 30, 70, 80}},
			contains: []string{"node node1's host network sends tcp 10.128.0.1:40000 -> 172.30.0.80:80",
				"from a local process: nftables", "output nat-output: jump services", "DNAT 172.30.0.80:80 -> 10.128.2.20:8080",
				"it is for node node1 itself: the local socket receives it"},
		},
		{
			name:     "spoofed source",
			req:      TraceRequest{From: "pod/client", Namespace: "demo", To: "10.128.2.20:8080", SrcIP: "10.128.0.99"},
			traces:   map[string]string{"node1/3": "spoofed-source-node1"},
			verdict:  VerdictDropped,
			kinds:    []string{StepSource, StepOVS, StepDrop},
			tables:   [][]int{{0, 20}},
			contains: []string{"Result: DROPPED on node node1 at br0 table 20 PodSpoofGuard", "rule: cookie=0x1010000000000,table=20,priority=0 actions=drop (node)", "Reply:\n  - none"},
		},
		{
			name:     "a node that is down: the first packet meets an unresolved neighbour, the next node cannot be read",
			req:      TraceRequest{From: "demo/client", To: "10.128.4.5:80"},
			traces:   map[string]string{"node1/3": "neighbour-miss-node1"},
			verdict:  VerdictIncomplete,
			kinds:    []string{StepSource, StepOVS, StepVXLAN, StepError},
			tables:   [][]int{{0, 20, 30, 90}},
			warnings: 1,
			contains: []string{"to:   10.128.4.5:80 (no Pod has it; in node node3's subnet)", "VXLAN from node node1 (192.168.100.1) to node node3 (192.168.100.3)",
				"neighbor cache miss for 192.168.100.3", "Result: INCOMPLETE: failed to run ofproto/trace on node node3"},
		},
		{
			name:     "a pod whose node has no flows for it",
			req:      TraceRequest{From: "10.128.0.77", To: "10.128.2.20:8080"},
			verdict:  VerdictDropped,
			kinds:    []string{StepSource, StepDrop},
			contains: []string{"no br0 port of node node1 sends from 10.128.0.77"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, access := replayLab(t, tc.traces)
			res, err := Trace(context.Background(), tc.req, st, access)
			if err != nil {
				t.Fatal(err)
			}
			text := res.Text()
			if res.Verdict != tc.verdict {
				t.Fatalf("verdict %s, want %s\n%s", res.Verdict, tc.verdict, text)
			}
			if got := res.StepKinds(); !slices.Equal(got, tc.kinds) {
				t.Errorf("steps %v, want %v\n%s", got, tc.kinds, text)
			}
			if got := res.OVSTables(); fmt.Sprint(got) != fmt.Sprint(tc.tables) && tc.tables != nil {
				t.Errorf("tables %v, want %v", got, tc.tables)
			}
			if tc.asked != nil && !slices.Equal(access.asked, tc.asked) {
				t.Errorf("ofproto/trace was asked\n%s\nwant\n%s", strings.Join(access.asked, "\n"), strings.Join(tc.asked, "\n"))
			}
			for _, w := range tc.contains {
				if !strings.Contains(text, w) {
					t.Errorf("trace lacks %q\n%s", w, text)
				}
			}
			if len(res.Warnings) != tc.warnings {
				t.Errorf("warnings %q, want %d", res.Warnings, tc.warnings)
			}
			for i, s := range res.Steps {
				if s.N != i+1 {
					t.Errorf("step %d numbered %d", i, s.N)
				}
			}
			b, err := json.Marshal(res)
			if err != nil || !json.Valid(b) {
				t.Errorf("JSON: %v", err)
			}
		})
	}
}

// TestTraceLiveTableComparison checks the warning about a node whose table differs from the API objects: a
// listing in another order (the kernel's hash order, chains added by later partial syncs) is the same table,
// a missing element is not.
func TestTraceLiveTableComparison(t *testing.T) {
	traces := map[string]string{"node1/3": "pod-to-service-node1", "node1/2": "tun0-to-remote-pod-node1", "node2/1": "pod-to-remote-pod-node2"}
	req := TraceRequest{From: "demo/client", To: "svc/web", Namespace: "demo"}
	for _, tc := range []struct {
		name     string
		edit     func(rs *nftables.Ruleset)
		warnings int
	}{
		{"reordered chains, sets and elements", func(rs *nftables.Ruleset) {
			slices.Reverse(rs.Chains)
			slices.Reverse(rs.Sets)
			for _, s := range rs.Sets {
				slices.Reverse(s.Elements)
			}
		}, 0},
		{"a ClusterIP element missing", func(rs *nftables.Ruleset) {
			for _, s := range rs.Sets {
				if s.Name == "cluster-ips" {
					s.Elements = nil
				}
			}
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, access := replayLab(t, traces)
			ns, err := RenderNode(st, RenderOptions{Node: "node1", Datapath: model.DatapathNetdev, UnderlayMTU: 1500})
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(ns.Ruleset)
			access.nft["node1"] = ns.Ruleset.String()
			res, err := Trace(context.Background(), req, st, access)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict != VerdictDelivered || len(res.Warnings) != tc.warnings {
				t.Errorf("verdict %s, warnings %q, want delivered with %d warnings", res.Verdict, res.Warnings, tc.warnings)
			}
		})
	}
}

func TestTraceResolveErrors(t *testing.T) {
	st, access := replayLab(t, nil)
	for _, tc := range []struct {
		req  TraceRequest
		want string
	}{
		{TraceRequest{From: "203.0.113.9", To: "192.168.100.208:80"}, "outside the cluster; say which node it reaches with --node"},
		{TraceRequest{From: "demo/nope", To: "demo/web"}, "no Pod demo/nope"},
		{TraceRequest{From: "demo/client", To: "svc/web:https", Namespace: "demo"}, `no tcp port "https" (ports: http 80/TCP)`},
		{TraceRequest{From: "demo/client", To: "10.128.2.20"}, "give a port, IP:PORT"},
		{TraceRequest{From: "demo/client", To: "pod/web-0", Namespace: "demo"}, "give the pod's port as pod/NAME:PORT"},
		{TraceRequest{From: "demo/client", To: "demo/web", Proto: "sctp"}, `--proto "sctp"`},
		{TraceRequest{From: "demo/client", To: "demo/web", Proto: "udp"}, "no udp port"},
		{TraceRequest{From: "node/node7", To: "demo/web"}, "no HostSubnet of that name"},
		{TraceRequest{From: "demo/client", To: "demo/web", Endpoint: "x"}, "--endpoint"},
	} {
		_, err := Trace(context.Background(), tc.req, st, access)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Trace(%+v) = %v, want an error containing %q", tc.req, err, tc.want)
		}
	}
}

func TestCompletionAndHelp(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCLI(t, "", "completion", shell)
		if code != 0 || !strings.Contains(out, "vxflowctl") || len(out) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes, %s", shell, code, len(out), errOut)
		}
	}
	for _, cmd := range []string{"render", "status", "trace"} {
		out, _, code := runCLI(t, "", cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "vxflowctl "+cmd) {
			t.Errorf("%s --help lacks examples:\n%s", cmd, out)
		}
	}
	// Dynamic completion of --node reads the manifests given so far.
	out, _, _ := runCLI(t, "", "__complete", "render", "-f", "testdata/seed", "--node", "")
	for _, n := range []string{"node1\t10.10.12.11 10.128.0.0/23", "node2", "node3"} {
		if !strings.Contains(out, n) {
			t.Errorf("--node completion lacks %q:\n%s", n, out)
		}
	}
	out, _, _ = runCLI(t, "", "__complete", "render", "--datapath", "")
	if !strings.Contains(out, "netdev") || !strings.Contains(out, "system") {
		t.Errorf("--datapath completion: %s", out)
	}
}
