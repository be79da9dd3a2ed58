package agent

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilptr "k8s.io/utils/ptr"

	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// benchSource is a ServiceSource over maps, standing in for the informer stores at scale.
type benchSource struct {
	svcs   map[string]*corev1.Service
	slices map[string][]*discoveryv1.EndpointSlice
}

func (s *benchSource) ServiceKeys() []string              { return slices.Collect(maps.Keys(s.svcs)) }
func (s *benchSource) Service(key string) *corev1.Service { return s.svcs[key] }
func (s *benchSource) EndpointSlices(key string) []*discoveryv1.EndpointSlice {
	return s.slices[key]
}

// benchSlice is the benchmark harness's EndpointSlice for Service i (test/bench/kubeproxy), version v.
func benchSlice(ns, name string, i, eps, v int) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1", ResourceVersion: fmt.Sprint(v), UID: "u",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: utilptr.To("http"), Protocol: utilptr.To(corev1.ProtocolTCP), Port: utilptr.To[int32](8080)}},
	}
	for j := range eps {
		k := i*eps + j + v
		ip := netip.AddrFrom4([4]byte{10, byte(128 + k>>16), byte(k >> 8), byte(k)})
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: utilptr.To(true)}, NodeName: utilptr.To(fmt.Sprintf("node-%d", k%50))})
	}
	return es
}

func newBenchSource(services, eps int) *benchSource {
	src := &benchSource{svcs: map[string]*corev1.Service{}, slices: map[string][]*discoveryv1.EndpointSlice{}}
	for i := range services {
		ns, name := fmt.Sprintf("bench-%d", i/1000), fmt.Sprintf("svc-%d", i)
		ip := fmt.Sprintf("172.30.%d.%d", i>>8, i&0xff)
		src.svcs[ns+"/"+name] = &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1", UID: "u"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
		}
		src.slices[ns+"/"+name] = []*discoveryv1.EndpointSlice{benchSlice(ns, name, i, eps, 0)}
	}
	return src
}

// BenchmarkServiceProxyOneEndpointChange is the proxy's Go cost of one endpoint change at 10,000 Services
// x 10 endpoints (build + render + the applier's diff against a Fake, no kernel), as in
// test/bench/kubeproxy.
func BenchmarkServiceProxyOneEndpointChange(b *testing.B) {
	for _, layout := range []struct {
		name string
		opts nftables.Options
	}{{"chains", nftables.Options{}}, {"EndpointMap", nftables.Options{EndpointMap: true}}} {
		b.Run(layout.name, func(b *testing.B) {
			src := newBenchSource(10000, 10)
			m := NewMetrics(prometheus.NewRegistry())
			p := NewServiceProxy(ServiceProxyConfig{Render: layout.opts}, &NFTables{Interface: nft.NewFake(), Log: logr.Discard()}, m, logr.Discard())
			var last SyncStats
			p.OnSync = func(s SyncStats) { last = s }
			p.SetNode(testServiceNodeFacts("192.168.100.11"))
			p.SetSource(src, nil)
			ctx := context.Background()
			if err := p.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			if path := os.Getenv("VXFLOW_HEAP_PROFILE"); path != "" {
				// Where the steady state's memory goes: go tool pprof -sample_index=inuse_space.
				f, err := os.Create(path + "." + layout.name)
				if err != nil {
					b.Fatal(err)
				}
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			full := last
			var build, render int64
			b.ResetTimer()
			for i := range b.N {
				key := "bench-7/svc-7777"
				src.slices[key] = []*discoveryv1.EndpointSlice{benchSlice("bench-7", "svc-7777", 7777, 10, i+1)}
				p.Changed(key)
				if err := p.Sync(ctx); err != nil {
					b.Fatal(err)
				}
				if last.Changed != 1 {
					b.Fatalf("sync changed %d Services, want 1", last.Changed)
				}
				build += last.Build.Nanoseconds()
				render += last.Render.Nanoseconds()
			}
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heapMiB-after-full")
			b.ReportMetric(float64(full.Build.Microseconds())/1000, "full-build-ms")
			b.ReportMetric(float64(full.Render.Microseconds())/1000, "full-render-ms")
			b.ReportMetric(float64(build)/float64(b.N)/1e6, "build-ms/op")
			b.ReportMetric(float64(render)/float64(b.N)/1e6, "render-ms/op")
		})
	}
}
