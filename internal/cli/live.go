package cli

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

// RESTConfig loads the client configuration the way kubectl does: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config, else the in-cluster service account; kubeContext selects a context ("" = current).
func RESTConfig(kubeconfig, kubeContext string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to load the kubeconfig: %w", err)
	}
	cfg.UserAgent = "vxflowctl"
	return cfg, nil
}

// Scheme returns the types vxflowctl reads: Kubernetes' own and network.vxflow.io/v1alpha1.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to register Kubernetes types: %w", err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to register %s types: %w", v1alpha1.GroupVersion, err)
	}
	return s, nil
}

// NewClient returns an API client for cfg with Scheme's types.
func NewClient(cfg *rest.Config) (client.Client, error) {
	s, err := Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("failed to create the API client: %w", err)
	}
	return c, nil
}

// LiveOptions say which kinds LoadLiveState reads beyond the ClusterNetwork and HostSubnets.
type LiveOptions struct {
	// Nodes lists Nodes (status compares them with HostSubnets); a Forbidden answer is tolerated.
	Nodes bool
	// Workloads lists Pods, Services and EndpointSlices in every namespace (trace resolves names with them).
	Workloads bool
}

// LoadLiveState reads the cluster's objects into a ClusterState.
func LoadLiveState(ctx context.Context, c client.Reader, o LiveOptions) (*ClusterState, error) {
	st := &ClusterState{Ignored: map[string]int{}}
	cn := &v1alpha1.ClusterNetwork{}
	switch err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.ClusterNetworkName}, cn); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("failed to get ClusterNetwork %s: %w", v1alpha1.ClusterNetworkName, err)
	default:
		st.ClusterNetwork = cn
	}
	var hs v1alpha1.HostSubnetList
	if err := c.List(ctx, &hs); err != nil {
		return nil, fmt.Errorf("failed to list HostSubnets: %w", err)
	}
	st.HostSubnets = hs.Items
	if o.Nodes || o.Workloads {
		var nodes corev1.NodeList
		switch err := c.List(ctx, &nodes); {
		case apierrors.IsForbidden(err):
		case err != nil:
			return nil, fmt.Errorf("failed to list Nodes: %w", err)
		default:
			st.Nodes = nodes.Items
		}
	}
	if o.Workloads {
		var pods corev1.PodList
		if err := c.List(ctx, &pods); err != nil {
			return nil, fmt.Errorf("failed to list Pods: %w", err)
		}
		st.Pods = pods.Items
		var svcs corev1.ServiceList
		if err := c.List(ctx, &svcs); err != nil {
			return nil, fmt.Errorf("failed to list Services: %w", err)
		}
		st.Services = svcs.Items
		var slices discoveryv1.EndpointSliceList
		if err := c.List(ctx, &slices); err != nil {
			return nil, fmt.Errorf("failed to list EndpointSlices: %w", err)
		}
		st.EndpointSlices = slices.Items
	}
	st.sort()
	return st, nil
}
