package link

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// VXLANOverhead is what VXLAN over IPv4 adds to a pod's packet: outer Ethernet 14, IPv4 20, UDP 8 and
// VXLAN 8 bytes.
const VXLANOverhead = 50

// MinPodMTU is the smallest pod MTU accepted: 576, the IPv4 datagram size every host must accept (RFC 791).
const MinPodMTU = 576

// MTUError says why a pod MTU was refused; the agent reports it as a condition instead of programming a
// path that would silently drop large packets (lab.md, pitfall 6).
type MTUError struct {
	// Requested is ClusterNetwork.mtu, zero when unset.
	Requested int
	// Underlay is the MTU of the device holding the node IP.
	Underlay int
	// Reason explains the refusal.
	Reason string
}

// Error is part of error.
func (e *MTUError) Error() string { return e.Reason }

// IsMTUError reports whether err is (or wraps) an *MTUError.
func IsMTUError(err error) bool {
	var e *MTUError
	return errors.As(err, &e)
}

// PodMTU returns the MTU for tun0 and pod interfaces: requested (ClusterNetwork.mtu) when set, otherwise
// the underlay MTU minus VXLANOverhead. It refuses with an *MTUError a requested MTU that does not fit in the
// underlay with the VXLAN header, and an underlay too small to leave MinPodMTU.
func PodMTU(requested, underlay int) (int, error) {
	switch {
	case requested < 0:
		return 0, &MTUError{Requested: requested, Underlay: underlay, Reason: fmt.Sprintf("requested MTU %d is negative", requested)}
	case requested > 0 && requested < MinPodMTU:
		return 0, &MTUError{Requested: requested, Underlay: underlay,
			Reason: fmt.Sprintf("requested MTU %d is below the minimum %d", requested, MinPodMTU)}
	case requested > 0 && requested+VXLANOverhead > underlay:
		return 0, &MTUError{Requested: requested, Underlay: underlay,
			Reason: fmt.Sprintf("requested MTU %d needs an underlay MTU of at least %d (VXLAN adds %d bytes), but the underlay MTU is %d",
				requested, requested+VXLANOverhead, VXLANOverhead, underlay)}
	case requested > 0:
		return requested, nil
	case underlay-VXLANOverhead < MinPodMTU:
		return 0, &MTUError{Underlay: underlay,
			Reason: fmt.Sprintf("underlay MTU %d is too small: minus %d bytes of VXLAN it leaves %d, below the minimum pod MTU %d",
				underlay, VXLANOverhead, underlay-VXLANOverhead, MinPodMTU)}
	}
	return underlay - VXLANOverhead, nil
}

// UnderlayMTU returns the MTU of the device that holds nodeIP (with the native-tunneling layout, the OVS
// bridge that took the address over).
func (m *Manager) UnderlayMTU(nodeIP netip.Addr) (int, error) {
	addrs, err := m.h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("failed to list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == nodeIP {
			l, err := m.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, fmt.Errorf("failed to get the device holding %s: %w", nodeIP, err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("failed to find the underlay MTU: node IP %s is on no device", nodeIP)
}
