package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NetNSPath returns the bind-mount path of a named network namespace.
func NetNSPath(name string) string { return filepath.Join("/run/netns", name) }

// DialContextIn returns a dial function whose sockets are created inside the named network namespace, so a
// program in the host's namespace can act as a client in any lab namespace (a socket keeps the namespace it
// was created in).
func DialContextIn(netns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(NetNSPath(netns), func(ns.NetNS) error {
			d := net.Dialer{Timeout: 5 * time.Second}
			c, err := d.DialContext(ctx, network, addr)
			conn = c
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("failed to dial %s %s from netns %s: %w", network, addr, netns, err)
		}
		return conn, nil
	}
}

// HTTPClient returns an HTTP client whose connections start in the named network namespace; each request
// opens a new connection, so every request exercises the whole path (and a NAT rule) again.
func HTTPClient(netns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       DialContextIn(netns),
			DisableKeepAlives: true,
		},
	}
}

// Get fetches url from inside the named network namespace and returns the body (trimmed).
func Get(ctx context.Context, netns, url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("failed to build a request for %s: %w", url, err)
	}
	resp, err := HTTPClient(netns, timeout).Do(req)
	if err != nil {
		return "", fmt.Errorf("failed to get %s from %s: %w", url, netns, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("failed to read %s from %s after %d bytes: %w", url, netns, len(b), err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("failed to get %s from %s: %s", url, netns, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}
