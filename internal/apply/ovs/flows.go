package ovs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// flowDiff is what it takes to turn the switch's flows into the desired ones.
type flowDiff struct {
	adds    []openflow.Flow // keys the switch lacks
	mods    []openflow.Flow // keys the switch has with another cookie or other actions
	deletes []openflow.Flow // keys that are not desired, as the switch has them
}

// diffFlows compares flows by Key (table, priority, match); a flow whose cookie or actions differ is a
// modification. Adds and modifications keep the order of desired, deletes the order of actual. A key that
// appears twice in desired is an error (it would make the result depend on order).
func diffFlows(desired, actual []openflow.Flow) (flowDiff, error) {
	have := make(map[string]openflow.Flow, len(actual))
	for _, f := range actual {
		have[f.Key()] = f
	}
	want := make(map[string]struct{}, len(desired))
	var d flowDiff
	for _, f := range desired {
		k := f.Key()
		if _, dup := want[k]; dup {
			return flowDiff{}, fmt.Errorf("desired flows have key %q twice", k)
		}
		want[k] = struct{}{}
		cur, ok := have[k]
		switch {
		case !ok:
			d.adds = append(d.adds, f)
		case cur.Cookie != f.Cookie || cur.Actions != f.Actions:
			d.mods = append(d.mods, f)
		}
	}
	for _, f := range actual {
		if _, ok := want[f.Key()]; !ok {
			d.deletes = append(d.deletes, f)
		}
	}
	return d, nil
}

// FlowApplier keeps one bridge's flows equal to a desired set, by diff, in atomic bundles.
type FlowApplier struct {
	bridge string
	of     *ofctl

	mu sync.Mutex // serialises Syncs and protects lastCount and last
	// lastCount is the number of flows the last successful Sync left on the bridge; -1 before the first.
	lastCount int
	// last is what the last successful Sync or SyncChanges left on the bridge, for SyncChanges to diff
	// against; nil before the first Sync and after a failure.
	last []openflow.Flow
}

// NewFlowApplier returns the applier of bridge's flows. runDir is ovs-vswitchd's run directory holding
// <bridge>.mgmt (empty: ovs-ofctl's default, or $OVS_RUNDIR); timeout bounds each ovs-ofctl run.
func NewFlowApplier(bridge, runDir string, timeout time.Duration) *FlowApplier {
	return newFlowApplier(bridge, newOfctl(osExecer{}, runDir, bridge, timeout))
}

func newFlowApplier(bridge string, of *ofctl) *FlowApplier {
	return &FlowApplier{bridge: bridge, of: of, lastCount: -1}
}

// Sync is part of Interface.
func (a *FlowApplier) Sync(ctx context.Context, desired []openflow.Flow) (SyncResult, error) {
	return a.sync(ctx, desired, false)
}

// SyncChanges is part of Interface.
func (a *FlowApplier) SyncChanges(ctx context.Context, desired []openflow.Flow) (SyncResult, error) {
	return a.sync(ctx, desired, true)
}

// sync diffs desired against a dump of the bridge, or against what the last sync left when fromMemory is set
// and there is such a memory, and applies the difference in one bundle.
func (a *FlowApplier) sync(ctx context.Context, desired []openflow.Flow, fromMemory bool) (SyncResult, error) {
	start := time.Now()
	logger := klog.FromContext(ctx).WithValues("bridge", a.bridge)
	for _, f := range desired {
		if err := validateFlow(f); err != nil {
			return SyncResult{}, fmt.Errorf("failed to validate the desired flows: %w", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()

	actual, dumped := a.last, false
	if !fromMemory || actual == nil {
		var err error
		if actual, err = a.of.dumpFlows(ctx); err != nil {
			return SyncResult{}, fmt.Errorf("failed to dump the flows of %s: %w", a.bridge, err)
		}
		dumped = true
	}
	d, err := diffFlows(desired, actual)
	if err != nil {
		return SyncResult{}, fmt.Errorf("failed to diff the flows of %s: %w", a.bridge, err)
	}
	res := SyncResult{
		Added:    len(d.adds),
		Modified: len(d.mods),
		Deleted:  len(d.deletes),
		Total:    len(desired),
		Reset:    dumped && len(actual) == 0 && a.lastCount > 0,
	}
	if res.Reset {
		logger.Info("Found no flows on the bridge, reprogramming it", "reason", "ovs-vswitchd restarted or the bridge was flushed",
			"flowsBefore", a.lastCount)
	}
	if res.FlowMods() > 0 {
		upserts := append(slices.Clip(d.adds), d.mods...)
		if v := logger.V(9); v.Enabled() {
			for _, f := range d.deletes {
				v.Info("Deleting flow", "flow", f.String())
			}
			for _, f := range upserts {
				v.Info("Adding flow", "flow", f.String())
			}
		}
		if err := a.of.bundle(ctx, d.deletes, upserts); err != nil {
			// Nothing was applied; the memory is dropped anyway, so that the next sync of any kind dumps.
			a.last = nil
			return SyncResult{}, fmt.Errorf("failed to apply a bundle of %d flow-mods to %s (nothing applied): %w",
				res.FlowMods(), a.bridge, err)
		}
	}
	a.lastCount = len(desired)
	a.last = slices.Clone(desired)
	res.Duration = time.Since(start)
	logger.V(2).Info("Synced flows", "added", res.Added, "modified", res.Modified, "deleted", res.Deleted,
		"total", res.Total, "duration", res.Duration)
	return res, nil
}

// Dump is part of Interface.
func (a *FlowApplier) Dump(ctx context.Context) ([]openflow.Flow, error) {
	flows, err := a.of.dumpFlows(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to dump the flows of %s: %w", a.bridge, err)
	}
	return flows, nil
}

// Drifted is part of Interface.
func (a *FlowApplier) Drifted(ctx context.Context) (bool, error) {
	a.mu.Lock()
	last := a.lastCount
	a.mu.Unlock()
	if last < 0 {
		return true, nil
	}
	n, err := a.of.flowCount(ctx)
	if err != nil {
		return false, fmt.Errorf("failed to count the flows of %s: %w", a.bridge, err)
	}
	return n != last, nil
}
