package plugin

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vxflow/vxflow/internal/cni/wire"
)

// TestClientErrors is a unit test over a real unix socket: what the plugin says when the agent is missing,
// when it answers with a CNI error and when it answers a result.
func TestClientErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "cni.sock")
	c := &Client{SocketPath: sock, Timeout: 2 * time.Second}
	ctx := context.Background()

	_, err := c.Do(ctx, &wire.Request{Command: wire.CommandAdd})
	if err == nil || err.Code != wire.CodeTryAgainLater || !strings.Contains(err.Msg, "the vxflow agent is not running on this node") {
		t.Errorf("ADD without a socket: %+v", err)
	}
	if _, err := c.Do(ctx, &wire.Request{Command: wire.CommandStatus}); err == nil || err.Code != wire.CodePluginNotAvailable {
		t.Errorf("STATUS without a socket: %+v", err)
	}

	l, lerr := net.Listen("unix", sock)
	if lerr != nil {
		t.Fatal(lerr)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req wire.Request
		_ = json.NewDecoder(r.Body).Decode(&req)
		switch req.Command {
		case wire.CommandAdd:
			_ = json.NewEncoder(w).Encode(wire.Response{Result: json.RawMessage(`{"cniVersion":"1.1.0"}`)})
		case wire.CommandCheck:
			_ = json.NewEncoder(w).Encode(wire.Response{Error: types.NewError(wire.CodeCheckFailed, "broken", "details")})
		default:
			time.Sleep(3 * time.Second)
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	if res, err := c.Do(ctx, &wire.Request{Command: wire.CommandAdd}); err != nil || string(res) != `{"cniVersion":"1.1.0"}` {
		t.Errorf("ADD: %s, %+v", res, err)
	}
	if _, err := c.Do(ctx, &wire.Request{Command: wire.CommandCheck}); err == nil || err.Code != wire.CodeCheckFailed || err.Msg != "broken" {
		t.Errorf("CHECK: %+v", err)
	}
	if _, err := c.Do(ctx, &wire.Request{Command: wire.CommandDel}); err == nil || err.Code != wire.CodeTryAgainLater ||
		!strings.Contains(err.Msg, "did not answer within 2s") {
		t.Errorf("slow DEL: %+v", err)
	}
	if os.Geteuid() == 0 {
		return // root ignores socket permissions
	}
	if err := os.Chmod(sock, 0o600); err == nil {
		_ = os.Chmod(dir, 0o000)
		defer os.Chmod(dir, 0o700)
		if _, err := c.Do(ctx, &wire.Request{Command: wire.CommandAdd}); err == nil || !strings.Contains(err.Msg, "permission denied") {
			t.Errorf("ADD without permission: %+v", err)
		}
	}
}

// TestParseHTTPResponse is a unit test of the plugin's minimal HTTP/1 reader.
func TestParseHTTPResponse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		status  int
		body    string
		wantErr bool
	}{
		{in: "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"result\":{}}", status: 200, body: `{"result":{}}`},
		{in: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing", status: 200, body: `{}`},
		{in: "HTTP/1.0 500 Internal Server Error\r\n\r\n{\"error\":{}}", status: 500, body: `{"error":{}}`},
		{in: "HTTP/1.0 200 OK\r\n\r\n", status: 200, body: ""},
		{in: "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n{}", wantErr: true},
		{in: "SSH-2.0-x\r\n\r\n", wantErr: true},
		{in: "HTTP/1.0 200 OK\r\n", wantErr: true},
	} {
		status, body, err := parseHTTPResponse([]byte(tc.in))
		if (err != nil) != tc.wantErr || status != tc.status || string(body) != tc.body {
			t.Errorf("parseHTTPResponse(%q) = %d, %q, %v; want %d, %q, error %v", tc.in, status, body, err, tc.status, tc.body, tc.wantErr)
		}
	}
}
