// Package envtestutil starts controller-runtime's envtest on the control plane that
// hack/build-control-plane.sh builds, so every test package finds the same real binaries.
package envtestutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot returns the repository root, found from this source file, so tests work from any package.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// NewEnvironment returns an envtest environment with vxflow's CRDs, pointing KUBEBUILDER_ASSETS at
// bin/k8s when it is unset; it fails clearly when the binaries were never built.
func NewEnvironment() (*envtest.Environment, error) {
	root := RepoRoot()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if err := os.Setenv("KUBEBUILDER_ASSETS", filepath.Join(root, "bin", "k8s")); err != nil {
			return nil, fmt.Errorf("failed to set KUBEBUILDER_ASSETS: %w", err)
		}
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("failed to find %s in KUBEBUILDER_ASSETS=%s (run `make control-plane`): %w", b, assets, err)
		}
	}
	return &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}, nil
}

// KubectlPath returns the kubectl built next to the control plane.
func KubectlPath() string {
	return filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
}

// Start starts NewEnvironment's control plane for one test, stops it when the test ends, and returns the
// environment and its admin config; it fails the test when the control plane cannot start.
func Start(t testing.TB) (*envtest.Environment, *rest.Config) {
	t.Helper()
	env, err := NewEnvironment()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		t.Fatalf("failed to start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("failed to stop envtest: %v", err)
		}
	})
	return env, cfg
}
