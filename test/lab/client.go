package lab

import (
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
)

// Scheme knows the built-in kinds and vxflow's.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := vxflowv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

type clientCache struct {
	mu  sync.Mutex
	cfg *rest.Config
	c   client.Client
}

func (cc *clientCache) close() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.c, cc.cfg = nil, nil
}

// RESTConfig returns the admin's REST config; its connections are made from the control plane's namespace,
// so it works from the host (which has no route into the lab) with the API server's real certificate.
func (l *Lab) RESTConfig() (*rest.Config, error) {
	l.clients.mu.Lock()
	defer l.clients.mu.Unlock()
	if l.clients.cfg != nil {
		return rest.CopyConfig(l.clients.cfg), nil
	}
	cfg, err := l.RESTConfigFor("admin")
	if err != nil {
		return nil, err
	}
	l.clients.cfg = cfg
	return rest.CopyConfig(cfg), nil
}

// RESTConfigFor returns the REST config of a kubeconfig the control plane wrote (see Kubeconfig), dialing
// from the control plane's namespace.
func (l *Lab) RESTConfigFor(stem string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig(stem))
	if err != nil {
		return nil, fmt.Errorf("failed to load kubeconfig %s: %w", stem, err)
	}
	cfg.Dial = DialContextIn(l.NetNS(roleControlPlane))
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}

// Client returns a controller-runtime client for the admin (uncached, so reads see the API server's truth).
func (l *Lab) Client() (client.Client, error) {
	cfg, err := l.RESTConfig()
	if err != nil {
		return nil, err
	}
	l.clients.mu.Lock()
	defer l.clients.mu.Unlock()
	if l.clients.c != nil {
		return l.clients.c, nil
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, fmt.Errorf("failed to create the admin client: %w", err)
	}
	l.clients.c = c
	return c, nil
}
