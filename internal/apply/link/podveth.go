package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PodRoute is one route inside a pod's network namespace.
type PodRoute struct {
	// Dst is the destination; 0.0.0.0/0 is the default route.
	Dst netip.Prefix
	// Gateway is the next hop; the zero Addr makes the route on-link (scope link, the pod ARPs for each
	// destination itself, as OpenShift SDN does for the cluster CIDRs).
	Gateway netip.Addr
}

// String renders the route as `ip route` would.
func (r PodRoute) String() string {
	dst := r.Dst.String()
	if r.Dst.Bits() == 0 {
		dst = "default"
	}
	if r.Gateway.IsValid() {
		return dst + " via " + r.Gateway.String()
	}
	return dst + " scope link"
}

// PodVethSpec declares a pod's interface: a veth whose host end is (to become) a port of br0 and whose pod end
// carries the pod's address, MAC, MTU and routes.
type PodVethSpec struct {
	// HostNetNS is the path of the network namespace that holds br0 and the veth's host end; empty means the
	// agent's own (tests point it at the namespace of a private Open vSwitch).
	HostNetNS string
	// PodNetNS is the path of the pod's network namespace (CNI_NETNS).
	PodNetNS string
	// IfName is the interface name inside the pod (CNI_IFNAME, normally eth0).
	IfName string
	// HostIfName is the name of the host end, derived from the sandbox so that a repeated ADD finds it.
	HostIfName string
	// MTU is the overlay MTU, on both ends.
	MTU int
	// MAC is the pod end's address (0a:58:<IPv4>).
	MAC net.HardwareAddr
	// Address is the pod's IP with the prefix length of the node subnet.
	Address netip.Prefix
	// Routes are the pod's routes besides the connected route of Address.
	Routes []PodRoute
	// DisableTxChecksum turns transmit checksum offload off on the pod end (`ethtool -K eth0 tx off`): with
	// the userspace datapath, which reads the host end through AF_PACKET, CHECKSUM_PARTIAL packets would
	// leave with bad TCP/UDP checksums (lab.md part A §2).
	DisableTxChecksum bool
}

// PodVeth is what SetupPodVeth created (or found).
type PodVeth struct {
	// HostIfName and HostMAC describe the host end.
	HostIfName string
	HostMAC    net.HardwareAddr
	// PodMAC is the pod end's address.
	PodMAC net.HardwareAddr
}

// podNS holds netlink handles for the host and the pod namespace of one spec.
type podNS struct {
	host, pod     *netlink.Handle
	hostNS, podNS netns.NsHandle
}

func openPodNS(hostPath, podPath string) (*podNS, error) {
	if hostPath == "" {
		hostPath = "/proc/self/ns/net"
	}
	p := &podNS{hostNS: -1, podNS: -1}
	var err error
	if p.hostNS, err = netns.GetFromPath(hostPath); err != nil {
		return nil, fmt.Errorf("failed to open the host network namespace %s: %w", hostPath, err)
	}
	if p.host, err = netlink.NewHandleAt(p.hostNS, unix.NETLINK_ROUTE); err != nil {
		p.close()
		return nil, fmt.Errorf("failed to open netlink in the host network namespace %s: %w", hostPath, err)
	}
	if podPath == "" {
		return p, nil
	}
	if p.podNS, err = netns.GetFromPath(podPath); err != nil {
		p.close()
		return nil, fmt.Errorf("failed to open the pod network namespace %s: %w", podPath, err)
	}
	if p.pod, err = netlink.NewHandleAt(p.podNS, unix.NETLINK_ROUTE); err != nil {
		p.close()
		return nil, fmt.Errorf("failed to open netlink in the pod network namespace %s: %w", podPath, err)
	}
	return p, nil
}

func (p *podNS) close() {
	if p.host != nil {
		p.host.Close()
	}
	if p.pod != nil {
		p.pod.Close()
	}
	if p.hostNS >= 0 {
		_ = p.hostNS.Close()
	}
	if p.podNS >= 0 {
		_ = p.podNS.Close()
	}
}

// linkByName returns the link or nil when it does not exist.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, err
	}
	return l, nil
}

// SetupPodVeth creates the pod's veth (pod end IfName in PodNetNS, host end HostIfName in HostNetNS) and
// configures the pod end: MAC, MTU, address, routes, checksum offload, up, and lo up. It is idempotent: a veth
// pair that already joins the two names is reconfigured, not recreated; a stale host end whose peer is gone
// from the pod is replaced. It fails when IfName in the pod is something else.
func SetupPodVeth(spec PodVethSpec) (PodVeth, error) {
	if err := validatePodVethSpec(spec); err != nil {
		return PodVeth{}, err
	}
	p, err := openPodNS(spec.HostNetNS, spec.PodNetNS)
	if err != nil {
		return PodVeth{}, err
	}
	defer p.close()

	hostLink, podLink, err := p.findPair(spec)
	if err != nil {
		return PodVeth{}, err
	}
	if podLink == nil {
		if hostLink != nil {
			// Its pod end is not (or no longer) IfName in this pod: a leftover of an earlier attempt.
			if err := p.host.LinkDel(hostLink); err != nil {
				return PodVeth{}, fmt.Errorf("failed to delete the stale host veth %s: %w", spec.HostIfName, err)
			}
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = spec.IfName
		attrs.MTU = spec.MTU
		attrs.HardwareAddr = spec.MAC
		veth := &netlink.Veth{
			LinkAttrs:     attrs,
			PeerName:      spec.HostIfName,
			PeerNamespace: netlink.NsFd(int(p.hostNS)),
			PeerMTU:       uint32(spec.MTU),
		}
		if err := p.pod.LinkAdd(veth); err != nil {
			return PodVeth{}, fmt.Errorf("failed to create the veth %s (host %s): %w", spec.IfName, spec.HostIfName, err)
		}
		if hostLink, podLink, err = p.findPair(spec); err != nil {
			return PodVeth{}, err
		}
		if hostLink == nil || podLink == nil {
			return PodVeth{}, fmt.Errorf("failed to find the veth %s (host %s) just created", spec.IfName, spec.HostIfName)
		}
	}
	if err := p.configurePod(spec, podLink); err != nil {
		return PodVeth{}, err
	}
	if hostLink.Attrs().MTU != spec.MTU {
		if err := p.host.LinkSetMTU(hostLink, spec.MTU); err != nil {
			return PodVeth{}, fmt.Errorf("failed to set the MTU of %s: %w", spec.HostIfName, err)
		}
	}
	if err := p.host.LinkSetUp(hostLink); err != nil {
		return PodVeth{}, fmt.Errorf("failed to set %s up: %w", spec.HostIfName, err)
	}
	return PodVeth{HostIfName: spec.HostIfName, HostMAC: hostLink.Attrs().HardwareAddr, PodMAC: spec.MAC}, nil
}

// findPair returns the host end and the pod end when they exist; the pod end is returned only when it is the
// host end's peer. IfName existing in the pod as anything else is an error.
func (p *podNS) findPair(spec PodVethSpec) (hostLink, podLink netlink.Link, err error) {
	if hostLink, err = linkByName(p.host, spec.HostIfName); err != nil {
		return nil, nil, fmt.Errorf("failed to look up %s: %w", spec.HostIfName, err)
	}
	if hostLink != nil && hostLink.Type() != "veth" {
		return nil, nil, fmt.Errorf("failed to use %s: it exists and is a %s, not a veth", spec.HostIfName, hostLink.Type())
	}
	if podLink, err = linkByName(p.pod, spec.IfName); err != nil {
		return nil, nil, fmt.Errorf("failed to look up %s in %s: %w", spec.IfName, spec.PodNetNS, err)
	}
	if podLink == nil {
		return hostLink, nil, nil
	}
	if hostLink != nil && podLink.Type() == "veth" && podLink.Attrs().ParentIndex == hostLink.Attrs().Index &&
		hostLink.Attrs().ParentIndex == podLink.Attrs().Index {
		return hostLink, podLink, nil
	}
	return nil, nil, fmt.Errorf("failed to create %s in %s: an interface of that name (type %s) already exists and is not the peer of %s",
		spec.IfName, spec.PodNetNS, podLink.Type(), spec.HostIfName)
}

// configurePod sets the pod end's MAC, MTU, address, routes and offloads and brings it and lo up.
func (p *podNS) configurePod(spec PodVethSpec, podLink netlink.Link) error {
	if lo, err := linkByName(p.pod, "lo"); err == nil && lo != nil {
		if err := p.pod.LinkSetUp(lo); err != nil {
			return fmt.Errorf("failed to set lo up in %s: %w", spec.PodNetNS, err)
		}
	}
	if !slices.Equal(podLink.Attrs().HardwareAddr, spec.MAC) {
		if err := p.pod.LinkSetHardwareAddr(podLink, spec.MAC); err != nil {
			return fmt.Errorf("failed to set the MAC of %s to %s: %w", spec.IfName, spec.MAC, err)
		}
	}
	if podLink.Attrs().MTU != spec.MTU {
		if err := p.pod.LinkSetMTU(podLink, spec.MTU); err != nil {
			return fmt.Errorf("failed to set the MTU of %s to %d: %w", spec.IfName, spec.MTU, err)
		}
	}
	if spec.DisableTxChecksum {
		if err := setTxChecksum(p.podNS, spec.IfName, false); err != nil {
			return err
		}
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(spec.Address)}
	if err := p.pod.AddrReplace(podLink, addr); err != nil {
		return fmt.Errorf("failed to add %s to %s: %w", spec.Address, spec.IfName, err)
	}
	if err := p.pod.LinkSetUp(podLink); err != nil {
		return fmt.Errorf("failed to set %s up: %w", spec.IfName, err)
	}
	for _, r := range spec.Routes {
		if err := p.pod.RouteReplace(podRoute(podLink.Attrs().Index, r)); err != nil {
			return fmt.Errorf("failed to add the route %s to %s: %w", r, spec.IfName, err)
		}
	}
	return nil
}

// podRoute builds the netlink route of r on the link.
func podRoute(linkIndex int, r PodRoute) *netlink.Route {
	nr := &netlink.Route{LinkIndex: linkIndex, Dst: prefixToIPNet(r.Dst)}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func validatePodVethSpec(s PodVethSpec) error {
	var errs []string
	if s.PodNetNS == "" {
		errs = append(errs, "no pod network namespace")
	}
	if s.IfName == "" || len(s.IfName) > unix.IFNAMSIZ-1 {
		errs = append(errs, fmt.Sprintf("invalid interface name %q", s.IfName))
	}
	if s.HostIfName == "" || len(s.HostIfName) > unix.IFNAMSIZ-1 {
		errs = append(errs, fmt.Sprintf("invalid host interface name %q", s.HostIfName))
	}
	if s.MTU < 68 {
		errs = append(errs, fmt.Sprintf("invalid MTU %d", s.MTU))
	}
	if len(s.MAC) != 6 {
		errs = append(errs, fmt.Sprintf("invalid MAC %q", s.MAC))
	}
	if !s.Address.IsValid() {
		errs = append(errs, "no address")
	}
	if len(errs) > 0 {
		return fmt.Errorf("failed to set the pod interface up: %s", strings.Join(errs, "; "))
	}
	return nil
}

// DeletePodVeth deletes the pod's veth by its host end (the kernel removes the pod end with it) in hostNetNS
// (empty: the agent's own namespace). A missing link is not an error: the pod's namespace may be gone, which
// already destroyed the pair. It refuses to delete a link of that name that is not a veth.
func DeletePodVeth(hostNetNS, hostIfName string) error {
	p, err := openPodNS(hostNetNS, "")
	if err != nil {
		return err
	}
	defer p.close()
	l, err := linkByName(p.host, hostIfName)
	if err != nil {
		return fmt.Errorf("failed to look up %s: %w", hostIfName, err)
	}
	if l == nil {
		return nil
	}
	if l.Type() != "veth" {
		return fmt.Errorf("failed to delete %s: it is a %s, not a veth", hostIfName, l.Type())
	}
	if err := p.host.LinkDel(l); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("failed to delete %s: %w", hostIfName, err)
	}
	return nil
}

// PodVethExists reports whether the host end hostIfName exists in hostNetNS (empty: the agent's own).
func PodVethExists(hostNetNS, hostIfName string) (bool, error) {
	p, err := openPodNS(hostNetNS, "")
	if err != nil {
		return false, err
	}
	defer p.close()
	l, err := linkByName(p.host, hostIfName)
	if err != nil {
		return false, fmt.Errorf("failed to look up %s: %w", hostIfName, err)
	}
	return l != nil, nil
}

// PodNetNSExists reports whether path still is a network namespace (a sandbox that still runs); false, and
// no error, when the path is gone or is no longer a namespace mount.
func PodNetNSExists(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("failed to stat %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC || st.Type == unix.PROC_SUPER_MAGIC, nil
}
