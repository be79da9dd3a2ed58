package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vxflow/vxflow/internal/agent"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// syncReport is one line the driver prints per sync, read by the orchestrator.
type syncReport struct {
	// Full is the applier's full rewrite of the table; FullBuild the model's full rebuild.
	Full      bool `json:"full"`
	FullBuild bool `json:"fullBuild"`
	Services  int  `json:"services"`
	Changed   int  `json:"changed"`
	// BuildMs, RenderMs and SyncMs are the Go phases; KernelMs is the part of SyncMs inside the kernel.
	BuildMs  float64 `json:"buildMs"`
	RenderMs float64 `json:"renderMs"`
	SyncMs   float64 `json:"syncMs"`
	KernelMs float64 `json:"kernelMs"`
	// EventToKernelMs is from the first informer event that dirtied the sync to the kernel's commit.
	EventToKernelMs float64 `json:"eventToKernelMs"`
	Messages        int     `json:"messages"`
	// ListMs is the time from the driver's start to its informers having synced (the first sync's input).
	ListMs float64 `json:"listMs,omitempty"`
	// HeapMiB and SysMiB are the Go heap in use and the memory obtained from the OS after the sync.
	HeapMiB    float64 `json:"heapMiB"`
	SysMiB     float64 `json:"sysMiB"`
	Error      string  `json:"error,omitempty"`
	UnixMillis int64   `json:"unixMillis"`
}

// runDriver is the vxflow side of the benchmark: the agent's own Service proxy (agent.ServiceProxy fed by
// agent.StartServiceWatches, as cmd/vxflow-agent runs it) in the node's namespace. heapProfile, when set,
// receives a heap profile of the live objects after the first sync.
func runDriver(kubeconfig, nodeName string, nodeIP netip.Addr, opts nftables.Options, heapProfile string) error {
	start := time.Now()
	var listed time.Duration
	if heapProfile != "" {
		// Finer than the default 512 KiB, so that the profile shows the smaller owners too.
		runtime.MemProfileRate = 64 << 10
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("failed to load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	// The same pieces and settings as vxflow-agent: its metrics, its nftables adapter, its default
	// --min-sync-interval and --sync-period.
	reg := prometheus.NewRegistry()
	syncer, err := nft.NewSyncer(nft.Options{Metrics: nft.NewMetrics(reg)})
	if err != nil {
		return err
	}
	defer syncer.Close()
	metrics := agent.NewMetrics(reg)
	proxy := agent.NewServiceProxy(agent.ServiceProxyConfig{Render: opts, MinSyncInterval: 20 * time.Millisecond, SyncPeriod: 3 * time.Second},
		&agent.NFTables{Interface: syncer, Log: logr.Discard(), Metrics: metrics}, metrics, logr.Discard())
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	profiled := false
	proxy.OnSync = func(s agent.SyncStats) {
		if !s.Built && s.Messages == 0 && s.Err == nil {
			return // the periodic drift check found nothing to do
		}
		if heapProfile != "" && !profiled && s.Built && s.Err == nil {
			// The steady state after the first full sync: what the informers, model, renderer and
			// applier keep.
			profiled = true
			if err := writeHeapProfile(heapProfile); err != nil {
				fmt.Fprintln(os.Stderr, "failed to write the heap profile:", err)
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r := syncReport{Full: s.FullApply, FullBuild: s.Full, Services: s.Services, Changed: s.Changed,
			BuildMs: msOf(s.Build), RenderMs: msOf(s.Render), SyncMs: msOf(s.Apply), KernelMs: msOf(s.Kernel),
			EventToKernelMs: msOf(s.EventToKernel), Messages: s.Messages, ListMs: msOf(listed),
			HeapMiB: float64(ms.HeapInuse) / (1 << 20), SysMiB: float64(ms.Sys) / (1 << 20), UnixMillis: time.Now().UnixMilli()}
		if s.Err != nil {
			r.Error = s.Err.Error()
		}
		mu.Lock()
		_ = enc.Encode(r)
		mu.Unlock()
	}
	proxy.SetNode(model.ServiceNode{
		Name:           nodeName,
		IPs:            []netip.Addr{nodeIP},
		ClusterCIDRs:   []netip.Prefix{netip.MustParsePrefix(clusterCIDR)},
		ServiceNetwork: netip.MustParsePrefix(serviceCIDR),
		Datapath:       model.DatapathNetdev,
	})
	if err := agent.StartServiceWatches(ctx, cfg, proxy); err != nil {
		return err
	}
	mu.Lock()
	listed = time.Since(start)
	mu.Unlock()
	proxy.Run(ctx)
	return nil
}

// writeHeapProfile writes the live heap (after a GC) for `go tool pprof`.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
