package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// MoveAddresses is the kernel half of the native-tunneling layout of the userspace datapath (lab.md part A
// §3): ovs-vswitchd routes and resolves the outer VXLAN header itself and only through an OVS bridge, so
// the node IP must live on the bridge that holds the underlay NIC (ovs.Interface.EnsureUnderlayBridge).
//
// It moves every IPv4 address of nic to bridge, then every IPv4 route of the main table through nic that
// the kernel did not make itself (the default route, static routes), and sets both devices up. It waits for
// bridge to appear (ovs-vswitchd creates it). It returns the changes made, empty when nic held nothing to
// move, so it is idempotent; running it twice, or after a reboot that put the address back on nic, is safe.
func (m *Manager) MoveAddresses(ctx context.Context, nic, bridge string) ([]string, error) {
	br, err := m.waitLink(ctx, bridge)
	if err != nil {
		return nil, fmt.Errorf("failed to move addresses to %s: %w", bridge, err)
	}
	from, err := m.h.LinkByName(nic)
	if err != nil {
		return nil, fmt.Errorf("failed to move addresses from %s: %w", nic, err)
	}
	var changes []string
	for _, l := range []netlink.Link{from, br} {
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := m.h.LinkSetUp(l); err != nil {
				return changes, fmt.Errorf("failed to set %s up: %w", l.Attrs().Name, err)
			}
			changes = append(changes, fmt.Sprintf("set %s up", l.Attrs().Name))
		}
	}
	// Routes first: deleting the addresses makes the kernel drop the routes that use them.
	routes, err := m.h.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: from.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return changes, fmt.Errorf("failed to list the routes of %s: %w", nic, err)
	}
	addrs, err := m.h.AddrList(from, netlink.FAMILY_V4)
	if err != nil {
		return changes, fmt.Errorf("failed to list the addresses of %s: %w", nic, err)
	}
	brAddrs, err := m.h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return changes, fmt.Errorf("failed to list the addresses of %s: %w", bridge, err)
	}
	for _, a := range addrs {
		p := ipNetPrefix(a.IPNet)
		onBridge := false
		for _, b := range brAddrs {
			if ipNetPrefix(b.IPNet) == p {
				onBridge = true
			}
		}
		if !onBridge {
			// A fresh Addr: the label and flags of the old one name nic.
			if err := m.h.AddrAdd(br, &netlink.Addr{IPNet: a.IPNet, Broadcast: a.Broadcast, Scope: a.Scope}); err != nil {
				return changes, fmt.Errorf("failed to add %s to %s: %w", p, bridge, err)
			}
		}
		if err := m.h.AddrDel(from, &a); err != nil {
			return changes, fmt.Errorf("failed to delete %s from %s: %w", p, nic, err)
		}
		changes = append(changes, fmt.Sprintf("moved address %s from %s to %s", p, nic, bridge))
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue // the subnet routes follow the addresses by themselves
		}
		moved := netlink.Route{
			LinkIndex: br.Attrs().Index, Dst: r.Dst, Src: r.Src, Gw: r.Gw, Scope: r.Scope, Protocol: r.Protocol,
			Priority: r.Priority, Table: r.Table, Type: r.Type, Tos: r.Tos, MTU: r.MTU,
		}
		if err := m.h.RouteReplace(&moved); err != nil {
			return changes, fmt.Errorf("failed to move route %s to %s: %w", routeDst(r), bridge, err)
		}
		if err := m.h.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
			return changes, fmt.Errorf("failed to delete route %s from %s: %w", routeDst(r), nic, err)
		}
		changes = append(changes, fmt.Sprintf("moved route %s from %s to %s", routeDst(r), nic, bridge))
	}
	return changes, nil
}

func routeDst(r netlink.Route) string {
	if ones, _ := r.Dst.Mask.Size(); r.Dst == nil || ones == 0 {
		return "default"
	}
	return r.Dst.String()
}
