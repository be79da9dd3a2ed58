package nft

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// benchNetNS creates a namespace for one benchmark iteration and returns a Syncer for it and a cleanup.
func benchNetNS(b *testing.B, name string) (*Syncer, func()) {
	b.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("failed to create netns %s: %v: %s", name, err, out)
	}
	s, err := NewSyncer(Options{NetNSPath: ovsnode.NetNSPath(name)})
	if err != nil {
		b.Fatal(err)
	}
	return s, func() {
		_ = s.Close()
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// benchFull measures a first (full) sync of n Services × eps endpoints into an empty namespace: render
// excluded, netlink encoding and the kernel's commit included.
func benchFull(b *testing.B, n, eps int, opts nftables.Options) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	r := nftables.NewRenderer(opts).Render(rendertest.ScaleSet(n, eps))
	sets, chains, rules, elems := r.Counts()
	b.ReportMetric(float64(chains), "chains")
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(elems+sets), "sets+elements")
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		s, done := benchNetNS(b, "vxbench-"+itoa(os.Getpid())+"-"+itoa(i))
		b.StartTimer()
		res, err := s.Sync(context.Background(), r)
		b.StopTimer()
		if err != nil {
			done()
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Messages), "messages")
		b.ReportMetric(float64(res.KernelDuration.Milliseconds()), "kernel-ms/op")
		done()
		b.StartTimer()
	}
}

// benchOneEndpoint measures a partial sync that moves one endpoint of one Service (one endpoint chain
// replaced and the service chain rewritten; with EndpointMap, one map element replaced) in a table of n
// Services × eps endpoints.
func benchOneEndpoint(b *testing.B, n, eps int, opts nftables.Options) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	set := rendertest.ScaleSet(n, eps)
	s, done := benchNetNS(b, "vxbench-"+itoa(os.Getpid())+"-p")
	defer done()
	p := &set.Services[n/2].Ports[0]
	orig := p.Endpoints
	moved := slices.Clone(orig)
	moved[0].Addr = netip.MustParseAddr("10.131.255.254")
	// One Renderer for both states, as in the agent: every other Service's group is shared.
	rr := nftables.NewRenderer(opts)
	var states [2]*nftables.Ruleset
	p.Endpoints = moved
	states[0] = rr.RenderGrouped(set)
	p.Endpoints = orig
	states[1] = rr.RenderGrouped(set)
	// The first sync programs what the loop starts from, with the same groups.
	if _, err := s.Sync(context.Background(), states[1]); err != nil {
		b.Fatal(err)
	}
	var kernel time.Duration
	for i := 0; b.Loop(); i++ {
		res, err := s.Sync(context.Background(), states[i%2])
		if err != nil {
			b.Fatal(err)
		}
		if res.Full {
			b.Fatalf("sync %d was full: %+v", i, res)
		}
		b.ReportMetric(float64(res.Messages), "messages")
		kernel += res.KernelDuration
	}
	b.ReportMetric(float64(kernel.Microseconds())/float64(b.N)/1000, "kernel-ms/op")
}

func itoa(i int) string { return strconv.Itoa(i) }

var (
	chainsOpts = nftables.Options{}
	inlineOpts = nftables.Options{InlineEndpoints: true}
	mapOpts    = nftables.Options{EndpointMap: true}
)

func BenchmarkSyncFull10kx10(b *testing.B)              { benchFull(b, 10000, 10, chainsOpts) }
func BenchmarkSyncFull1kx100(b *testing.B)              { benchFull(b, 1000, 100, chainsOpts) }
func BenchmarkSyncFullInline10kx10(b *testing.B)        { benchFull(b, 10000, 10, inlineOpts) }
func BenchmarkSyncFullInline1kx100(b *testing.B)        { benchFull(b, 1000, 100, inlineOpts) }
func BenchmarkSyncFullEndpointMap10kx10(b *testing.B)   { benchFull(b, 10000, 10, mapOpts) }
func BenchmarkSyncFullEndpointMap1kx100(b *testing.B)   { benchFull(b, 1000, 100, mapOpts) }
func BenchmarkSyncOneEndpoint10kx10(b *testing.B)       { benchOneEndpoint(b, 10000, 10, chainsOpts) }
func BenchmarkSyncOneEndpoint1kx100(b *testing.B)       { benchOneEndpoint(b, 1000, 100, chainsOpts) }
func BenchmarkSyncOneEndpointInline10kx10(b *testing.B) { benchOneEndpoint(b, 10000, 10, inlineOpts) }
func BenchmarkSyncOneEndpointInline1kx100(b *testing.B) { benchOneEndpoint(b, 1000, 100, inlineOpts) }
func BenchmarkSyncOneEndpointMap10kx10(b *testing.B)    { benchOneEndpoint(b, 10000, 10, mapOpts) }
func BenchmarkSyncOneEndpointMap1kx100(b *testing.B)    { benchOneEndpoint(b, 1000, 100, mapOpts) }

// benchChange measures what the agent does for one change at scale: the change applied to a
// model.ServiceSet, Renderer.RenderGroupedChanged with the changed key, then Syncer.Sync into a real
// namespace, per op. change flips the set between two states and returns the set to render and the key. It reports the Go time of the render and of
// the sync (kernel excluded), the kernel's time, and the heap the Renderer and Syncer retain between syncs.
func benchChange(b *testing.B, n, eps int, opts nftables.Options, change func(set *model.ServiceSet, i int) (*model.ServiceSet, []string)) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	set := rendertest.ScaleSet(n, eps)
	before := heapInUse()
	s, done := benchNetNS(b, "vxbench-"+itoa(os.Getpid())+"-c")
	defer done()
	rr := nftables.NewRenderer(opts)
	if _, err := s.Sync(context.Background(), rr.RenderGrouped(set)); err != nil {
		b.Fatal(err)
	}
	retained := float64(heapInUse()-before) / (1 << 20)
	var render, sync, kernel time.Duration
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		rs := rr.RenderGroupedChanged(change(set, i))
		rendered := time.Now()
		res, err := s.Sync(context.Background(), rs)
		if err != nil {
			b.Fatal(err)
		}
		if res.Full {
			b.Fatalf("sync %d was full: %+v", i, res)
		}
		render += rendered.Sub(start)
		sync += time.Since(rendered) - res.KernelDuration
		kernel += res.KernelDuration
	}
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) / 1000 }
	b.ReportMetric(perOp(render), "render-ms/op")
	b.ReportMetric(perOp(sync), "sync-go-ms/op")
	b.ReportMetric(perOp(kernel), "kernel-ms/op")
	b.ReportMetric(retained, "retained-MB")
	runtime.KeepAlive(set)
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// oneEndpoint replaces the first endpoint of the middle Service on even ops and restores it on odd ones.
func oneEndpoint(set *model.ServiceSet, i int) (*model.ServiceSet, []string) {
	s := &set.Services[len(set.Services)/2]
	p := &s.Ports[0]
	if i%2 == 0 {
		p.Endpoints[0].Addr = netip.MustParseAddr("10.131.255.254")
	} else {
		p.Endpoints[0].Addr = netip.MustParseAddr("10.128.0.1")
	}
	return set, []string{s.Key()}
}

// addDelete renders the set without its middle Service on even ops and with it on odd ones.
func addDelete() func(set *model.ServiceSet, i int) (*model.ServiceSet, []string) {
	var without *model.ServiceSet
	return func(set *model.ServiceSet, i int) (*model.ServiceSet, []string) {
		key := set.Services[len(set.Services)/2].Key()
		if without == nil {
			c := *set
			mid := len(set.Services) / 2
			c.Services = append(append([]model.Service(nil), set.Services[:mid]...), set.Services[mid+1:]...)
			without = &c
		}
		if i%2 == 0 {
			return without, []string{key}
		}
		return set, []string{key}
	}
}

// BenchmarkChangeRenderAndSync10kx10 is one endpoint change end to end (render and sync, default layout).
func BenchmarkChangeRenderAndSync10kx10(b *testing.B) {
	benchChange(b, 10000, 10, chainsOpts, oneEndpoint)
}

// BenchmarkChangeRenderAndSyncEndpointMap10kx10 is the same with Options.EndpointMap.
func BenchmarkChangeRenderAndSyncEndpointMap10kx10(b *testing.B) {
	benchChange(b, 10000, 10, mapOpts, oneEndpoint)
}

// BenchmarkAddDeleteRenderAndSync10kx10 deletes and re-adds one Service end to end (default layout).
func BenchmarkAddDeleteRenderAndSync10kx10(b *testing.B) {
	benchChange(b, 10000, 10, chainsOpts, addDelete())
}

// BenchmarkAddDeleteRenderAndSyncEndpointMap10kx10 is the same with Options.EndpointMap.
func BenchmarkAddDeleteRenderAndSyncEndpointMap10kx10(b *testing.B) {
	benchChange(b, 10000, 10, mapOpts, addDelete())
}
