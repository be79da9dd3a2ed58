package model

import (
	"net"
	"net/netip"
)

// PodMAC returns the MAC address a pod with IPv4 address ip must use: 0a:58 followed by the four address
// bytes, as OpenShift SDN does, so that a reused IP never meets a stale ARP entry and the anti-spoofing
// flows can derive the MAC from the IP. It returns nil when ip is not IPv4.
func PodMAC(ip netip.Addr) net.HardwareAddr {
	if !ip.Is4() {
		return nil
	}
	b := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}
