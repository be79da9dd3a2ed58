package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceInput is everything BuildServices needs: the Service and EndpointSlice objects the agent watches
// and the node's facts.
type ServiceInput struct {
	// Node holds the node facts.
	Node ServiceNode
	// Services are all Services of the cluster.
	Services []*corev1.Service
	// EndpointSlices are all EndpointSlices of the cluster; they are matched to their Service by the
	// kubernetes.io/service-name label.
	EndpointSlices []*discoveryv1.EndpointSlice
}

// NewServiceInput builds a ServiceInput from object lists as API clients return them; it points into the
// lists instead of copying the objects, so a ServiceBuilder can recognise unchanged ones.
func NewServiceInput(node ServiceNode, services []corev1.Service, slices []discoveryv1.EndpointSlice) ServiceInput {
	in := ServiceInput{
		Node:           node,
		Services:       make([]*corev1.Service, 0, len(services)),
		EndpointSlices: make([]*discoveryv1.EndpointSlice, 0, len(slices)),
	}
	for i := range services {
		if !OtherProxys(services[i].Labels) {
			in.Services = append(in.Services, &services[i])
		}
	}
	for i := range slices {
		if !OtherProxys(slices[i].Labels) {
			in.EndpointSlices = append(in.EndpointSlices, &slices[i])
		}
	}
	return in
}

// LabelServiceProxyName marks a Service (and its EndpointSlices) as handled by another proxy; kube-proxy
// ignores such objects, and so does vxflow (the agent's informers select them away).
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// OtherProxys reports whether an object with these labels belongs to another Service proxy.
func OtherProxys(labels map[string]string) bool {
	_, ok := labels[LabelServiceProxyName]
	return ok
}

// BuildServices validates the Services, their EndpointSlices and the node facts and returns the ServiceSet
// the nftables renderer consumes.
//
// Invalid node facts are fatal (an *InvalidInputError and no set): without them no correct ruleset exists,
// so the caller keeps the data plane as it is. Everything else is per object and recorded in
// ServiceSet.Skipped: an unparsable ExternalIP, source range or port is left out and the rest of the Service
// is programmed; an unusable endpoint is left out and the rest of the slice is used. Services that kube-proxy
// does not proxy (ExternalName, headless, without an IPv4 ClusterIP) are left out silently, as are IPv6
// addresses, which belong to an ip6 table.
func BuildServices(in ServiceInput) (*ServiceSet, error) {
	var b ServiceBuilder
	return b.Build(in)
}

// ServiceBuilder builds ServiceSets like BuildServices, but remembers each Service's result and reuses it
// when the Service object and its EndpointSlices are the same pointers as last time. Informer caches hand
// out the same object until it changes, so with a ServiceBuilder one changed EndpointSlice costs a pass
// over the list instead of re-parsing every Service. Objects must not be modified in place. A
// ServiceBuilder is not safe for concurrent use.
type ServiceBuilder struct {
	node  ServiceNode
	cache map[string]*builtService

	// incremental is true while cache, sorted and withSkips are Update's; Build leaves them stale.
	incremental bool
	// sorted are the proxied Services in set order, maintained by Update.
	sorted []Service
	// withSkips are the keys of the cached Services that left something out, maintained by Update.
	withSkips map[string]bool
	// bulk is true during a full Update: Services are appended to sorted and sorted once at the end.
	bulk bool
}

// builtService is one Service's result and the objects it was built from.
type builtService struct {
	svc     *corev1.Service
	slices  []*discoveryv1.EndpointSlice
	out     Service
	ok      bool
	skipped []*FieldError
}

// Build is BuildServices with the cache.
func (b *ServiceBuilder) Build(in ServiceInput) (*ServiceSet, error) {
	node, errs := validateServiceNode(in.Node)
	if len(errs) > 0 {
		return nil, &InvalidInputError{Errors: errs}
	}
	if b.cache == nil || !b.node.Equal(&node) || b.incremental {
		b.cache, b.node = make(map[string]*builtService), node
	}
	b.incremental, b.sorted, b.withSkips = false, nil, nil
	set := &ServiceSet{Node: node, Services: make([]Service, 0, len(in.Services))}
	slicesBySvc := groupSlices(in.EndpointSlices)
	next := make(map[string]*builtService, len(in.Services))
	for _, svc := range in.Services {
		if svc == nil {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		es := slicesBySvc[key]
		bs := b.cache[key]
		if bs == nil || !sameObject(bs.svc, svc) || !slices.EqualFunc(bs.slices, es, sameObject) {
			bs = newBuiltService(svc, es, key)
		}
		next[key] = bs
		set.Skipped = append(set.Skipped, bs.skipped...)
		if bs.ok {
			set.Services = append(set.Services, bs.out)
		}
	}
	b.cache = next
	slices.SortFunc(set.Services, func(a, b Service) int { return CompareServices(&a, &b) })
	return set, nil
}

// newBuiltService validates svc and its slices es (IPv4, sorted by name) into the model.
func newBuiltService(svc *corev1.Service, es []*discoveryv1.EndpointSlice, key string) *builtService {
	bs := &builtService{svc: svc, slices: es}
	bs.out, bs.ok = buildService(svc, &bs.skipped)
	if bs.ok {
		for i := range bs.out.Ports {
			bs.out.Ports[i].Endpoints = endpointsFor(&bs.out.Ports[i], es, key, &bs.skipped)
		}
	}
	return bs
}

// sortSlicesByName sorts a Service's EndpointSlices by name, so that duplicates resolve the same way on
// every sync.
func sortSlicesByName(es []*discoveryv1.EndpointSlice) {
	slices.SortFunc(es, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
}

// sameObject reports whether two objects are the same version of the same object: the same pointer (an
// informer's store), or the same UID and resourceVersion (a cache that hands out copies).
func sameObject[T metav1.Object](a, b T) bool {
	if any(a) == any(b) {
		return true
	}
	return a.GetUID() != "" && a.GetUID() == b.GetUID() &&
		a.GetResourceVersion() != "" && a.GetResourceVersion() == b.GetResourceVersion()
}

// validateServiceNode checks the node facts and fills in defaults.
func validateServiceNode(n ServiceNode) (ServiceNode, []*FieldError) {
	var errs []*FieldError
	if n.Name == "" {
		errs = append(errs, fieldErrorf("node.name", "required"))
	}
	if len(n.IPs) == 0 {
		errs = append(errs, fieldErrorf("node.ips", "at least one node IP is required"))
	}
	for i, ip := range n.IPs {
		if !ip.Is4() {
			errs = append(errs, fieldErrorf(fmt.Sprintf("node.ips[%d]", i), "%s is not an IPv4 address", ip))
		}
	}
	if len(n.ClusterCIDRs) == 0 {
		errs = append(errs, fieldErrorf("node.clusterCIDRs", "at least one cluster CIDR is required"))
	}
	for i, p := range n.ClusterCIDRs {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			errs = append(errs, fieldErrorf(fmt.Sprintf("node.clusterCIDRs[%d]", i), "%s is not a canonical IPv4 CIDR", p))
		}
	}
	if p := n.ServiceNetwork; !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
		errs = append(errs, fieldErrorf("node.serviceNetwork", "%s is not a canonical IPv4 CIDR", p))
	}
	if n.VXLANPort == 0 {
		n.VXLANPort = DefaultVXLANPort
	}
	switch n.Datapath {
	case DatapathSystem, DatapathNetdev:
	default:
		errs = append(errs, fieldErrorf("node.datapath", "%q is not a datapath type: use %s or %s", n.Datapath, DatapathSystem, DatapathNetdev))
	}
	if n.MasqueradeMark == 0 {
		n.MasqueradeMark = DefaultMasqueradeMark
	}
	if n.MasqueradeMark&(n.MasqueradeMark-1) != 0 {
		errs = append(errs, fieldErrorf("node.masqueradeMark", "%#x is not a single bit", n.MasqueradeMark))
	}
	n.IPs = slices.Clone(n.IPs)
	n.ClusterCIDRs = slices.Clone(n.ClusterCIDRs)
	return n, errs
}

// groupSlices indexes the IPv4 EndpointSlices by their Service's namespace/name, sorted by slice name so
// that duplicates resolve the same way on every sync.
func groupSlices(all []*discoveryv1.EndpointSlice) map[string][]*discoveryv1.EndpointSlice {
	out := make(map[string][]*discoveryv1.EndpointSlice)
	for _, es := range all {
		if es == nil || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := es.Namespace + "/" + svc
		out[key] = append(out[key], es)
	}
	for _, l := range out {
		sortSlicesByName(l)
	}
	return out
}

// buildService validates one Service; ok is false when kube-proxy would not proxy it at all.
func buildService(svc *corev1.Service, skipped *[]*FieldError) (Service, bool) {
	// Field paths are formatted only for errors: a full build of 10,000 valid Services formats none.
	path := func() string { return fmt.Sprintf("services[%s/%s]", svc.Namespace, svc.Name) }
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return Service{}, false
	}
	s := Service{Namespace: svc.Namespace, Name: svc.Name}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if ip == corev1.ClusterIPNone {
			return Service{}, false
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			*skipped = append(*skipped, fieldErrorf(path()+".spec.clusterIPs", "%q is not an IP address", ip))
			return Service{}, false
		}
		if a.Is4() {
			s.ClusterIP = a
			break
		}
	}
	if !s.ClusterIP.IsValid() {
		return Service{}, false
	}

	for i, ip := range svc.Spec.ExternalIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		switch {
		case err != nil:
			*skipped = append(*skipped, fieldErrorf(fmt.Sprintf("%s.spec.externalIPs[%d]", path(), i), "%q is not an IP address", ip))
		case a.Is4():
			s.ExternalIPs = appendUnique(s.ExternalIPs, a)
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for i, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
				continue
			}
			a, err := netip.ParseAddr(ing.IP)
			switch {
			case err != nil:
				*skipped = append(*skipped, fieldErrorf(fmt.Sprintf("%s.status.loadBalancer.ingress[%d].ip", path(), i), "%q is not an IP address", ing.IP))
			case a.Is4():
				s.LoadBalancerIPs = appendUnique(s.LoadBalancerIPs, a)
			}
		}
		for i, r := range svc.Spec.LoadBalancerSourceRanges {
			p, err := netip.ParsePrefix(strings.TrimSpace(r))
			switch {
			case err != nil:
				*skipped = append(*skipped, fieldErrorf(fmt.Sprintf("%s.spec.loadBalancerSourceRanges[%d]", path(), i), "%q is not a CIDR", r))
			case p.Addr().Is4():
				s.SourceRanges = append(s.SourceRanges, p.Masked())
			}
		}
	}
	s.InternalPolicyLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	externalLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		s.AffinityTimeout = DefaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
			s.AffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}

	hasNodePorts := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	for i, p := range svc.Spec.Ports {
		pp := func() string { return fmt.Sprintf("%s.spec.ports[%d]", path(), i) }
		proto, ok := parseL4Proto(p.Protocol)
		if !ok {
			*skipped = append(*skipped, fieldErrorf(pp()+".protocol", "%q is not TCP, UDP or SCTP", p.Protocol))
			continue
		}
		if p.Port < 1 || p.Port > 65535 {
			*skipped = append(*skipped, fieldErrorf(pp()+".port", "%d is not a port (1-65535)", p.Port))
			continue
		}
		sp := ServicePort{Name: p.Name, Protocol: proto, Port: uint16(p.Port)}
		if hasNodePorts && p.NodePort != 0 {
			if p.NodePort < 1 || p.NodePort > 65535 {
				*skipped = append(*skipped, fieldErrorf(pp()+".nodePort", "%d is not a port (1-65535)", p.NodePort))
			} else {
				sp.NodePort = uint16(p.NodePort)
			}
		}
		s.Ports = append(s.Ports, sp)
	}
	// externalTrafficPolicy only means something for a Service reachable from outside (kube-proxy's
	// ExternalPolicyLocal); it is decided per Service because every port shares the external addresses.
	if externalLocal {
		for i := range s.Ports {
			if s.ExternallyAccessible(&s.Ports[i]) {
				s.ExternalPolicyLocal = true
			}
		}
	}
	return s, true
}

// endpointsFor collects the endpoints of one Service port from the Service's slices: a slice port matches by
// name and protocol, the first address of each endpoint is used, and a duplicate address:port keeps its first
// occurrence (slices sorted by name).
func endpointsFor(sp *ServicePort, slicesOfSvc []*discoveryv1.EndpointSlice, svcKey string, skipped *[]*FieldError) []Endpoint {
	// Sized once (the model of 100,000 endpoints is kept for as long as they exist); duplicates are
	// removed after sorting rather than through a map per port.
	total := 0
	for _, es := range slicesOfSvc {
		total += len(es.Endpoints)
	}
	if total == 0 {
		return nil
	}
	out := make([]Endpoint, 0, total)
	for _, es := range slicesOfSvc {
		var port int32
		found := false
		for _, p := range es.Ports {
			name, proto := "", corev1.ProtocolTCP
			if p.Name != nil {
				name = *p.Name
			}
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if pr, ok := parseL4Proto(proto); !ok || pr != sp.Protocol || name != sp.Name || p.Port == nil {
				continue
			}
			port, found = *p.Port, true
			break
		}
		if !found {
			continue
		}
		path := func() string { return fmt.Sprintf("endpointSlices[%s/%s]", es.Namespace, es.Name) }
		if port < 1 || port > 65535 {
			*skipped = append(*skipped, fieldErrorf(path()+".ports", "port %q of Service %s: %d is not a port (1-65535)", sp.Name, svcKey, port))
			continue
		}
		for i, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil || !a.Is4() {
				*skipped = append(*skipped, fieldErrorf(fmt.Sprintf("%s.endpoints[%d].addresses[0]", path(), i), "%q is not an IPv4 address", ep.Addresses[0]))
				continue
			}
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ready
			if ep.Conditions.Serving != nil {
				serving = *ep.Conditions.Serving
			}
			terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			e := Endpoint{Addr: a, Port: uint16(port), Ready: ready, Serving: serving, Terminating: terminating}
			if ep.NodeName != nil {
				e.NodeName = *ep.NodeName
			}
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	// Stable, so that of duplicates the first occurrence (slices by name, endpoints in order) is kept.
	slices.SortStableFunc(out, func(a, b Endpoint) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	out = slices.CompactFunc(out, func(a, b Endpoint) bool { return a.Addr == b.Addr && a.Port == b.Port })
	return slices.Clip(out)
}

// parseL4Proto maps a Kubernetes protocol to its IP protocol number.
func parseL4Proto(p corev1.Protocol) (L4Proto, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return L4ProtoTCP, true
	case corev1.ProtocolUDP:
		return L4ProtoUDP, true
	case corev1.ProtocolSCTP:
		return L4ProtoSCTP, true
	}
	return 0, false
}

// appendUnique appends a to l unless l already holds it.
func appendUnique(l []netip.Addr, a netip.Addr) []netip.Addr {
	if slices.Contains(l, a) {
		return l
	}
	return append(l, a)
}

// LastChangeTriggerTime returns an EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time, the
// start of kube-proxy's network_programming_duration_seconds, if it is set and parses.
func LastChangeTriggerTime(es *discoveryv1.EndpointSlice) (time.Time, bool) {
	v, ok := es.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
