package nftables

import (
	"github.com/vxflow/vxflow/internal/model"
)

// endpointSets are a Service port's endpoints as its traffic policies see them (kube-proxy's
// CategorizeEndpoints, without topology hints).
type endpointSets struct {
	// cluster are the endpoints for Cluster traffic policy: the ready ones, or, when none is ready, the
	// serving and terminating ones (so that a rolling update never leaves a window with no backend).
	cluster []model.Endpoint
	// local are this node's endpoints for Local traffic policy, with the same ready-then-terminating rule.
	local []model.Endpoint
	// reachable is the union of cluster and local: every endpoint that gets a chain.
	reachable []model.Endpoint
	// hasAny is true if the Service has a usable endpoint anywhere in the cluster.
	hasAny bool
}

// usesClusterEndpoints is kube-proxy's UsesClusterEndpoints: internal policy Cluster, or any external
// access (even with external policy Local, cluster endpoints serve the short-circuited pod traffic).
func usesClusterEndpoints(s *model.Service, p *model.ServicePort) bool {
	return !s.InternalPolicyLocal || s.ExternallyAccessible(p)
}

// usesLocalEndpoints is kube-proxy's UsesLocalEndpoints.
func usesLocalEndpoints(s *model.Service, p *model.ServicePort) bool {
	return s.InternalPolicyLocal || externalPolicyLocal(s, p)
}

// externalPolicyLocal is true when external traffic must stay on this node's endpoints.
func externalPolicyLocal(s *model.Service, p *model.ServicePort) bool {
	return s.ExternalPolicyLocal && s.ExternallyAccessible(p)
}

// categorize splits a Service port's endpoints by traffic policy for the node named nodeName.
func categorize(s *model.Service, p *model.ServicePort, nodeName string) endpointSets {
	var out endpointSets
	if usesClusterEndpoints(s, p) {
		out.cluster = filterEndpoints(p.Endpoints, func(e model.Endpoint) bool { return e.Ready })
		if len(out.cluster) == 0 {
			out.cluster = filterEndpoints(p.Endpoints, func(e model.Endpoint) bool { return e.Serving && e.Terminating })
		}
		out.hasAny = len(out.cluster) > 0
	}
	if !usesLocalEndpoints(s, p) {
		out.reachable = out.cluster
		return out
	}
	var localReady, localTerminating bool
	for _, e := range p.Endpoints {
		local := e.NodeName == nodeName
		switch {
		case e.Ready:
			out.hasAny = true
			localReady = localReady || local
		case e.Serving && e.Terminating:
			out.hasAny = true
			localTerminating = localTerminating || local
		}
	}
	switch {
	case localReady:
		out.local = filterEndpoints(p.Endpoints, func(e model.Endpoint) bool { return e.NodeName == nodeName && e.Ready })
	case localTerminating:
		out.local = filterEndpoints(p.Endpoints, func(e model.Endpoint) bool {
			return e.NodeName == nodeName && e.Serving && e.Terminating
		})
	}
	if !usesClusterEndpoints(s, p) {
		out.reachable = out.local
		return out
	}
	// Both lists are sorted subsets of p.Endpoints, so the union keeps p.Endpoints' order.
	in := make(map[model.Endpoint]bool, len(out.cluster)+len(out.local))
	for _, e := range out.cluster {
		in[e] = true
	}
	for _, e := range out.local {
		in[e] = true
	}
	out.reachable = filterEndpoints(p.Endpoints, func(e model.Endpoint) bool { return in[e] })
	return out
}

// filterEndpoints returns the endpoints for which keep is true, in order: eps itself when it keeps them
// all (the usual case), which the caller must then only read.
func filterEndpoints(eps []model.Endpoint, keep func(model.Endpoint) bool) []model.Endpoint {
	n := 0
	for _, e := range eps {
		if keep(e) {
			n++
		}
	}
	if n == len(eps) {
		return eps
	}
	if n == 0 {
		return nil
	}
	out := make([]model.Endpoint, 0, n)
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
