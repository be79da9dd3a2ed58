package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	utilptr "k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/testutil/envtestutil"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// noServices is a ServiceSource without Services, for agent tests that do not watch any.
type noServices struct{}

func (noServices) ServiceKeys() []string                              { return nil }
func (noServices) Service(string) *corev1.Service                     { return nil }
func (noServices) EndpointSlices(string) []*discoveryv1.EndpointSlice { return nil }

// syncLog collects a ServiceProxy's per-sync figures.
type syncLog struct {
	mu    sync.Mutex
	stats []SyncStats
}

func (l *syncLog) add(s SyncStats) {
	if !s.Built {
		return
	}
	l.mu.Lock()
	l.stats = append(l.stats, s)
	l.mu.Unlock()
}

// since returns the built syncs after the first n.
func (l *syncLog) since(n int) []SyncStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]SyncStats(nil), l.stats[min(n, len(l.stats)):]...)
}

func (l *syncLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.stats)
}

func testServiceNodeFacts(ip string) model.ServiceNode {
	return model.ServiceNode{
		Name: "node1", IPs: []netip.Addr{netip.MustParseAddr(ip)},
		ClusterCIDRs:   []netip.Prefix{netip.MustParsePrefix("10.128.0.0/14")},
		ServiceNetwork: netip.MustParsePrefix("10.0.0.0/24"), Datapath: model.DatapathNetdev,
	}
}

// TestServiceProxyOnARealNamespace runs the Service proxy against a real API server (envtest) and a real
// nf_tables in a network namespace: a created Service is programmed, an endpoint change rebuilds that
// Service alone, a deleted Service disappears, new node facts rebuild everything, and the table deleted
// by hand comes back.
func TestServiceProxyOnARealNamespace(t *testing.T) {
	ovsnode.RequireRoot(t)
	_, cfg := envtestutil.Start(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := ovsnode.NewNetNS(t, "svcproxy")
	syncer, err := nft.NewSyncer(nft.Options{NetNSPath: ovsnode.NetNSPath(ns)})
	if err != nil {
		t.Fatalf("failed to open nf_tables in %s: %v", ns, err)
	}
	t.Cleanup(func() { _ = syncer.Close() })
	m := NewMetrics(prometheus.NewRegistry())
	p := NewServiceProxy(ServiceProxyConfig{MinSyncInterval: time.Millisecond, SyncPeriod: 200 * time.Millisecond},
		&NFTables{Interface: syncer, Log: logr.Discard(), Metrics: m}, m, testr.New(t))
	var log syncLog
	p.OnSync = log.add
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := StartServiceWatches(ctx, cfg, p); err != nil {
		t.Fatal(err)
	}
	p.SetNode(testServiceNodeFacts("192.168.100.11"))
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	list := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "vxflow").CombinedOutput()
		if err != nil {
			return ""
		}
		return string(out)
	}
	waitTable := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok(list()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: table ip vxflow never matched:\n%s", what, list())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitTable("first sync", func(s string) bool { return strings.Contains(s, "masquerade") })

	createService := func(name string, endpoint string) string {
		t.Helper()
		svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80,
				TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name},
				Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano)}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: utilptr.To("http"), Protocol: utilptr.To(corev1.ProtocolTCP), Port: utilptr.To[int32](8080)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{endpoint}, NodeName: utilptr.To("node2"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: name + "-pod"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return svc.Spec.ClusterIP
	}

	webIP := createService("web", "10.128.2.2")
	apiIP := createService("api", "10.128.2.3")
	waitTable("Services created", func(s string) bool {
		return strings.Contains(s, webIP) && strings.Contains(s, apiIP) &&
			strings.Contains(s, "10.128.2.2:8080") && strings.Contains(s, "10.128.2.3:8080")
	})
	if err := p.Healthy(); err != nil {
		t.Errorf("the proxy is not healthy after programming: %v", err)
	}
	if st := p.Status(); !st.Synced || st.Rules == 0 {
		t.Errorf("status = %+v, want synced with rules", st)
	}

	t.Run("an endpoint change rebuilds only its Service", func(t *testing.T) {
		before := log.len()
		es, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		es.Endpoints[0].Addresses = []string{"10.128.2.9"}
		if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitTable("endpoint moved", func(s string) bool {
			return strings.Contains(s, "10.128.2.9:8080") && !strings.Contains(s, "10.128.2.2:8080") && strings.Contains(s, "10.128.2.3:8080")
		})
		syncs := log.since(before)
		if len(syncs) == 0 {
			t.Fatal("no sync was recorded for the change")
		}
		for _, s := range syncs {
			if s.Full || s.Changed != 1 || s.Err != nil {
				t.Errorf("sync after one endpoint change = %+v, want one changed Service, not full", s)
			}
			if s.EventToKernel <= 0 {
				t.Errorf("sync after an event has no event-to-kernel time: %+v", s)
			}
		}
	})

	t.Run("a deleted Service disappears", func(t *testing.T) {
		if err := cs.CoreV1().Services("default").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitTable("Service deleted", func(s string) bool { return !strings.Contains(s, apiIP) && strings.Contains(s, webIP) })
	})

	t.Run("new node facts rebuild every Service", func(t *testing.T) {
		before := log.len()
		p.SetNode(testServiceNodeFacts("192.168.100.12"))
		deadline := time.Now().Add(10 * time.Second)
		for {
			syncs := log.since(before)
			if len(syncs) > 0 {
				if s := syncs[0]; !s.Full || s.Services != 2 || s.Err != nil { // web and the API server's kubernetes
					t.Errorf("sync after new node facts = %+v, want a full build of 2 Services", s)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("new node facts caused no sync")
			}
			time.Sleep(20 * time.Millisecond)
		}
		waitTable("node IP", func(s string) bool { return strings.Contains(s, "192.168.100.12") && strings.Contains(s, webIP) })
	})

	t.Run("the table deleted by hand is restored", func(t *testing.T) {
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "vxflow").CombinedOutput(); err != nil {
			t.Fatalf("failed to delete the table: %v: %s", err, out)
		}
		waitTable("restored", func(s string) bool { return strings.Contains(s, webIP) && strings.Contains(s, "10.128.2.9:8080") })
	})
}

// TestServiceProxyWaitsForNodeAndSource checks that the proxy programs nothing (an empty table would drop
// every Service on an agent restart) before it has both node facts and synced informers.
func TestServiceProxyWaitsForNodeAndSource(t *testing.T) {
	f := nft.NewFake()
	m := NewMetrics(prometheus.NewRegistry())
	p := NewServiceProxy(ServiceProxyConfig{}, &NFTables{Interface: f, Log: logr.Discard()}, m, logr.Discard())
	ctx := context.Background()
	p.Changed("default/web")
	if err := p.Sync(ctx); err != nil || f.Syncs != 0 {
		t.Fatalf("Sync without node facts: err %v, %d applier syncs; want nothing", err, f.Syncs)
	}
	p.SetNode(testServiceNodeFacts("192.168.100.11"))
	if err := p.Sync(ctx); err != nil || f.Syncs != 0 {
		t.Fatalf("Sync without a source: err %v, %d applier syncs; want nothing", err, f.Syncs)
	}
	p.SetSource(noServices{}, nil)
	if err := p.Sync(ctx); err != nil || f.Syncs != 1 {
		t.Fatalf("Sync with node facts and a source: err %v, %d applier syncs; want 1", err, f.Syncs)
	}
	if err := p.Healthy(); err != nil {
		t.Errorf("Healthy after a sync: %v", err)
	}
	f.Err = fmt.Errorf("netlink refused")
	p.Changed("default/web")
	if err := p.Sync(ctx); err == nil || p.Healthy() == nil {
		t.Errorf("a failed apply left the proxy healthy (err %v)", err)
	}
}

// TestStatusMergesTheServiceProxy checks the node's status as the two loops report it: the node loop's
// report says Service NAT is pending until the proxy's first sync rewrites it with the rule count, a
// failed Service sync turns Programmed false, and a good one turns it back.
func TestStatusMergesTheServiceProxy(t *testing.T) {
	ctx := context.Background()
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(testClusterNetwork(), makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23")).
		WithStatusSubresource(&v1alpha1.HostSubnet{}).Build()
	f := nft.NewFake()
	a, err := New(Config{NodeName: "node1", NodeIP: netip.MustParseAddr("192.168.100.11"), Datapath: model.DatapathNetdev},
		c, c, ovs.NewFake(), &fakeLinks{mtu: 1500}, &NFTables{Interface: f, Log: logr.Discard()}, NewMetrics(prometheus.NewRegistry()), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	condition := func() (*metav1.Condition, *v1alpha1.HostSubnetAgentStatus) {
		t.Helper()
		hs := &v1alpha1.HostSubnet{}
		if err := c.Get(ctx, client.ObjectKey{Name: "node1"}, hs); err != nil {
			t.Fatal(err)
		}
		return findCondition(hs.Status.Conditions, v1alpha1.ConditionProgrammed), hs.Status.Agent
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if cond, st := condition(); cond == nil || !strings.Contains(cond.Message, "Service NAT not programmed yet") || st.NFTRules != 0 {
		t.Errorf("before the first Service sync: %+v %+v, want Service NAT pending", cond, st)
	}
	a.Services().SetSource(noServices{}, nil)
	if err := a.Services().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cond, st := condition()
	if cond == nil || cond.Status != metav1.ConditionTrue || st.NFTRules == 0 || !strings.Contains(cond.Message, "nftables rules and elements") {
		t.Errorf("after the first Service sync: %+v %+v, want Programmed with the rule count", cond, st)
	}
	f.Err = errors.New("netlink said no")
	a.Services().Changed("default/web")
	if err := a.Services().Sync(ctx); err == nil {
		t.Fatal("the Service sync did not fail")
	}
	if cond, _ := condition(); cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != ReasonApplyFailed || !strings.Contains(cond.Message, "netlink said no") {
		t.Errorf("after a failed Service sync: %+v, want False/ApplyFailed with the error", cond)
	}
	if a.Healthy() == nil {
		t.Errorf("the agent is healthy although Service NAT failed")
	}
	if err := a.Services().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if cond, _ := condition(); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Errorf("after the retry: %+v, want Programmed again", cond)
	}
}

// TestTrimForServiceModelKeepsTheModel checks that the informers' transform drops only what the Service
// model never reads: a build from trimmed objects equals a build from the originals.
func TestTrimForServiceModelKeepsTheModel(t *testing.T) {
	trigger := "2026-11-30T08:00:00.5Z"
	newObjects := func() (*corev1.Service, *discoveryv1.EndpointSlice) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "u1", ResourceVersion: "7",
				Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"note": "x"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "172.30.0.10", ClusterIPs: []string{"172.30.0.10"},
				Selector: map[string]string{"app": "web"}, ExternalIPs: []string{"192.0.2.9"},
				LoadBalancerSourceRanges: []string{"192.0.2.0/24"}, SessionAffinity: corev1.ServiceAffinityClientIP,
				ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080,
					AppProtocol: utilptr.To("http"), TargetPort: intstr.FromInt32(8080)}}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}}},
		}
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", UID: "u2", ResourceVersion: "8",
				Labels:        map[string]string{discoveryv1.LabelServiceName: "web", "endpointslice.kubernetes.io/managed-by": "c"},
				Annotations:   map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger, "other": "y"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "controller"}}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: utilptr.To("http"), Protocol: utilptr.To(corev1.ProtocolTCP), Port: utilptr.To[int32](8080), AppProtocol: utilptr.To("http")}},
		}
		for i := range 5 {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.128.2.%d", i+1), "10.128.9.9"},
				Conditions: discoveryv1.EndpointConditions{Ready: utilptr.To(i != 2), Serving: utilptr.To(true), Terminating: utilptr.To(i == 2)},
				NodeName:   utilptr.To(fmt.Sprintf("node%d", i%2)), Zone: utilptr.To("a"), Hostname: utilptr.To("h"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "p"}, Hints: &discoveryv1.EndpointHints{},
			})
		}
		return svc, es
	}
	svc, es := newObjects()
	want, err := model.BuildServices(model.ServiceInput{Node: testServiceNodeFacts("192.168.100.11"),
		Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es}})
	if err != nil {
		t.Fatal(err)
	}
	tsvc, tes := newObjects()
	for _, obj := range []any{tsvc, tes} {
		if _, err := trimForServiceModel(obj); err != nil {
			t.Fatal(err)
		}
	}
	got, err := model.BuildServices(model.ServiceInput{Node: testServiceNodeFacts("192.168.100.11"),
		Services: []*corev1.Service{tsvc}, EndpointSlices: []*discoveryv1.EndpointSlice{tes}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Services, want.Services) || len(got.Skipped) != len(want.Skipped) {
		t.Errorf("the model of trimmed objects differs:\n got %+v\nwant %+v", got.Services, want.Services)
	}
	if at, ok := model.LastChangeTriggerTime(tes); !ok || at.Format(time.RFC3339Nano) != trigger {
		t.Errorf("the trigger time was lost: %v %v", at, ok)
	}
	if tsvc.ManagedFields != nil || tsvc.Spec.Selector != nil || tes.ManagedFields != nil || tes.Endpoints[0].TargetRef != nil ||
		len(tes.Annotations) != 1 || len(tes.Labels) != 1 || len(tes.Endpoints[0].Addresses) != 1 {
		t.Errorf("the transform kept fields the model does not read: %+v %+v", tsvc.ObjectMeta, tes)
	}
	if tes.Endpoints[0].NodeName != tes.Endpoints[2].NodeName || tes.Endpoints[0].Conditions.Serving != tes.Endpoints[1].Conditions.Serving {
		t.Errorf("repeated node names and conditions are not shared")
	}
	if key := sliceServiceKey(toolscache.DeletedFinalStateUnknown{Key: "ns/web-1", Obj: tes}); key != "ns/web" {
		t.Errorf("the Service of a deleted slice's tombstone is %q, want ns/web", key)
	}
}

// TestServiceProxyReportsEachTriggerTimeOnce checks the EndpointSlice trigger times handed to the applier
// (network_programming_duration_seconds): each once, also when its event arrives after a later sync.
func TestServiceProxyReportsEachTriggerTimeOnce(t *testing.T) {
	f := nft.NewFake()
	p := NewServiceProxy(ServiceProxyConfig{}, &NFTables{Interface: f, Log: logr.Discard()}, NewMetrics(prometheus.NewRegistry()), logr.Discard())
	base := time.Now().Add(-time.Minute)
	times := map[string][]time.Time{"ns/a": {base}, "ns/b": {base.Add(time.Second)}}
	p.SetNode(testServiceNodeFacts("192.168.100.11"))
	p.SetSource(noServices{}, func(key string) []time.Time { return times[key] })
	ctx := context.Background()
	sync := func(keys ...string) {
		t.Helper()
		p.Changed(keys...)
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sync("ns/a")
	sync("ns/a", "ns/b") // a's time was reported; b's is older than the last sync but new
	times["ns/a"] = []time.Time{base, base.Add(2 * time.Second)}
	sync("ns/a")
	want := []time.Time{base, base.Add(time.Second), base.Add(2 * time.Second)}
	if len(f.Triggers) != len(want) {
		t.Fatalf("the applier got trigger times %v, want %v", f.Triggers, want)
	}
	for i := range want {
		if !f.Triggers[i].Equal(want[i]) {
			t.Errorf("trigger %d = %v, want %v", i, f.Triggers[i], want[i])
		}
	}
}
