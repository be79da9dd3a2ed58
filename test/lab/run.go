package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// run runs a command to completion and returns its stdout; the error carries stderr.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("failed to run %s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ip runs `ip args...`.
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, nil, "ip", args...)
	return err
}

// nsRun runs a command inside a network namespace (`ip netns exec`, which also gives it the namespace's view
// of /sys).
func nsRun(ctx context.Context, netns string, env []string, name string, args ...string) (string, error) {
	return run(ctx, env, "ip", append([]string{"netns", "exec", netns, name}, args...)...)
}

// sysctls sets sysctls inside a network namespace.
func sysctls(ctx context.Context, netns string, kv ...string) error {
	_, err := nsRun(ctx, netns, nil, "sysctl", append([]string{"-qw"}, kv...)...)
	return err
}

// netnsExists reports whether a named network namespace exists.
func netnsExists(name string) bool {
	_, err := os.Stat(NetNSPath(name))
	return err == nil
}

// addNetNS creates a network namespace with loopback up.
func addNetNS(ctx context.Context, name string) error {
	if err := ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	return ip(ctx, "-n", name, "link", "set", "lo", "up")
}

// listNetNS returns the lab's network namespaces (those named "<lab>-...").
func listNetNS(lab string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list /run/netns: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), lab+"-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// LinkMTU returns the MTU of a device inside a network namespace.
func LinkMTU(ctx context.Context, netns, dev string) (int, error) {
	out, err := run(ctx, nil, "ip", "-n", netns, "-j", "link", "show", "dev", dev)
	if err != nil {
		return 0, err
	}
	var links []struct {
		MTU int `json:"mtu"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, fmt.Errorf("failed to parse `ip link show %s` in %s: %v: %s", dev, netns, err, out)
	}
	return links[0].MTU, nil
}

// RunIn runs a command to completion inside a network namespace and returns its stdout (the error carries
// stderr); for a node's OVS tools use NodeOVS(node).Run, which also sets OVS_RUNDIR.
func RunIn(ctx context.Context, netns, name string, args ...string) (string, error) {
	return nsRun(ctx, netns, nil, name, args...)
}
