package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TunConfig declares tun0's kernel state.
type TunConfig struct {
	// Name is the device, "tun0" (an OVS internal port, created by ovs-vswitchd).
	Name string
	// Gateway is the node subnet's first address with the subnet's prefix length, for example 10.128.2.1/23
	// (see Gateway).
	Gateway netip.Prefix
	// ClusterCIDRs are routed to the device: every pod, local or remote, is reached through br0.
	ClusterCIDRs []netip.Prefix
	// ServiceCIDR is routed to the device too (service traffic from the host goes through br0 like pods').
	ServiceCIDR netip.Prefix
	// MTU is the device MTU (the pod MTU); zero leaves it alone.
	MTU int
}

// Gateway returns the gateway address of a node subnet: its first address, with the subnet's prefix length.
func Gateway(subnet netip.Prefix) (netip.Prefix, error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet %s is not an IPv4 prefix", subnet)
	}
	subnet = subnet.Masked()
	if subnet.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("subnet %s is too small for a gateway and pods", subnet)
	}
	return netip.PrefixFrom(subnet.Addr().Next(), subnet.Bits()), nil
}

// EnsureTun makes the device match cfg and returns a description of each change, empty when nothing
// differed. It waits for the device to appear. It sets the MTU, brings the device up, gives it exactly the
// gateway address (without the kernel's local-subnet route: pods are reached through the cluster-CIDR
// route, as in OpenShift SDN), routes every cluster CIDR and the service CIDR to it, and removes the routes
// it owns (RouteProtocol) on the device that are no longer desired, such as those of a removed cluster CIDR.
func (m *Manager) EnsureTun(ctx context.Context, cfg TunConfig) ([]string, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("failed to ensure %s: %w", cfg.Name, err)
	}
	l, err := m.waitLink(ctx, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("failed to ensure %s: %w", cfg.Name, err)
	}
	var changes []string
	for _, step := range []func(netlink.Link, TunConfig) ([]string, error){m.ensureMTU, m.ensureUp, m.ensureGateway, m.ensureRoutes} {
		c, err := step(l, cfg)
		changes = append(changes, c...)
		if err != nil {
			return changes, fmt.Errorf("failed to ensure %s: %w", cfg.Name, err)
		}
	}
	return changes, nil
}

func (cfg TunConfig) validate() error {
	if cfg.Name == "" {
		return errors.New("no device name")
	}
	if !cfg.Gateway.IsValid() || !cfg.Gateway.Addr().Is4() {
		return fmt.Errorf("gateway %s is not an IPv4 address with a prefix length", cfg.Gateway)
	}
	for _, p := range append(slices.Clone(cfg.ClusterCIDRs), cfg.ServiceCIDR) {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			return fmt.Errorf("route destination %s is not a masked IPv4 prefix", p)
		}
	}
	if cfg.MTU < 0 || cfg.MTU > 65535 {
		return fmt.Errorf("MTU %d out of range", cfg.MTU)
	}
	return nil
}

func (m *Manager) ensureMTU(l netlink.Link, cfg TunConfig) ([]string, error) {
	if cfg.MTU == 0 || l.Attrs().MTU == cfg.MTU {
		return nil, nil
	}
	if err := m.h.LinkSetMTU(l, cfg.MTU); err != nil {
		return nil, fmt.Errorf("failed to set the MTU to %d: %w", cfg.MTU, err)
	}
	return []string{fmt.Sprintf("set %s mtu %d (was %d)", cfg.Name, cfg.MTU, l.Attrs().MTU)}, nil
}

func (m *Manager) ensureUp(l netlink.Link, cfg TunConfig) ([]string, error) {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil, nil
	}
	if err := m.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("failed to set the device up: %w", err)
	}
	return []string{fmt.Sprintf("set %s up", cfg.Name)}, nil
}

// ensureGateway leaves exactly the gateway address on the device and no kernel route for its subnet.
func (m *Manager) ensureGateway(l netlink.Link, cfg TunConfig) ([]string, error) {
	addrs, err := m.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("failed to list addresses: %w", err)
	}
	var changes []string
	have := slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return ipNetPrefix(a.IPNet) == cfg.Gateway })
	// Add before deleting: a device left without any IPv4 address loses all its routes, also others'.
	if !have {
		// noprefixroute: the kernel adds no local-subnet route for it.
		a := &netlink.Addr{IPNet: prefixIPNet(cfg.Gateway), Flags: unix.IFA_F_NOPREFIXROUTE}
		if err := m.h.AddrAdd(l, a); err != nil {
			return changes, fmt.Errorf("failed to add address %s: %w", cfg.Gateway, err)
		}
		changes = append(changes, fmt.Sprintf("added address %s to %s", cfg.Gateway, cfg.Name))
	}
	for _, a := range addrs {
		p := ipNetPrefix(a.IPNet)
		if p == cfg.Gateway {
			continue
		}
		// A stale gateway (the node's subnet changed) or anything else: tun0 belongs to the SDN.
		if err := m.h.AddrDel(l, &a); err != nil {
			return changes, fmt.Errorf("failed to delete stale address %s: %w", p, err)
		}
		changes = append(changes, fmt.Sprintf("deleted address %s from %s", p, cfg.Name))
	}
	// An address added without noprefixroute (by hand, an older agent) left the kernel's subnet route.
	routes, err := m.h.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return changes, fmt.Errorf("failed to list routes: %w", err)
	}
	subnet := cfg.Gateway.Masked()
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL && r.Dst != nil && ipNetPrefix(r.Dst) == subnet {
			if err := m.h.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
				return changes, fmt.Errorf("failed to delete the kernel route for %s: %w", subnet, err)
			}
			changes = append(changes, fmt.Sprintf("deleted kernel route %s dev %s", subnet, cfg.Name))
		}
	}
	return changes, nil
}

// ensureRoutes routes the cluster and service CIDRs to the device and deletes this package's stale routes
// on it; routes made by others on the device are left alone.
func (m *Manager) ensureRoutes(l netlink.Link, cfg TunConfig) ([]string, error) {
	idx := l.Attrs().Index
	routes, err := m.h.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("failed to list routes: %w", err)
	}
	want := append(slices.Clone(cfg.ClusterCIDRs), cfg.ServiceCIDR)
	var changes []string
	for _, dst := range want {
		ok := slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Protocol == RouteProtocol && r.Dst != nil && ipNetPrefix(r.Dst) == dst &&
				r.Scope == netlink.SCOPE_LINK && r.Gw == nil && r.Priority == 0
		})
		if ok {
			continue
		}
		r := &netlink.Route{
			LinkIndex: idx, Dst: prefixIPNet(dst), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol,
			Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
		}
		// Replace: a route to the same destination made by hand (or by an older agent) becomes ours.
		if err := m.h.RouteReplace(r); err != nil {
			return changes, fmt.Errorf("failed to add route %s dev %s: %w", dst, cfg.Name, err)
		}
		changes = append(changes, fmt.Sprintf("added route %s dev %s", dst, cfg.Name))
	}
	for _, r := range routes {
		if r.Protocol != RouteProtocol || r.Dst == nil || slices.Contains(want, ipNetPrefix(r.Dst)) {
			continue
		}
		if err := m.h.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
			return changes, fmt.Errorf("failed to delete stale route %s: %w", r.Dst, err)
		}
		changes = append(changes, fmt.Sprintf("deleted stale route %s dev %s", r.Dst, cfg.Name))
	}
	return changes, nil
}

func ipNetPrefix(n *net.IPNet) netip.Prefix {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}
