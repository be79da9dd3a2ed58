package lab

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/test/lab/proc"
)

// managedBy is the EndpointSlice controller name the lab uses (kube-controller-manager does not run here).
const managedBy = "vxflow-lab"

// EnsureClusterNetwork creates ClusterNetwork default with the lab's values (10.128.0.0/14 with /23 per node,
// service network 172.30.0.0/16, VXLAN 4789) unless it exists.
func (l *Lab) EnsureClusterNetwork(ctx context.Context) error {
	c, err := l.Client()
	if err != nil {
		return err
	}
	cn := &vxflowv1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: vxflowv1alpha1.ClusterNetworkName},
		Spec: vxflowv1alpha1.ClusterNetworkSpec{
			ClusterNetworks: []vxflowv1alpha1.ClusterNetworkEntry{{CIDR: ClusterCIDR, HostPrefix: HostPrefix}},
			ServiceNetwork:  ServiceCIDR,
			VXLANPort:       VXLANPort,
		},
	}
	if err := c.Create(ctx, cn); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create ClusterNetwork %s: %w", cn.Name, err)
	}
	return nil
}

// WaitHostSubnets waits until every node of the lab has a HostSubnet and returns them by node name.
func (l *Lab) WaitHostSubnets(ctx context.Context, timeout time.Duration) (map[string]vxflowv1alpha1.HostSubnet, error) {
	c, err := l.Client()
	if err != nil {
		return nil, err
	}
	out := map[string]vxflowv1alpha1.HostSubnet{}
	err = waitFor(ctx, timeout, func() error {
		st, err := l.State()
		if err != nil {
			return err
		}
		var list vxflowv1alpha1.HostSubnetList
		if err := c.List(ctx, &list); err != nil {
			return err
		}
		clear(out)
		for _, hs := range list.Items {
			out[hs.Name] = hs
		}
		for _, n := range st.Nodes {
			if hs, ok := out[n.Name]; !ok || hs.Spec.Subnet == "" {
				return fmt.Errorf("node %s has no HostSubnet yet (is vxflow-controller running?)", n.Name)
			}
		}
		return nil
	})
	return out, err
}

// SyncEndpointSlices does what kube-controller-manager's EndpointSlice controller would: one slice per
// Service with a selector, listing the ready pods it selects, with named target ports resolved against the
// pods' container ports. Slices of deleted Services are removed.
func (l *Lab) SyncEndpointSlices(ctx context.Context) error {
	c, err := l.Client()
	if err != nil {
		return err
	}
	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs); err != nil {
		return fmt.Errorf("failed to list Services: %w", err)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods); err != nil {
		return fmt.Errorf("failed to list Pods: %w", err)
	}
	want := map[string]bool{}
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		slice := desiredSlice(svc, pods.Items)
		want[svc.Namespace+"/"+slice.Name] = true
		existing := &discoveryv1.EndpointSlice{}
		err := c.Get(ctx, client.ObjectKeyFromObject(slice), existing)
		switch {
		case apierrors.IsNotFound(err):
			if err := c.Create(ctx, slice); err != nil {
				return fmt.Errorf("failed to create EndpointSlice %s/%s: %w", slice.Namespace, slice.Name, err)
			}
		case err != nil:
			return fmt.Errorf("failed to get EndpointSlice %s/%s: %w", slice.Namespace, slice.Name, err)
		default:
			existing.Labels, existing.OwnerReferences = slice.Labels, slice.OwnerReferences
			existing.AddressType, existing.Endpoints, existing.Ports = slice.AddressType, slice.Endpoints, slice.Ports
			if err := c.Update(ctx, existing); err != nil {
				return fmt.Errorf("failed to update EndpointSlice %s/%s: %w", slice.Namespace, slice.Name, err)
			}
		}
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.MatchingLabels{discoveryv1.LabelManagedBy: managedBy}); err != nil {
		return fmt.Errorf("failed to list EndpointSlices: %w", err)
	}
	for i := range slices.Items {
		s := &slices.Items[i]
		if !want[s.Namespace+"/"+s.Name] {
			if err := c.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("failed to delete EndpointSlice %s/%s: %w", s.Namespace, s.Name, err)
			}
		}
	}
	return nil
}

// desiredSlice is the pure part of SyncEndpointSlices.
func desiredSlice(svc *corev1.Service, pods []corev1.Pod) *discoveryv1.EndpointSlice {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace,
			Name:      svc.Name + "-lab",
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   managedBy,
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	var selected []corev1.Pod
	for _, p := range pods {
		if p.Namespace == svc.Namespace && sel.Matches(labels.Set(p.Labels)) && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			selected = append(selected, p)
		}
	}
	slices.SortFunc(selected, func(a, b corev1.Pod) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	for _, sp := range svc.Spec.Ports {
		port := resolvePort(sp, selected)
		if port == 0 {
			continue
		}
		name, proto := sp.Name, sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &port})
	}
	for _, p := range selected {
		ready := podReady(&p)
		serving, terminating := ready, false
		node := p.Spec.NodeName
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		})
	}
	return slice
}

// resolvePort returns the endpoint port of a service port: its numeric targetPort, its port when targetPort
// is unset, or the named container port of the (first) selected pod that has it.
func resolvePort(sp corev1.ServicePort, pods []corev1.Pod) int32 {
	switch {
	case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0:
		return sp.TargetPort.IntVal
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		for _, p := range pods {
			for _, ctr := range p.Spec.Containers {
				for _, cp := range ctr.Ports {
					if cp.Name == sp.TargetPort.StrVal {
						return cp.ContainerPort
					}
				}
			}
		}
		if n, err := strconv.Atoi(sp.TargetPort.StrVal); err == nil {
			return int32(n)
		}
		return 0
	}
	return sp.Port
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RouteExternal makes the external client send traffic for prefix to a node, as a router announcing a
// LoadBalancer IP (MetalLB in L2 or BGP mode) would.
func (l *Lab) RouteExternal(ctx context.Context, prefix, node string) error {
	st, err := l.State()
	if err != nil {
		return err
	}
	n, ok := st.Node(node)
	if !ok {
		return fmt.Errorf("failed to route %s: no node %s", prefix, node)
	}
	return ip(ctx, "-n", l.NetNS(roleExternal), "route", "replace", prefix, "via", n.IP)
}

// StartExternalServer starts the lab's HTTP server in the external client's namespace (a host outside the
// cluster), answering name on port.
func (l *Lab) StartExternalServer(ctx context.Context, name string, port int) (string, error) {
	key := "ext-" + name
	if _, err := proc.Start(proc.Spec{
		NetNS: l.NetNS(roleExternal),
		Argv: []string{l.binDir() + "/vxflow-lab", "serve", "--name=" + name, "--listen=:" + strconv.Itoa(port),
			"--state-dir=" + l.StateDir},
		Log: l.logFile(key), PIDFile: l.pidFile(key), Marker: l.StateDir,
	}); err != nil {
		return "", err
	}
	url := fmt.Sprintf("http://%s:%d", ExternalIP, port)
	if err := waitFor(ctx, 10*time.Second, func() error {
		_, err := Get(ctx, l.NetNS(roleExternal), url+"/healthz", time.Second)
		return err
	}); err != nil {
		return "", fmt.Errorf("failed to start the external server %s: %w", name, err)
	}
	return url, nil
}

// ControlPlaneNetNS returns the control plane's namespace.
func (l *Lab) ControlPlaneNetNS() string { return l.NetNS(roleControlPlane) }

// ExternalNetNS returns the external client's namespace.
func (l *Lab) ExternalNetNS() string { return l.NetNS(roleExternal) }

// UnderlayNetNS returns the namespace holding the underlay switch.
func (l *Lab) UnderlayNetNS() string { return l.NetNS(roleUnderlay) }

// CreateService creates a Service (the API server allocates its ClusterIP and NodePorts); for a LoadBalancer
// with ingress IPs it then writes status.loadBalancer.ingress, as a cloud or MetalLB would. It returns the
// Service as stored and refreshes the EndpointSlices.
func (l *Lab) CreateService(ctx context.Context, svc *corev1.Service, ingressIPs ...string) (*corev1.Service, error) {
	c, err := l.Client()
	if err != nil {
		return nil, err
	}
	if err := ensureNamespace(ctx, c, svc.Namespace, l.Name); err != nil {
		return nil, err
	}
	if svc.Labels == nil {
		svc.Labels = map[string]string{}
	}
	svc.Labels[LabLabel] = l.Name
	if err := c.Create(ctx, svc); err != nil {
		return nil, fmt.Errorf("failed to create Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	if len(ingressIPs) > 0 {
		for _, ip := range ingressIPs {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		if err := c.Status().Update(ctx, svc); err != nil {
			return nil, fmt.Errorf("failed to set the load balancer status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
	}
	if err := l.SyncEndpointSlices(ctx); err != nil {
		return nil, err
	}
	return svc, nil
}
