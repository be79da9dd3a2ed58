package link

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RouteProtocol marks the routes this package owns (`ip route` shows "proto 118"), so stale ones can be
// found and removed without touching routes others made on the same device.
const RouteProtocol netlink.RouteProtocol = 118

// defaultLinkWait bounds the wait for a device that ovs-vswitchd creates (tun0, an underlay bridge) when
// the context has no deadline.
const defaultLinkWait = 30 * time.Second

// Manager applies kernel network state in one network namespace: the process's own, or a named one (tests,
// the lab).
type Manager struct {
	h  *netlink.Handle
	ns netns.NsHandle // -1: the process's namespace
}

// New returns a Manager for the process's network namespace.
func New() (*Manager, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("failed to open a netlink handle: %w", err)
	}
	return &Manager{h: h, ns: netns.None()}, nil
}

// NewInNetNS returns a Manager for the network namespace bound at path (for example /run/netns/NAME).
func NewInNetNS(path string) (*Manager, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open network namespace %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("failed to open a netlink handle in %s: %w", path, err)
	}
	return &Manager{h: h, ns: ns}, nil
}

// Close releases the netlink handle and the namespace.
func (m *Manager) Close() {
	m.h.Close()
	if m.ns.IsOpen() {
		_ = m.ns.Close()
	}
}

// inNetNS runs fn on an OS thread inside the Manager's namespace (needed for /proc/sys/net, which follows
// the calling thread's namespace). The thread is locked and never unlocked, so Go discards it afterwards
// instead of reusing a thread in a foreign namespace.
func (m *Manager) inNetNS(fn func() error) error {
	if !m.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(m.ns); err != nil {
			errc <- fmt.Errorf("failed to enter the network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// waitLink returns the device called name, waiting for it to appear (ovs-vswitchd creates internal ports
// asynchronously) until ctx ends or, without a deadline, defaultLinkWait passes.
func (m *Manager) waitLink(ctx context.Context, name string) (netlink.Link, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultLinkWait)
		defer cancel()
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		l, err := m.h.LinkByName(name)
		if err == nil {
			return l, nil
		}
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return nil, fmt.Errorf("failed to find device %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("device %s did not appear: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}
