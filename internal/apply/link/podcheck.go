package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CheckPodInterface verifies that the pod's veth is as spec declares: both ends exist and are peers and up,
// the pod end has the MAC, MTU, address, routes and (when asked) checksum offload off. The error lists every
// difference in words a person can act on; nil means everything matches.
func CheckPodInterface(spec PodVethSpec) error {
	if err := validatePodVethSpec(spec); err != nil {
		return err
	}
	p, err := openPodNS(spec.HostNetNS, spec.PodNetNS)
	if err != nil {
		return err
	}
	defer p.close()

	hostLink, err := linkByName(p.host, spec.HostIfName)
	if err != nil {
		return fmt.Errorf("failed to look up %s: %w", spec.HostIfName, err)
	}
	podLink, err := linkByName(p.pod, spec.IfName)
	if err != nil {
		return fmt.Errorf("failed to look up %s in %s: %w", spec.IfName, spec.PodNetNS, err)
	}
	var probs []string
	switch {
	case hostLink == nil:
		probs = append(probs, fmt.Sprintf("host veth %s is missing", spec.HostIfName))
	case hostLink.Type() != "veth":
		probs = append(probs, fmt.Sprintf("host interface %s is a %s, not a veth", spec.HostIfName, hostLink.Type()))
	case hostLink.Attrs().Flags&net.FlagUp == 0:
		probs = append(probs, fmt.Sprintf("host veth %s is down", spec.HostIfName))
	}
	if podLink == nil {
		probs = append(probs, fmt.Sprintf("interface %s is missing in %s", spec.IfName, spec.PodNetNS))
		return checkError(spec, probs)
	}
	a := podLink.Attrs()
	if hostLink != nil && (a.ParentIndex != hostLink.Attrs().Index || hostLink.Attrs().ParentIndex != a.Index) {
		probs = append(probs, fmt.Sprintf("%s is not the peer of host veth %s", spec.IfName, spec.HostIfName))
	}
	if a.Flags&net.FlagUp == 0 {
		probs = append(probs, fmt.Sprintf("%s is down", spec.IfName))
	}
	if !slices.Equal(a.HardwareAddr, spec.MAC) {
		probs = append(probs, fmt.Sprintf("%s has MAC %s, want %s", spec.IfName, a.HardwareAddr, spec.MAC))
	}
	if a.MTU != spec.MTU {
		probs = append(probs, fmt.Sprintf("%s has MTU %d, want %d", spec.IfName, a.MTU, spec.MTU))
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return p.pod.AddrList(podLink, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("failed to list the addresses of %s: %w", spec.IfName, err)
	}
	found := false
	for _, ad := range addrs {
		if pfx, ok := ipNetToPrefix(ad.IPNet); ok && pfx == spec.Address {
			found = true
		}
	}
	if !found {
		probs = append(probs, fmt.Sprintf("%s lacks address %s", spec.IfName, spec.Address))
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return p.pod.RouteList(podLink, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("failed to list the routes of %s: %w", spec.IfName, err)
	}
	for _, want := range spec.Routes {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return routeMatches(r, want) }) {
			probs = append(probs, fmt.Sprintf("route %s dev %s is missing", want, spec.IfName))
		}
	}
	if spec.DisableTxChecksum {
		on, err := txChecksum(p.podNS, spec.IfName)
		if err != nil {
			return err
		}
		if on {
			probs = append(probs, fmt.Sprintf("%s has transmit checksum offload on (the userspace datapath needs it off)", spec.IfName))
		}
	}
	return checkError(spec, probs)
}

func checkError(spec PodVethSpec, probs []string) error {
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("pod interface %s in %s is broken: %s", spec.IfName, spec.PodNetNS, strings.Join(probs, "; "))
}

func routeMatches(r netlink.Route, want PodRoute) bool {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if r.Dst != nil {
		var ok bool
		if dst, ok = ipNetToPrefix(r.Dst); !ok {
			return false
		}
	}
	if dst != want.Dst.Masked() {
		return false
	}
	if !want.Gateway.IsValid() {
		return r.Gw == nil && r.Scope == netlink.SCOPE_LINK
	}
	gw, ok := netip.AddrFromSlice(r.Gw)
	return ok && gw.Unmap() == want.Gateway
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(n.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	return p, true
}

// retryDump repeats a netlink dump the kernel flagged as interrupted (another change raced it), a few times.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 5 {
		var out []T
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}
