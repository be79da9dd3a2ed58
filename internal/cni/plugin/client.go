package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vxflow/vxflow/internal/cni/wire"
)

// Client sends CNI requests to the agent's server over its unix socket.
type Client struct {
	// SocketPath is the server's unix socket.
	SocketPath string
	// Timeout bounds one request, connection included.
	Timeout time.Duration
}

// Do sends req and returns the server's result; every failure is a *types.Error whose message says what a
// person should look at (agent not running, permission, timeout, or the agent's own error).
//
// The request is HTTP/1.0 written by hand: the server closes the connection after its answer, which
// delimits the body, so the plugin needs no HTTP client. net/http and the TLS stack it links were most of
// the plugin's start-up, paid once per CNI request by every exec of the binary.
func (c *Client) Do(ctx context.Context, req *wire.Request) (json.RawMessage, *types.Error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "failed to encode the request to the vxflow agent", err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.SocketPath)
	if err != nil {
		return nil, c.connectError(req.Command, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	msg := fmt.Appendf(nil, "POST %s HTTP/1.0\r\nHost: vxflow-agent\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		wire.Path, len(body))
	if _, err := conn.Write(append(msg, body...)); err != nil {
		return nil, c.connectError(req.Command, deadlineAsContext(err))
	}
	answer, err := io.ReadAll(io.LimitReader(conn, 16<<20))
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, c.connectError(req.Command, deadlineAsContext(err))
		}
		return nil, types.NewError(wire.CodeTryAgainLater, "failed to read the vxflow agent's answer", err.Error())
	}
	status, raw, err := parseHTTPResponse(answer)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to decode the vxflow agent's answer", err.Error())
	}
	var resp wire.Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("failed to decode the vxflow agent's answer (HTTP %d)", status), string(raw))
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if status != 200 {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("the vxflow agent answered HTTP %d without an error", status), string(raw))
	}
	return resp.Result, nil
}

// deadlineAsContext reports a socket deadline as the request's timeout.
func deadlineAsContext(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// parseHTTPResponse splits an HTTP/1.x answer read to its end into the status code and the body (cut to
// Content-Length when the header is there).
func parseHTTPResponse(b []byte) (int, []byte, error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return 0, nil, fmt.Errorf("no end of headers in %q", truncate(b))
	}
	lines := strings.Split(string(head), "\r\n")
	proto, rest, _ := strings.Cut(lines[0], " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
		return 0, nil, fmt.Errorf("not an HTTP/1 status line: %q", lines[0])
	}
	for _, l := range lines[1:] {
		name, value, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			n, err := strconv.Atoi(strings.TrimSpace(value))
			if err != nil || n < 0 || n > len(body) {
				return 0, nil, fmt.Errorf("Content-Length %q does not match a body of %d bytes", value, len(body))
			}
			body = body[:n]
		}
	}
	return status, body, nil
}

func truncate(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// connectError explains why the agent could not be reached.
func (c *Client) connectError(command string, err error) *types.Error {
	notRunning := wire.CodeTryAgainLater
	if command == wire.CommandStatus {
		notRunning = wire.CodePluginNotAvailable
	}
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return types.NewError(notRunning,
			fmt.Sprintf("the vxflow agent is not running on this node: nothing listens on %s", c.SocketPath),
			"start (or wait for) the vxflow-agent pod of this node; the runtime retries: "+err.Error())
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return types.NewError(types.ErrIOFailure,
			fmt.Sprintf("permission denied on the vxflow agent's socket %s: the plugin must run as root", c.SocketPath),
			err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return types.NewError(wire.CodeTryAgainLater,
			fmt.Sprintf("the vxflow agent did not answer within %s", c.Timeout), err.Error())
	default:
		return types.NewError(notRunning, fmt.Sprintf("failed to reach the vxflow agent on %s", c.SocketPath), err.Error())
	}
}
