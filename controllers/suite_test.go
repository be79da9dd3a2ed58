package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/textlogger"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
)

// The envtest layer: the real kube-apiserver and etcd from bin/k8s (or $KUBEBUILDER_ASSETS) with the CRDs of
// config/crd/bases. It starts on first use, so the pure tests of this package run without it, and stops in
// TestMain. Every object vxflow has is cluster-scoped, so tests run one after another and each starts from
// an empty cluster (resetCluster).

const (
	lockNamespace = "vxflow-system"
	// timeout is generous: the suite must pass under -race on two busy cores.
	timeout = 60 * time.Second
	poll    = 50 * time.Millisecond
)

var (
	envOnce  sync.Once
	envErr   error
	testEnv  *envtest.Environment
	testCfg  *rest.Config
	k8s      client.Client
	scheme   = runtime.NewScheme()
	testLog  = logr.Discard()
	envStart time.Duration
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(vxflowv1alpha1.AddToScheme(scheme))
}

func TestMain(m *testing.M) {
	if os.Getenv("VXFLOW_TEST_LOG") != "" {
		testLog = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(2), textlogger.Output(os.Stderr)))
	}
	ctrl.SetLogger(testLog)
	code := m.Run()
	if testEnv != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "failed to stop envtest: %v\n", err)
		}
	}
	os.Exit(code)
}

// startEnv starts envtest once for the package.
func startEnv(t testing.TB) {
	t.Helper()
	envOnce.Do(func() {
		assets := os.Getenv("KUBEBUILDER_ASSETS")
		if assets == "" {
			assets, envErr = filepath.Abs(filepath.Join("..", "bin", "k8s"))
			if envErr != nil {
				return
			}
		}
		start := time.Now()
		testEnv = &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
			BinaryAssetsDirectory: assets,
		}
		testCfg, envErr = testEnv.Start()
		if envErr != nil {
			envErr = fmt.Errorf("failed to start envtest with binaries from %s (run make control-plane): %w", assets, envErr)
			return
		}
		// No client-side throttling: the scale tests create thousands of objects.
		testCfg.QPS, testCfg.Burst = -1, 0
		k8s, envErr = client.New(testCfg, client.Options{Scheme: scheme})
		if envErr != nil {
			return
		}
		envErr = k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lockNamespace}})
		envStart = time.Since(start)
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
}

// resetCluster starts envtest if needed and deletes every Node, HostSubnet, ClusterNetwork and allocation lock.
func resetCluster(t *testing.T) {
	t.Helper()
	startEnv(t)
	ctx := context.Background()
	for _, obj := range []client.Object{&corev1.Node{}, &vxflowv1alpha1.HostSubnet{}, &vxflowv1alpha1.ClusterNetwork{}} {
		if err := k8s.DeleteAllOf(ctx, obj); err != nil {
			t.Fatalf("failed to delete all %T: %v", obj, err)
		}
	}
	if err := k8s.DeleteAllOf(ctx, &coordinationv1.Lease{}, client.InNamespace(lockNamespace)); err != nil {
		t.Fatalf("failed to delete Leases: %v", err)
	}
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		nodes, subnets, cns := &corev1.NodeList{}, &vxflowv1alpha1.HostSubnetList{}, &vxflowv1alpha1.ClusterNetworkList{}
		g.Expect(k8s.List(ctx, nodes)).To(Succeed())
		g.Expect(k8s.List(ctx, subnets)).To(Succeed())
		g.Expect(k8s.List(ctx, cns)).To(Succeed())
		g.Expect(nodes.Items).To(BeEmpty())
		g.Expect(subnets.Items).To(BeEmpty())
		g.Expect(cns.Items).To(BeEmpty())
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

// controllerOpts tunes one test controller.
type controllerOpts struct {
	identity       string
	leaderElection bool
	workers        int
}

// startController runs a full controller (manager, pool, allocator, reconcilers) like main does and returns a
// function that stops it and waits; it is also stopped when the test ends.
func startController(t *testing.T, o controllerOpts) (stop func()) {
	t.Helper()
	if o.identity == "" {
		o.identity = t.Name()
	}
	mgr, err := ctrl.NewManager(testCfg, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        testLog.WithValues("controller", o.identity),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		Controller:                    config.Controller{SkipNameValidation: ptr.To(true)},
		LeaderElection:                o.leaderElection,
		LeaderElectionID:              "vxflow-controller",
		LeaderElectionNamespace:       lockNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 ptr.To(4 * time.Second),
		RenewDeadline:                 ptr.To(3 * time.Second),
		RetryPeriod:                   ptr.To(200 * time.Millisecond),
	})
	if err != nil {
		t.Fatalf("failed to create manager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := SetupWithManager(ctx, mgr, Options{LockNamespace: lockNamespace, Identity: o.identity, Workers: o.workers}); err != nil {
		cancel()
		t.Fatalf("failed to set up controllers: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager %s stopped with an error: %v", o.identity, err)
		}
	})
	t.Cleanup(stop)
	return stop
}

// createClusterNetwork creates ClusterNetwork default from cidr, hostPrefix pairs.
func createClusterNetwork(t *testing.T, pairs ...any) {
	t.Helper()
	spec := testSpec(pairs...)
	cn := &vxflowv1alpha1.ClusterNetwork{ObjectMeta: metav1.ObjectMeta{Name: vxflowv1alpha1.ClusterNetworkName}, Spec: spec}
	if err := k8s.Create(context.Background(), cn); err != nil {
		t.Fatalf("failed to create ClusterNetwork: %v", err)
	}
}

// setClusterNetworks replaces spec.clusterNetworks and returns the API server's answer.
func setClusterNetworks(t *testing.T, pairs ...any) error {
	t.Helper()
	return retryOnConflict(func() error {
		cn := &vxflowv1alpha1.ClusterNetwork{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: vxflowv1alpha1.ClusterNetworkName}, cn); err != nil {
			return err
		}
		cn.Spec.ClusterNetworks = testSpec(pairs...).ClusterNetworks
		return k8s.Update(context.Background(), cn)
	})
}

func retryOnConflict(fn func() error) error {
	for {
		if err := fn(); !apierrors.IsConflict(err) {
			return err
		}
	}
}

// createNode creates a Node with InternalIP ip (none when ip is empty) and returns it; like a kubelet
// registering, it sends the status with the create.
func createNode(t testing.TB, name, ip string) *corev1.Node {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ip != "" {
		node.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalIP, Address: ip},
		}
	}
	if err := k8s.Create(context.Background(), node); err != nil {
		t.Fatalf("failed to create Node %s: %v", name, err)
	}
	if ip != "" && len(node.Status.Addresses) != 2 {
		t.Fatalf("the API server dropped the addresses of Node %s on create", name)
	}
	return node
}

// setNodeIP writes the Node's status addresses, as a kubelet does.
func setNodeIP(t testing.TB, node *corev1.Node, ip string) {
	t.Helper()
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: node.Name},
		{Type: corev1.NodeInternalIP, Address: ip},
	}
	if err := k8s.Status().Update(context.Background(), node); err != nil {
		t.Fatalf("failed to set the address of Node %s: %v", node.Name, err)
	}
}

// nodeAddr is a distinct underlay address for node i, outside every cluster network the tests use.
func nodeAddr(i int) string {
	return netip.AddrFrom4([4]byte{192, 168, byte(100 + i/250), byte(1 + i%250)}).String()
}

func getHostSubnet(g Gomega, name string) *vxflowv1alpha1.HostSubnet {
	hs := &vxflowv1alpha1.HostSubnet{}
	g.ExpectWithOffset(1, k8s.Get(context.Background(), client.ObjectKey{Name: name}, hs)).To(Succeed())
	return hs
}

// waitAllocated waits until the HostSubnet called name exists with Allocated=True and returns it.
func waitAllocated(t *testing.T, name string) *vxflowv1alpha1.HostSubnet {
	t.Helper()
	var hs *vxflowv1alpha1.HostSubnet
	NewWithT(t).Eventually(func(g Gomega) {
		hs = getHostSubnet(g, name)
		g.Expect(allocatedCondition(hs)).To(HaveField("Status", metav1.ConditionTrue))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed(), "HostSubnet %s never became Allocated", name)
	return hs
}

func allocatedCondition(hs *vxflowv1alpha1.HostSubnet) metav1.Condition {
	for _, c := range hs.Status.Conditions {
		if c.Type == vxflowv1alpha1.ConditionAllocated {
			return c
		}
	}
	return metav1.Condition{}
}

func getClusterNetwork(g Gomega) *vxflowv1alpha1.ClusterNetwork {
	cn := &vxflowv1alpha1.ClusterNetwork{}
	g.ExpectWithOffset(1, k8s.Get(context.Background(), client.ObjectKey{Name: vxflowv1alpha1.ClusterNetworkName}, cn)).To(Succeed())
	return cn
}

func condition(conds []metav1.Condition, typ string) metav1.Condition {
	for _, c := range conds {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

// eventsFor lists the events.k8s.io Events about the object with uid.
func eventsFor(g Gomega, uid string) []eventsv1.Event {
	list := &eventsv1.EventList{}
	g.ExpectWithOffset(1, k8s.List(context.Background(), list)).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if string(e.Regarding.UID) == uid {
			out = append(out, e)
		}
	}
	return out
}

// expectNoOverlap fails when two HostSubnets share an address or one lies outside the ranges.
func expectNoOverlap(g Gomega, items []vxflowv1alpha1.HostSubnet, ranges ...string) {
	var prefixes []netip.Prefix
	for _, hs := range items {
		p, err := netip.ParsePrefix(hs.Spec.Subnet)
		g.ExpectWithOffset(1, err).NotTo(HaveOccurred())
		inside := false
		for _, r := range ranges {
			inside = inside || netip.MustParsePrefix(r).Contains(p.Addr()) && netip.MustParsePrefix(r).Bits() <= p.Bits()
		}
		g.ExpectWithOffset(1, inside).To(BeTrue(), "HostSubnet %s has %s, outside %v", hs.Name, p, ranges)
		for i, q := range prefixes {
			g.ExpectWithOffset(1, p.Overlaps(q)).To(BeFalse(), "HostSubnet %s (%s) overlaps %s (%s)", hs.Name, p, items[i].Name, q)
		}
		prefixes = append(prefixes, p)
	}
}

// createNodes creates n Nodes named prefix-i with distinct addresses, from several goroutines.
func createNodes(t testing.TB, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i)}}
				node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeAddr(i)}}
				if err := k8s.Create(context.Background(), node); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("failed to create a Node: %v", err)
	}
}
