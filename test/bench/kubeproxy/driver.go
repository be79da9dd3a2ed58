package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// syncReport is one line the driver prints per sync, read by the orchestrator.
type syncReport struct {
	Full       bool    `json:"full"`
	Services   int     `json:"services"`
	BuildMs    float64 `json:"buildMs"`
	RenderMs   float64 `json:"renderMs"`
	SyncMs     float64 `json:"syncMs"`
	KernelMs   float64 `json:"kernelMs"`
	Messages   int     `json:"messages"`
	Error      string  `json:"error,omitempty"`
	UnixMillis int64   `json:"unixMillis"`
}

// runDriver is the vxflow side of the benchmark: the informer-to-kernel path the agent will have (watch
// Services and EndpointSlices, coalesce, build the model, render, sync), run in the node's namespace.
func runDriver(kubeconfig, nodeName string, nodeIP netip.Addr, opts nftables.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("failed to load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	// Protobuf, as kube-proxy uses by default (clientConnection.contentType).
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	syncer, err := nft.NewSyncer(nft.Options{})
	if err != nil {
		return err
	}
	defer syncer.Close()

	factory := informers.NewSharedInformerFactory(client, 0)
	svcs := factory.Core().V1().Services()
	slices := factory.Discovery().V1().EndpointSlices()
	dirty := make(chan struct{}, 1)
	trigger := func(any) {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: trigger, UpdateFunc: func(_, n any) { trigger(n) }, DeleteFunc: trigger}
	if _, err := svcs.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	if _, err := slices.Informer().AddEventHandler(handler); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	node := model.ServiceNode{
		Name:           nodeName,
		IPs:            []netip.Addr{nodeIP},
		ClusterCIDRs:   []netip.Prefix{netip.MustParsePrefix(clusterCIDR)},
		ServiceNetwork: netip.MustParsePrefix(serviceCIDR),
		Datapath:       model.DatapathNetdev,
	}
	enc := json.NewEncoder(os.Stdout)
	// The builder and renderer remember the previous sync, so that one changed object costs a pass over
	// the lists plus that Service, as in the agent.
	var builder model.ServiceBuilder
	renderer := nftables.NewRenderer(opts)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-dirty:
		}
		t0 := time.Now()
		svcList, _ := svcs.Lister().List(labels.Everything())
		esList, _ := slices.Lister().List(labels.Everything())
		set, err := builder.Build(model.ServiceInput{Node: node, Services: svcList, EndpointSlices: esList})
		if err != nil {
			return err
		}
		t1 := time.Now()
		rs := renderer.Render(set)
		t2 := time.Now()
		res, err := syncer.Sync(ctx, rs)
		t3 := time.Now()
		r := syncReport{Full: res.Full, Services: len(set.Services), BuildMs: ms(t1.Sub(t0)), RenderMs: ms(t2.Sub(t1)),
			SyncMs: ms(t3.Sub(t2)), KernelMs: ms(res.KernelDuration), Messages: res.Messages, UnixMillis: t3.UnixMilli()}
		if err != nil {
			r.Error = err.Error()
		}
		_ = enc.Encode(r)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
