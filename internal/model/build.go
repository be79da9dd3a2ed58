package model

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

// BuildNodeView validates the API objects and node facts in in and returns this node's view of the overlay.
//
// Problems fall in two classes, chosen so that one bad object never stops a whole cluster's traffic and
// nothing is programmed from a view that is wrong as a whole:
//
//   - Fatal, returned as an *InvalidInputError and no view: a missing or invalid ClusterNetwork, invalid node
//     facts (node IP, underlay MTU, datapath type), an MTU the underlay cannot carry, and a missing or invalid
//     HostSubnet of this node (including a hostIP that is not the node IP). Without these there is no
//     correct flow set to render, so the caller keeps the data plane as it is and reports the error.
//   - Per object, recorded in NodeView.Skipped: an invalid remote HostSubnet, or one that conflicts with
//     this node or with a remote HostSubnet that was kept (overlapping subnet, same hostIP, same name);
//     an invalid local pod, or pods that share an IP, an ofport or a name. The object is left out and the
//     rest is programmed. Between two conflicting remote HostSubnets the older one (creationTimestamp,
//     then name) is kept, so that a newcomer never takes traffic away from a node that already had it;
//     this node's own HostSubnet always wins. Pods that share an IP or an ofport are all left out, since
//     there is no way to tell which one the address really belongs to.
func BuildNodeView(in NodeInput) (*NodeView, error) {
	v := &NodeView{NodeName: in.NodeName}
	var fatal []*FieldError

	fatal = append(fatal, v.setClusterNetwork(in.ClusterNetwork)...)
	fatal = append(fatal, v.setFacts(in.NodeName, in.Facts, in.ClusterNetwork)...)
	if len(fatal) > 0 {
		return nil, &InvalidInputError{Errors: fatal}
	}

	local, others, errs := splitHostSubnets(in.NodeName, in.HostSubnets)
	if len(errs) > 0 {
		return nil, &InvalidInputError{Errors: errs}
	}
	if errs := v.setLocalSubnet(local); len(errs) > 0 {
		return nil, &InvalidInputError{Errors: errs}
	}
	v.setRemoteNodes(others)
	v.setLocalPods(in.Pods)
	return v, nil
}

// setClusterNetwork copies the validated ClusterNetwork settings into v.
func (v *NodeView) setClusterNetwork(cn *v1alpha1.ClusterNetwork) []*FieldError {
	if cn == nil {
		return []*FieldError{fieldErrorf("clusterNetwork", "missing: the ClusterNetwork %q does not exist yet", v1alpha1.ClusterNetworkName)}
	}
	var errs []*FieldError
	const spec = "clusterNetwork.spec"
	if len(cn.Spec.ClusterNetworks) == 0 {
		errs = append(errs, fieldErrorf(spec+".clusterNetworks", "at least one cluster network is required"))
	}
	for i, e := range cn.Spec.ClusterNetworks {
		path := fmt.Sprintf("%s.clusterNetworks[%d]", spec, i)
		p, err := parseCanonicalPrefix(e.CIDR)
		if err != nil {
			errs = append(errs, fieldErrorf(path+".cidr", "%s", err))
			continue
		}
		if int(e.HostPrefix) <= p.Bits() || e.HostPrefix > 30 {
			errs = append(errs, fieldErrorf(path+".hostPrefix", "%d must be longer than /%d and at most 30", e.HostPrefix, p.Bits()))
			continue
		}
		for _, prev := range v.ClusterNetworks {
			if prev.CIDR.Overlaps(p) {
				errs = append(errs, fieldErrorf(path+".cidr", "%s overlaps cluster network %s", p, prev.CIDR))
			}
		}
		v.ClusterNetworks = append(v.ClusterNetworks, ClusterCIDR{CIDR: p, HostPrefix: int(e.HostPrefix)})
	}

	svc, err := parseCanonicalPrefix(cn.Spec.ServiceNetwork)
	if err != nil {
		errs = append(errs, fieldErrorf(spec+".serviceNetwork", "%s", err))
	} else {
		v.ServiceNetwork = svc
		if c, ok := v.clusterNetworkOverlapping(svc); ok {
			errs = append(errs, fieldErrorf(spec+".serviceNetwork", "%s overlaps cluster network %s", svc, c.CIDR))
		}
	}

	switch port := cn.Spec.VXLANPort; {
	case port == 0:
		v.VXLANPort = DefaultVXLANPort
	case port < 1 || port > 65535:
		errs = append(errs, fieldErrorf(spec+".vxlanPort", "%d is not a UDP port (1-65535)", port))
	default:
		v.VXLANPort = uint16(port)
	}

	switch cn.Spec.Mode {
	case "", v1alpha1.NetworkModeSubnet:
		v.Mode = ModeSubnet
	default:
		errs = append(errs, fieldErrorf(spec+".mode", "%q is not supported: only %s exists", cn.Spec.Mode, v1alpha1.NetworkModeSubnet))
	}
	return errs
}

// setFacts validates the node's own facts and derives the MTU; it needs the cluster and service networks
// already set.
func (v *NodeView) setFacts(nodeName string, f NodeFacts, cn *v1alpha1.ClusterNetwork) []*FieldError {
	var errs []*FieldError
	if nodeName == "" {
		errs = append(errs, fieldErrorf("nodeName", "required"))
	}

	switch ip := f.NodeIP; {
	case !ip.IsValid():
		errs = append(errs, fieldErrorf("facts.nodeIP", "required"))
	case !ip.Is4():
		errs = append(errs, fieldErrorf("facts.nodeIP", "%s is not IPv4", ip))
	case !ip.IsGlobalUnicast():
		errs = append(errs, fieldErrorf("facts.nodeIP", "%s cannot carry VXLAN: not a unicast node address", ip))
	default:
		if why := v.insideOverlay(ip); why != "" {
			errs = append(errs, fieldErrorf("facts.nodeIP", "%s is inside %s", ip, why))
		}
		v.NodeIP = ip
	}

	switch f.Datapath {
	case DatapathSystem, DatapathNetdev:
		v.Datapath = f.Datapath
	default:
		errs = append(errs, fieldErrorf("facts.datapath", "%q is not a datapath type: use %s or %s", f.Datapath, DatapathSystem, DatapathNetdev))
	}

	if f.UnderlayMTU <= 0 {
		return append(errs, fieldErrorf("facts.underlayMTU", "%d: must be positive", f.UnderlayMTU))
	}
	v.UnderlayMTU = f.UnderlayMTU
	if cn == nil {
		return errs
	}
	maxMTU := f.UnderlayMTU - VXLANOverhead
	switch {
	case cn.Spec.MTU != nil && int(*cn.Spec.MTU) > maxMTU:
		errs = append(errs, fieldErrorf("clusterNetwork.spec.mtu",
			"%d needs an underlay MTU of at least %d, but this node's underlay MTU is %d",
			*cn.Spec.MTU, int(*cn.Spec.MTU)+VXLANOverhead, f.UnderlayMTU))
	case cn.Spec.MTU != nil && *cn.Spec.MTU < MinMTU:
		errs = append(errs, fieldErrorf("clusterNetwork.spec.mtu", "%d is below the minimum %d", *cn.Spec.MTU, MinMTU))
	case cn.Spec.MTU != nil:
		v.MTU = int(*cn.Spec.MTU)
	case maxMTU < MinMTU:
		errs = append(errs, fieldErrorf("facts.underlayMTU",
			"%d is too small: the pod MTU would be %d, below the minimum %d", f.UnderlayMTU, maxMTU, MinMTU))
	default:
		v.MTU = maxMTU
	}
	return errs
}

// splitHostSubnets finds this node's HostSubnet and returns it apart from the others.
func splitHostSubnets(nodeName string, all []v1alpha1.HostSubnet) (*v1alpha1.HostSubnet, []v1alpha1.HostSubnet, []*FieldError) {
	var local *v1alpha1.HostSubnet
	others := make([]v1alpha1.HostSubnet, 0, len(all))
	for i := range all {
		if all[i].Name != nodeName {
			others = append(others, all[i])
			continue
		}
		if local != nil {
			return nil, nil, []*FieldError{fieldErrorf(hostSubnetPath(&all[i], i), "duplicate HostSubnet for this node")}
		}
		local = &all[i]
	}
	if local == nil {
		return nil, nil, []*FieldError{fieldErrorf(fmt.Sprintf("hostSubnets[%s]", nodeName),
			"missing: the controller has not allocated a subnet to this node yet")}
	}
	return local, others, nil
}

// setLocalSubnet validates this node's HostSubnet; any problem with it is fatal.
func (v *NodeView) setLocalSubnet(hs *v1alpha1.HostSubnet) []*FieldError {
	node, errs := v.parseHostSubnet(hs, hostSubnetPath(hs, 0))
	if len(errs) > 0 {
		return errs
	}
	if node.HostIP != v.NodeIP {
		return []*FieldError{fieldErrorf(hostSubnetPath(hs, 0)+".spec.hostIP",
			"%s is not this node's IP %s: waiting for the controller to update it", node.HostIP, v.NodeIP)}
	}
	v.Subnet = node.Subnet
	v.Gateway = node.Subnet.Addr().Next()
	v.HostSubnetUID = hs.UID
	v.HostSubnetGeneration = hs.Generation
	return nil
}

// setRemoteNodes validates the other HostSubnets, keeps the valid, non-conflicting ones in v.RemoteNodes
// (sorted by name) and records the rest in v.Skipped.
func (v *NodeView) setRemoteNodes(others []v1alpha1.HostSubnet) {
	type candidate struct {
		node RemoteNode
		hs   *v1alpha1.HostSubnet
		path string
	}
	var cands []candidate
	for i := range others {
		hs := &others[i]
		path := hostSubnetPath(hs, i)
		node, errs := v.parseHostSubnet(hs, path)
		if len(errs) > 0 {
			v.Skipped = append(v.Skipped, errs...)
			continue
		}
		cands = append(cands, candidate{node: node, hs: hs, path: path})
	}
	// Older objects first, so that they win conflicts.
	slices.SortStableFunc(cands, func(a, b candidate) int {
		if c := a.hs.CreationTimestamp.Compare(b.hs.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.node.Name, b.node.Name)
	})
	kept := make([]RemoteNode, 0, len(cands))
	seen := remoteIndex{
		byName:   make(map[string]RemoteNode, len(cands)),
		bySubnet: make(map[netip.Prefix]RemoteNode, len(cands)),
		byHostIP: make(map[netip.Addr]RemoteNode, len(cands)),
	}
	for _, c := range cands {
		if err := v.remoteConflict(c.node, c.path, seen); err != nil {
			v.Skipped = append(v.Skipped, err)
			continue
		}
		kept = append(kept, c.node)
		seen.byName[c.node.Name] = c.node
		seen.bySubnet[c.node.Subnet] = c.node
		seen.byHostIP[c.node.HostIP] = c.node
	}
	slices.SortFunc(kept, func(a, b RemoteNode) int { return cmp.Compare(a.Name, b.Name) })
	v.RemoteNodes = kept
}

// remoteIndex finds the remote nodes kept so far by name, subnet and hostIP. Every subnet in it is exactly
// its cluster network's hostPrefix long and cluster networks do not overlap, so two subnets overlap only when
// they are equal: a map lookup finds every overlap.
type remoteIndex struct {
	byName   map[string]RemoteNode
	bySubnet map[netip.Prefix]RemoteNode
	byHostIP map[netip.Addr]RemoteNode
}

// remoteConflict reports why n cannot be kept beside this node and the remote nodes already kept.
func (v *NodeView) remoteConflict(n RemoteNode, path string, kept remoteIndex) *FieldError {
	if n.Subnet.Overlaps(v.Subnet) {
		return fieldErrorf(path+".spec.subnet", "%s overlaps this node's (%s) subnet %s", n.Subnet, v.NodeName, v.Subnet)
	}
	if n.HostIP == v.NodeIP {
		return fieldErrorf(path+".spec.hostIP", "%s is this node's (%s) IP", n.HostIP, v.NodeName)
	}
	if _, ok := kept.byName[n.Name]; ok {
		return fieldErrorf(path, "duplicate HostSubnet name")
	}
	if k, ok := kept.bySubnet[n.Subnet]; ok {
		return fieldErrorf(path+".spec.subnet", "%s overlaps %s's %s", n.Subnet, k.Name, k.Subnet)
	}
	if k, ok := kept.byHostIP[n.HostIP]; ok {
		return fieldErrorf(path+".spec.hostIP", "%s is already %s's hostIP", n.HostIP, k.Name)
	}
	return nil
}

// parseHostSubnet checks one HostSubnet on its own (not against the others).
func (v *NodeView) parseHostSubnet(hs *v1alpha1.HostSubnet, path string) (RemoteNode, []*FieldError) {
	var errs []*FieldError
	n := RemoteNode{Name: hs.Name, UID: hs.UID}
	if hs.Spec.Host != hs.Name {
		errs = append(errs, fieldErrorf(path+".spec.host", "%q must equal the HostSubnet name %q", hs.Spec.Host, hs.Name))
	}

	ip, err := netip.ParseAddr(hs.Spec.HostIP)
	switch {
	case err != nil:
		errs = append(errs, fieldErrorf(path+".spec.hostIP", "%q is not an IP address", hs.Spec.HostIP))
	case !ip.Is4():
		errs = append(errs, fieldErrorf(path+".spec.hostIP", "%s is not IPv4", ip))
	case !ip.IsGlobalUnicast():
		errs = append(errs, fieldErrorf(path+".spec.hostIP", "%s cannot carry VXLAN: not a unicast node address", ip))
	default:
		if why := v.insideOverlay(ip); why != "" {
			errs = append(errs, fieldErrorf(path+".spec.hostIP", "%s is inside %s", ip, why))
		}
		n.HostIP = ip
	}

	subnet, err := parseCanonicalPrefix(hs.Spec.Subnet)
	if err != nil {
		return n, append(errs, fieldErrorf(path+".spec.subnet", "%s", err))
	}
	n.Subnet = subnet
	c, ok := v.clusterNetworkContaining(subnet)
	switch {
	case !ok:
		errs = append(errs, fieldErrorf(path+".spec.subnet", "%s is not inside any cluster network", subnet))
	case subnet.Bits() != c.HostPrefix:
		errs = append(errs, fieldErrorf(path+".spec.subnet", "%s is not a /%d, the hostPrefix of cluster network %s", subnet, c.HostPrefix, c.CIDR))
	}
	return n, errs
}

// setLocalPods validates the pods against this node's subnet, keeps the good ones in v.LocalPods (sorted by
// namespace/name) and records the rest in v.Skipped.
func (v *NodeView) setLocalPods(pods []LocalPod) {
	valid := make([]LocalPod, 0, len(pods))
	paths := make([]string, 0, len(pods))
	for i, p := range pods {
		path := fmt.Sprintf("pods[%d]", i)
		if p.Namespace == "" || p.Name == "" {
			v.Skipped = append(v.Skipped, fieldErrorf(path, "namespace and name are required"))
			continue
		}
		path = "pods[" + p.Key() + "]"
		if err := v.checkPod(&p, path); err != nil {
			v.Skipped = append(v.Skipped, err)
			continue
		}
		valid = append(valid, p)
		paths = append(paths, path)
	}

	// Shared keys, IPs or ofports make every pod involved untrustworthy.
	byKey := map[string]int{}
	byIP := map[netip.Addr]int{}
	byPort := map[int32]int{}
	for _, p := range valid {
		byKey[p.Key()]++
		byIP[p.IP]++
		byPort[p.OFPort]++
	}
	v.LocalPods = make([]LocalPod, 0, len(valid))
	for i, p := range valid {
		switch {
		case byKey[p.Key()] > 1:
			v.Skipped = append(v.Skipped, fieldErrorf(paths[i], "%d pods have this name", byKey[p.Key()]))
		case byIP[p.IP] > 1:
			v.Skipped = append(v.Skipped, fieldErrorf(paths[i]+".ip", "%s is used by %d pods", p.IP, byIP[p.IP]))
		case byPort[p.OFPort] > 1:
			v.Skipped = append(v.Skipped, fieldErrorf(paths[i]+".ofport", "%d is used by %d pods", p.OFPort, byPort[p.OFPort]))
		default:
			v.LocalPods = append(v.LocalPods, p)
		}
	}
	slices.SortFunc(v.LocalPods, func(a, b LocalPod) int { return cmp.Compare(a.Key(), b.Key()) })
}

// checkPod validates one pod and fills in its derived MAC.
func (v *NodeView) checkPod(p *LocalPod, path string) *FieldError {
	switch ip := p.IP; {
	case !ip.IsValid():
		return fieldErrorf(path+".ip", "required")
	case !v.Subnet.Contains(ip):
		return fieldErrorf(path+".ip", "%s is not inside this node's subnet %s", ip, v.Subnet)
	case ip == v.Subnet.Addr():
		return fieldErrorf(path+".ip", "%s is the subnet's network address", ip)
	case ip == v.Gateway:
		return fieldErrorf(path+".ip", "%s is the node's gateway address", ip)
	case ip == LastAddr(v.Subnet):
		return fieldErrorf(path+".ip", "%s is the subnet's broadcast address", ip)
	}
	want := PodMAC(p.IP)
	switch {
	case len(p.MAC) == 0:
		p.MAC = want
	case !bytes.Equal(p.MAC, want):
		return fieldErrorf(path+".mac", "%s is not %s, the MAC derived from the pod IP", p.MAC, want)
	}
	if p.OFPort < FirstPodOFPort || p.OFPort > MaxOFPort {
		return fieldErrorf(path+".ofport", "%d is not a pod port (%d-%d)", p.OFPort, FirstPodOFPort, MaxOFPort)
	}
	if v.Mode == ModeSubnet && p.VNID != GlobalVNID {
		return fieldErrorf(path+".vnid", "%d: Subnet mode carries only VNID %d", p.VNID, GlobalVNID)
	}
	return nil
}

// insideOverlay names the cluster or service network that contains ip, or returns "".
func (v *NodeView) insideOverlay(ip netip.Addr) string {
	for _, c := range v.ClusterNetworks {
		if c.CIDR.Contains(ip) {
			return "cluster network " + c.CIDR.String()
		}
	}
	if v.ServiceNetwork.IsValid() && v.ServiceNetwork.Contains(ip) {
		return "the service network " + v.ServiceNetwork.String()
	}
	return ""
}

// clusterNetworkContaining returns the cluster network that holds all of p.
func (v *NodeView) clusterNetworkContaining(p netip.Prefix) (ClusterCIDR, bool) {
	for _, c := range v.ClusterNetworks {
		if c.CIDR.Bits() <= p.Bits() && c.CIDR.Contains(p.Addr()) {
			return c, true
		}
	}
	return ClusterCIDR{}, false
}

// clusterNetworkOverlapping returns a cluster network that shares an address with p.
func (v *NodeView) clusterNetworkOverlapping(p netip.Prefix) (ClusterCIDR, bool) {
	for _, c := range v.ClusterNetworks {
		if c.CIDR.Overlaps(p) {
			return c, true
		}
	}
	return ClusterCIDR{}, false
}

// hostSubnetPath names a HostSubnet in field paths, by name or, lacking one, by its index.
func hostSubnetPath(hs *v1alpha1.HostSubnet, i int) string {
	if hs.Name == "" {
		return "hostSubnets[" + strconv.Itoa(i) + "]"
	}
	return "hostSubnets[" + hs.Name + "]"
}

// parseCanonicalPrefix parses an IPv4 CIDR whose host bits are zero.
func parseCanonicalPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	case !p.Addr().Is4():
		return netip.Prefix{}, fmt.Errorf("%s is not IPv4", p)
	case p != p.Masked():
		return netip.Prefix{}, fmt.Errorf("%s is not canonical: did you mean %s?", p, p.Masked())
	}
	return p, nil
}

// LastAddr returns the highest address of an IPv4 prefix (its broadcast address), which no pod may have.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
