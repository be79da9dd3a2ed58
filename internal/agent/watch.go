package agent

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vxflow/vxflow/api/v1alpha1"
)

// Scheme returns the types the agent reads and writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to register Kubernetes types: %w", err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to register vxflow types: %w", err)
	}
	return s, nil
}

// watchedTypes are the objects whose changes change the node's OVS flows, links and routes; Services and
// EndpointSlices are the ServiceProxy's (StartServiceWatches).
func watchedTypes() []client.Object {
	return []client.Object{&v1alpha1.ClusterNetwork{}, &v1alpha1.HostSubnet{}}
}

// StartWatches starts informers on the watched types, calls onChange for every change that can alter the
// node's state, and returns the cache to read them from once it has synced. Status-only updates of
// HostSubnets (the agents' own reports) are ignored so that reporting never causes a sync.
func StartWatches(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, onChange func()) (cache.Cache, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("failed to create the informer cache: %w", err)
	}
	for _, obj := range watchedTypes() {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("failed to create an informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { onChange() },
			DeleteFunc: func(any) { onChange() },
			UpdateFunc: func(oldObj, newObj any) {
				if specChanged(oldObj, newObj) {
					onChange()
				}
			},
		}); err != nil {
			return nil, fmt.Errorf("failed to watch %T: %w", obj, err)
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("failed to sync the informer cache: %w", ctx.Err())
	}
	return c, nil
}

// specChanged filters out updates that cannot change the node's state: HostSubnet status writes.
func specChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*v1alpha1.HostSubnet)
	n, ok2 := newObj.(*v1alpha1.HostSubnet)
	if !ok1 || !ok2 {
		return true
	}
	return o.Generation != n.Generation || o.DeletionTimestamp != n.DeletionTimestamp
}
