package lab

import (
	"context"
	"fmt"
	"strconv"
)

// switchBridge is the Linux bridge inside the underlay namespace that every lab namespace plugs into.
const switchBridge = "sw0"

// createUnderlay creates the underlay namespace and its switch.
func (l *Lab) createUnderlay(ctx context.Context) error {
	ul := l.NetNS(roleUnderlay)
	if err := addNetNS(ctx, ul); err != nil {
		return err
	}
	if err := sysctls(ctx, ul, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return err
	}
	if err := ip(ctx, "-n", ul, "link", "add", switchBridge, "mtu", strconv.Itoa(UnderlayMTU), "type", "bridge"); err != nil {
		return err
	}
	return ip(ctx, "-n", ul, "link", "set", switchBridge, "up")
}

// attach creates netns (unless it exists) and plugs it into the switch with a veth: the switch end is called
// port, the namespace end eth0 (ul0 on nodes, see createNodeNetwork) with addr/24 when addr is set.
// Checksum offload is turned off on eth0: frames it sends reach the nodes' OVS through AF_PACKET, which loses
// the "checksum still to do" mark, and the node's kernel would then drop them (lab.md part A, pitfall 2).
func (l *Lab) attach(ctx context.Context, netns, port, addr string) error {
	return l.plug(ctx, netns, port, "eth0", addr, true)
}

func (l *Lab) plug(ctx context.Context, netns, port, ifname, addr string, txOff bool) error {
	ul := l.NetNS(roleUnderlay)
	if !netnsExists(netns) {
		if err := addNetNS(ctx, netns); err != nil {
			return err
		}
	}
	if err := sysctls(ctx, netns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return err
	}
	mtu := strconv.Itoa(UnderlayMTU)
	if err := ip(ctx, "-n", ul, "link", "add", port, "mtu", mtu, "type", "veth", "peer", "name", ifname, "mtu", mtu, "netns", netns); err != nil {
		return err
	}
	if err := ip(ctx, "-n", ul, "link", "set", port, "master", switchBridge, "up"); err != nil {
		return err
	}
	if txOff {
		if _, err := nsRun(ctx, netns, nil, "ethtool", "-K", ifname, "tx", "off"); err != nil {
			return err
		}
	}
	if addr != "" {
		if err := ip(ctx, "-n", netns, "addr", "add", addr+"/"+strconv.Itoa(UnderlayPrefix.Bits()), "dev", ifname); err != nil {
			return err
		}
	}
	return ip(ctx, "-n", netns, "link", "set", ifname, "up")
}

// createNodeNetwork creates node i's namespace, its sysctls, its OVS with br-ex holding the underlay NIC ul0
// and the node IP (OVS native tunneling needs the tunnel's source address on an OVS bridge: lab.md part A §3),
// and records the node.
func (l *Lab) createNodeNetwork(ctx context.Context, i int) error {
	name, netns, nodeIP := NodeName(i), l.NetNS(NodeName(i)), NodeIP(i).String()
	if err := updateState(l.StateDir, func(s *State) error {
		if _, ok := s.Node(name); ok {
			return fmt.Errorf("failed to add node %s: it exists", name)
		}
		s.Nodes = append(s.Nodes, NodeState{Name: name, Index: i, IP: nodeIP, NetNS: netns})
		return nil
	}); err != nil {
		return err
	}
	if err := addNetNS(ctx, netns); err != nil {
		return err
	}
	// arp_ignore=1: the userspace datapath does not steal frames from the kernel, so without it the kernel
	// answers ARP for the node IP out of ul0 with ul0's MAC and OVS may learn the wrong tunnel neighbour
	// (pitfall 3). send_redirects=0: tun0 receives and re-emits service traffic (pitfall 7).
	if err := sysctls(ctx, netns,
		"net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.default.arp_ignore=1",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return err
	}
	if err := l.plug(ctx, netns, name, "ul0", "", false); err != nil {
		return err
	}
	o := l.NodeOVS(name)
	if err := o.start(ctx, name); err != nil {
		return err
	}
	if _, err := o.Vsctl(ctx, "add-br", "br-ex", "--", "set", "bridge", "br-ex", "datapath_type=netdev",
		"--", "add-port", "br-ex", "ul0"); err != nil {
		return err
	}
	if err := ip(ctx, "-n", netns, "addr", "add", nodeIP+"/"+strconv.Itoa(UnderlayPrefix.Bits()), "dev", "br-ex"); err != nil {
		return err
	}
	return ip(ctx, "-n", netns, "link", "set", "br-ex", "up")
}
