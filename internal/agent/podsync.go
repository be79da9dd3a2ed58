package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// podFlowState is what the pod path borrows from the last full sync: its model input, so that a CNI ADD
// re-renders the node with the new pod without reading the API, and the lock that keeps the two paths'
// flow applies in order.
type podFlowState struct {
	mu sync.Mutex // held by Sync and SyncPods for their whole pass
	// input is the last successful full sync's model input without the pods; nil before one succeeded or
	// after one failed, which sends SyncPods to a full sync.
	input *model.NodeInput
}

// SyncPods programs the flows of the pods that changed since the last sync, for CNI requests: it re-renders
// the node from the last full sync's input with the pod store's current pods and applies the difference
// against what the last sync left (ovs.Interface.SyncChanges: one bundle, no dump). Drift is left to the
// periodic full Sync, except that a repeated ADD (the runtime's way to repair what CHECK found) compares
// with the switch. Without a successful full sync to start from, it runs one.
func (a *Agent) SyncPods(ctx context.Context) error {
	if a.pods == nil || !a.pods.Pending() {
		return nil
	}
	start := time.Now()
	a.podFlows.mu.Lock()
	in := a.podFlows.input
	if in == nil {
		a.podFlows.mu.Unlock()
		return a.Sync(ctx)
	}
	defer a.podFlows.mu.Unlock()
	pods, gen, recheck := a.pods.SnapshotForSync()
	view, err := a.syncPodFlows(ctx, *in, pods, recheck)
	a.metrics.SyncDuration.WithLabelValues("pods").Observe(time.Since(start).Seconds())
	if err == nil {
		a.mu.Lock()
		a.lastView = view
		a.mu.Unlock()
		a.metrics.LocalPods.Set(float64(len(view.LocalPods)))
	} else {
		a.metrics.SyncErrors.WithLabelValues("pods").Inc()
		a.log.Error(err, "Failed to program the pods' flows", "reason", ReasonApplyFailed)
	}
	a.pods.Synced(gen, err)
	return err
}

// syncPodFlows renders in with pods and applies the flows that differ from the last sync's, or from a dump of
// the switch when recheck is set (a repeated ADD repairs the pod's flows).
func (a *Agent) syncPodFlows(ctx context.Context, in model.NodeInput, pods []model.LocalPod, recheck bool) (*model.NodeView, error) {
	in.Pods = pods
	view, err := model.BuildNodeView(in)
	if err != nil {
		return nil, fmt.Errorf("failed to build the node's model: %w", err)
	}
	flows, err := openflow.Render(view)
	if err != nil {
		return nil, fmt.Errorf("failed to render br0's flows: %w", err)
	}
	apply := a.ovs.SyncChanges
	if recheck {
		apply = a.ovs.Sync
	}
	res, err := apply(ctx, flows)
	if err != nil {
		return nil, fmt.Errorf("failed to program br0's flows: %w", err)
	}
	a.recordFlows(flows, res)
	return view, nil
}
