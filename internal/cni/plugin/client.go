package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
func (c *Client) Do(ctx context.Context, req *wire.Request) (json.RawMessage, *types.Error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "failed to encode the request to the vxflow agent", err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.SocketPath)
		},
		DisableKeepAlives: true,
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://vxflow-agent"+wire.Path, bytes.NewReader(body))
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "failed to build the request to the vxflow agent", err.Error())
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := hc.Do(hreq)
	if err != nil {
		return nil, c.connectError(req.Command, err)
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, 16<<20))
	if err != nil {
		return nil, types.NewError(wire.CodeTryAgainLater, "failed to read the vxflow agent's answer", err.Error())
	}
	var resp wire.Response
	if err := json.Unmarshal(raw, &resp); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("failed to decode the vxflow agent's answer (HTTP %d)", hresp.StatusCode), string(raw))
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if hresp.StatusCode != http.StatusOK {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("the vxflow agent answered HTTP %d without an error", hresp.StatusCode), string(raw))
	}
	return resp.Result, nil
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
