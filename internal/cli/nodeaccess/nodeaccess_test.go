package nodeaccess

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := TraceRequest{Bridge: "br0", Flow: "in_port=3,tcp,dl_src=0a:58:0a:80:00:02,nw_src=10.128.0.2,nw_dst=10.128.2.5,tcp_src=40000,tcp_dst=8080", CTNext: []string{"trk,new"}}
	if err := good.Validate(); err != nil {
		t.Errorf("valid request refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		req  TraceRequest
	}{
		{"shell metacharacters in the flow", TraceRequest{Bridge: "br0", Flow: "in_port=3;rm -rf /"}},
		{"space in the flow", TraceRequest{Bridge: "br0", Flow: "in_port=3 ip"}},
		{"option injection", TraceRequest{Bridge: "--help", Flow: "ip"}},
		{"long bridge name", TraceRequest{Bridge: "br0123456789abcdef", Flow: "ip"}},
		{"empty flow", TraceRequest{Bridge: "br0"}},
		{"bad ct state", TraceRequest{Bridge: "br0", Flow: "ip", CTNext: []string{"trk;new"}}},
		{"too long", TraceRequest{Bridge: "br0", Flow: strings.Repeat("a", maxFlowLen+1)}},
	} {
		if err := tc.req.Validate(); err == nil {
			t.Errorf("%s: accepted %+v", tc.name, tc.req)
		}
	}
	if err := (RouteQuery{Dst: "10.128.2.5", Src: "10.128.0.2", IIF: "tun0", Mark: 1}).Validate(); err != nil {
		t.Errorf("valid route query refused: %v", err)
	}
	for _, q := range []RouteQuery{{Dst: "x"}, {Dst: "10.0.0.1", Src: "y"}, {Dst: "10.0.0.1", Src: "10.0.0.2", IIF: "tun0;x"}, {Dst: "10.0.0.1", IIF: "tun0"}} {
		if err := q.Validate(); err == nil {
			t.Errorf("accepted %+v", q)
		}
	}
	if got := (RouteQuery{Dst: "10.0.0.1", Src: "10.0.0.2", IIF: "tun0", Mark: 1}).args(); !slices.Equal(got, []string{"10.0.0.1", "from", "10.0.0.2", "iif", "tun0", "mark", "0x1"}) {
		t.Errorf("route args %v", got)
	}
	if got := good.args(); !slices.Equal(got, []string{"br0", "--ct-next", "trk,new", good.Flow}) {
		t.Errorf("trace args %v", got)
	}
}

// recorder is a fake Interface that records the calls the HTTP handlers make.
type recorder struct {
	calls []string
	fail  error
}

func (r *recorder) OFProtoTrace(_ context.Context, node string, req TraceRequest) (string, error) {
	r.calls = append(r.calls, "trace "+node+" "+strings.Join(req.args(), " "))
	return "Flow: " + req.Flow + "\nDatapath actions: drop\n", r.fail
}

func (r *recorder) DumpFlows(_ context.Context, node, bridge string) (string, error) {
	r.calls = append(r.calls, "flows "+node+" "+bridge)
	return " cookie=0x1, table=0, priority=0 actions=drop\n", r.fail
}

func (r *recorder) NFTTable(_ context.Context, node string) (string, error) {
	r.calls = append(r.calls, "nft "+node)
	return "table ip vxflow {\n}\n", r.fail
}

func (r *recorder) RouteGet(_ context.Context, node string, q RouteQuery) (string, error) {
	r.calls = append(r.calls, "route "+node+" "+strings.Join(q.args(), " "))
	return q.Dst + " dev tun0 src 10.128.0.1\n", r.fail
}

// TestHTTPRoundTrip runs the debug endpoint's handlers behind a real HTTP server and the HTTP client
// against them: what the client sends is what the node runs, and errors come back with their message.
func TestHTTPRoundTrip(t *testing.T) {
	rec := &recorder{}
	mux := http.NewServeMux()
	Register(mux, rec)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := &HTTP{Addresses: map[string]string{"node1": srv.URL}}
	ctx := context.Background()

	out, err := c.OFProtoTrace(ctx, "node1", TraceRequest{Bridge: "br0", Flow: "in_port=3,ip", CTNext: []string{"trk,new"}})
	if err != nil || !strings.HasPrefix(out, "Flow: in_port=3,ip") {
		t.Errorf("trace: %q, %v", out, err)
	}
	if out, err := c.DumpFlows(ctx, "node1", "br0"); err != nil || !strings.Contains(out, "priority=0") {
		t.Errorf("flows: %q, %v", out, err)
	}
	if out, err := c.NFTTable(ctx, "node1"); err != nil || !strings.HasPrefix(out, "table ip vxflow") {
		t.Errorf("nft: %q, %v", out, err)
	}
	if out, err := c.RouteGet(ctx, "node1", RouteQuery{Dst: "10.128.2.5", Src: "10.128.0.2", IIF: "tun0"}); err != nil || !strings.Contains(out, "dev tun0") {
		t.Errorf("route: %q, %v", out, err)
	}
	want := []string{"trace  br0 --ct-next trk,new in_port=3,ip", "flows  br0", "nft ", "route  10.128.2.5 from 10.128.0.2 iif tun0"}
	if !slices.Equal(rec.calls, want) {
		t.Errorf("the node ran %q, want %q", rec.calls, want)
	}

	// Bad input is refused by the server too, before anything runs.
	for _, body := range []string{`{"bridge":"br0","flow":"ip;reboot"}`, `{"flow":"ip","extra":1}`, `not json`} {
		resp, err := http.Post(srv.URL+PathTrace, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("body %s: status %d, want 400", body, resp.StatusCode)
		}
	}
	if resp, err := http.Get(srv.URL + PathTrace); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: status %d, want 405", PathTrace, resp.StatusCode)
		}
	}
	if len(rec.calls) != len(want) {
		t.Errorf("a refused request ran something: %q", rec.calls)
	}

	// A failing command comes back as an error with its message.
	rec.fail = errors.New("ovs-appctl: cannot connect")
	if _, err := c.OFProtoTrace(ctx, "node1", TraceRequest{Bridge: "br0", Flow: "ip"}); err == nil || !strings.Contains(err.Error(), "ovs-appctl: cannot connect") {
		t.Errorf("error not passed on: %v", err)
	}
	if _, err := c.NFTTable(ctx, "node9"); err == nil || !strings.Contains(err.Error(), "no agent address known") {
		t.Errorf("unknown node: %v", err)
	}

	// An agent without the endpoint answers 404.
	old := httptest.NewServer(http.NewServeMux())
	defer old.Close()
	c.Addresses["node2"] = old.URL
	if _, err := c.NFTTable(ctx, "node2"); err == nil || !strings.Contains(err.Error(), "predates the debug endpoint") {
		t.Errorf("404: %v", err)
	}
}

func TestLoadExecFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.yaml")
	if err := os.WriteFile(p, []byte("nodes:\n  node1:\n    prefix: [ip, netns, exec, lab-node1]\n    env: {OVS_RUNDIR: /tmp/lab/node1/run}\ndefault:\n  env: {OVS_RUNDIR: /run/openvswitch}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := LoadExecFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.node("node1"); !slices.Equal(n.Prefix, []string{"ip", "netns", "exec", "lab-node1"}) || n.Env["OVS_RUNDIR"] != "/tmp/lab/node1/run" {
		t.Errorf("node1: %+v", n)
	}
	if n := e.node("node9"); n.Env["OVS_RUNDIR"] != "/run/openvswitch" || n.Prefix != nil {
		t.Errorf("default: %+v", n)
	}
	if err := os.WriteFile(p, []byte("nodes:\n  node1:\n    prefx: [ip]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadExecFile(p); err == nil || !strings.Contains(err.Error(), "prefx") {
		t.Errorf("a typo was accepted: %v", err)
	}
}

// TestExecRuns runs real commands through a prefix and an environment: `env` as the prefix prints the
// environment the command would get, so the test needs no OVS.
func TestExecRuns(t *testing.T) {
	e := &Exec{Nodes: map[string]ExecNode{"node1": {Prefix: []string{"sh", "-c", `echo "$OVS_RUNDIR $*"`, "sh"}, Env: map[string]string{"OVS_RUNDIR": "/tmp/x"}}}}
	out, err := e.NFTTable(context.Background(), "node1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "/tmp/x nft list table ip vxflow" {
		t.Errorf("ran %q", out)
	}
	e.Nodes["node2"] = ExecNode{Prefix: []string{"false"}}
	if _, err := e.DumpFlows(context.Background(), "node2", "br0"); err == nil || !strings.Contains(err.Error(), "on node node2") {
		t.Errorf("failure not reported: %v", err)
	}
}
