package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// ServiceProxyConfig configures a ServiceProxy.
type ServiceProxyConfig struct {
	// Render is the nftables layout (endpoint chains, InlineEndpoints or EndpointMap).
	Render nftables.Options
	// MinSyncInterval is the shortest time between the starts of two syncs; changes inside it are applied
	// together. Zero means 10 ms.
	MinSyncInterval time.Duration
	// SyncPeriod is the longest time between two syncs: how soon the table deleted or edited by hand is
	// restored. Zero means 3 s.
	SyncPeriod time.Duration
}

// SyncStats is what one Service sync did and how long each phase took, for the benchmark and logs.
type SyncStats struct {
	// Built is true when the sync built and rendered (an event or new node facts asked for it); false for
	// the periodic re-apply of the last ruleset.
	Built bool
	// Full is true when the model was rebuilt from every Service (first sync, new node facts).
	Full bool
	// Services is the number of proxied Services; Changed the number whose model changed.
	Services, Changed int
	// Build, Render and Apply are the phases' durations; Kernel is the part of Apply inside the kernel.
	Build, Render, Apply, Kernel time.Duration
	// EventToKernel is the time from the first event that dirtied this sync to the kernel's commit; zero
	// for a sync that no event asked for (the drift check).
	EventToKernel time.Duration
	// Messages is the number of netlink messages sent (0 when nothing changed or the applier does not say).
	Messages int
	// FullApply is true when the applier rewrote the whole table.
	FullApply bool
	// Err is the sync's error, nil on success.
	Err error
}

// ServiceStatus is what the Service proxy last programmed, for the node's status report.
type ServiceStatus struct {
	// Synced is true once a sync has succeeded.
	Synced bool
	// Rules is the number of rules and elements in table ip vxflow after the last successful sync.
	Rules int
	// Skipped are the invalid Service objects and fields left out.
	Skipped []*model.FieldError
	// Err is the last sync's error, nil when it succeeded.
	Err error
}

// sameOutcome reports whether two statuses agree on all but the rule count.
func (s ServiceStatus) sameOutcome(o ServiceStatus) bool {
	return s.Synced == o.Synced && errString(s.Err) == errString(o.Err) &&
		slices.EqualFunc(s.Skipped, o.Skipped, func(a, b *model.FieldError) bool { return a.Error() == b.Error() })
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ServiceProxy programs Service NAT (table ip vxflow) from Service and EndpointSlice events, apart from the
// node's OVS sync: an event marks its Service dirty, and a sync rebuilds and re-renders only the dirty
// Services (everything when the node facts change) and applies the difference. Its own Runner coalesces
// bursts and re-applies the last ruleset every SyncPeriod, which restores a table changed by hand.
type ServiceProxy struct {
	cfg     ServiceProxyConfig
	nft     RulesetApplier
	metrics *Metrics
	log     logr.Logger
	runner  *Runner

	// OnSync, when set before Run, is called after every sync with what it did (the benchmark's report).
	OnSync func(SyncStats)
	// OnStatus, when set before Run, is called after a sync that changed whether Service NAT is
	// programmed, its error or the objects left out, so that the node's status report is rewritten at
	// once. A new rule count alone does not call it: the agent's periodic node sync reports it (an API
	// write per endpoint change would slow the loop down).
	OnStatus func(context.Context, ServiceStatus)

	mu         sync.Mutex
	src        model.ServiceSource
	triggers   func(key string) []time.Time
	dirty      map[string]struct{}
	firstDirty time.Time // when the oldest unapplied event was seen
	node       *model.ServiceNode
	nodeNew    bool // node facts changed since the last build
	status     ServiceStatus

	// Only the runner's goroutine uses these.
	builder   model.ServiceBuilder
	renderer  *nftables.Renderer
	last      *nftables.Ruleset
	pendingAt time.Time // the first event of a built but not yet applied ruleset
	// reported is the latest EndpointSlice trigger time passed to the applier, per Service.
	reported map[string]time.Time
}

// NewServiceProxy returns a Service proxy that applies through nft; it syncs once it has node facts
// (SetNode) and a source (SetSource, done by StartServiceWatches), and runs in Run.
func NewServiceProxy(cfg ServiceProxyConfig, applier RulesetApplier, metrics *Metrics, log logr.Logger) *ServiceProxy {
	if cfg.MinSyncInterval == 0 {
		cfg.MinSyncInterval = 10 * time.Millisecond
	}
	if cfg.SyncPeriod == 0 {
		cfg.SyncPeriod = 3 * time.Second
	}
	// The builder never modifies a Service it handed out (a change comes as a new value with new slices),
	// so the renderer may keep them without a deep copy.
	render := cfg.Render
	render.SharedInput = true
	p := &ServiceProxy{cfg: cfg, nft: applier, metrics: metrics, log: log, dirty: make(map[string]struct{}),
		renderer: nftables.NewRenderer(render)}
	p.runner = NewRunner(cfg.MinSyncInterval, cfg.SyncPeriod, time.Second, p.Sync)
	return p
}

// SetSource connects the stores the proxy reads Services and EndpointSlices from, and the lookup of a
// Service's EndpointSlice last-change-trigger-times (for network_programming_duration_seconds).
func (p *ServiceProxy) SetSource(src model.ServiceSource, triggers func(key string) []time.Time) {
	p.mu.Lock()
	p.src, p.triggers, p.nodeNew = src, triggers, true
	p.mu.Unlock()
	p.runner.Trigger()
}

// SetNode gives the proxy the node facts (from the node loop's view); new facts rebuild every Service.
func (p *ServiceProxy) SetNode(n model.ServiceNode) {
	p.mu.Lock()
	changed := p.node == nil || !p.node.Equal(&n)
	if changed {
		p.node, p.nodeNew = &n, true
		if p.firstDirty.IsZero() {
			p.firstDirty = time.Now()
		}
	}
	p.mu.Unlock()
	if changed {
		p.runner.Trigger()
	}
}

// Changed marks Services namespace/name dirty; event handlers call it.
func (p *ServiceProxy) Changed(keys ...string) {
	p.mu.Lock()
	for _, k := range keys {
		if k != "" {
			p.dirty[k] = struct{}{}
		}
	}
	if p.firstDirty.IsZero() {
		p.firstDirty = time.Now()
	}
	p.mu.Unlock()
	p.runner.Trigger()
}

// Run syncs whenever Services change and every SyncPeriod, until ctx ends.
func (p *ServiceProxy) Run(ctx context.Context) { p.runner.Run(ctx) }

// Status returns what the last syncs programmed.
func (p *ServiceProxy) Status() ServiceStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Healthy reports whether Service NAT has been programmed and the last sync succeeded.
func (p *ServiceProxy) Healthy() error {
	st := p.Status()
	switch {
	case st.Err != nil:
		return st.Err
	case !st.Synced:
		return errors.New("Service NAT has not been programmed yet")
	}
	return nil
}

// Sync builds the dirty Services, renders and applies; without changes it re-applies the last ruleset,
// which costs one generation read unless the table was changed by hand. It is the runner's work function.
func (p *ServiceProxy) Sync(ctx context.Context) error {
	p.mu.Lock()
	dirty, firstDirty, node, full, src := p.dirty, p.firstDirty, p.node, p.nodeNew, p.src
	p.dirty, p.firstDirty, p.nodeNew = make(map[string]struct{}), time.Time{}, false
	triggersOf := p.triggers
	p.mu.Unlock()
	if node == nil || src == nil {
		// The node loop has not built the node's view yet, or the informers have not synced: an empty
		// source would remove every Service. SetNode and SetSource trigger the first sync.
		p.requeue(dirty, firstDirty, full)
		return nil
	}
	stats := SyncStats{}
	start := time.Now()
	var rs *nftables.Ruleset
	var triggers []time.Time
	var skipped []*model.FieldError
	if len(dirty) > 0 || full || p.last == nil {
		keys := make([]string, 0, len(dirty))
		for k := range dirty {
			keys = append(keys, k)
		}
		set, ch, err := p.builder.Update(*node, src, keys)
		if err != nil {
			p.requeue(dirty, firstDirty, true)
			err = fmt.Errorf("failed to build the Service model: %w", err)
			p.finish(ctx, stats, 0, nil, nil, err)
			return err
		}
		stats.Built, stats.Full, stats.Services, stats.Changed = true, ch.Full, len(set.Services), len(ch.Keys)
		built := time.Now()
		stats.Build = built.Sub(start)
		if ch.Full {
			rs = p.renderer.RenderGrouped(set)
		} else {
			// Only the Services the builder rebuilt: the others are not even read (O(change)).
			rs = p.renderer.RenderGroupedChanged(set, ch.Keys)
		}
		stats.Render = time.Since(built)
		p.last = rs
		if p.pendingAt.IsZero() || (!firstDirty.IsZero() && firstDirty.Before(p.pendingAt)) {
			p.pendingAt = firstDirty
		}
		if triggersOf != nil {
			triggers = p.newTriggerTimes(dirty, triggersOf)
		}
		skipped = set.Skipped
	}
	applyStart := time.Now()
	res, rules, err := p.nft.Sync(ctx, p.last, triggers...)
	stats.Kernel, stats.Messages, stats.FullApply = res.KernelDuration, res.Messages, res.Full
	committed := time.Now()
	stats.Apply = committed.Sub(applyStart)
	if err != nil {
		err = fmt.Errorf("failed to program Service NAT: %w", err)
	} else {
		if !p.pendingAt.IsZero() {
			stats.EventToKernel = committed.Sub(p.pendingAt)
			p.pendingAt = time.Time{}
		}
	}
	if rs != nil || err != nil {
		p.metrics.SyncDuration.WithLabelValues("nftables").Observe(time.Since(start).Seconds())
	}
	p.finish(ctx, stats, rules, rs, skipped, err)
	return err
}

// newTriggerTimes returns the EndpointSlice last-change-trigger-times of the dirty Services that no earlier
// sync reported, and remembers the latest per Service (a time before the previous sync's commit can still be
// new: its event may have arrived after that sync started).
func (p *ServiceProxy) newTriggerTimes(dirty map[string]struct{}, triggersOf func(string) []time.Time) []time.Time {
	var out []time.Time
	for k := range dirty {
		last, seen := p.reported[k]
		latest := last
		times := triggersOf(k)
		for _, at := range times {
			if !seen || at.After(last) {
				out = append(out, at)
			}
			if at.After(latest) {
				latest = at
			}
		}
		switch {
		case len(times) == 0:
			delete(p.reported, k)
		case latest != last || !seen:
			if p.reported == nil {
				p.reported = make(map[string]time.Time)
			}
			p.reported[k] = latest
		}
	}
	return out
}

// requeue puts back the changes a sync could not build, so that the next one does.
func (p *ServiceProxy) requeue(dirty map[string]struct{}, firstDirty time.Time, full bool) {
	p.mu.Lock()
	for k := range dirty {
		p.dirty[k] = struct{}{}
	}
	if !firstDirty.IsZero() && (p.firstDirty.IsZero() || firstDirty.Before(p.firstDirty)) {
		p.firstDirty = firstDirty
	}
	p.nodeNew = p.nodeNew || full
	p.mu.Unlock()
}

// finish records a sync's outcome: metrics, the published status (with the Service objects left out when
// rs was built) and the hooks.
func (p *ServiceProxy) finish(ctx context.Context, stats SyncStats, rules int, rs *nftables.Ruleset, skipped []*model.FieldError, err error) {
	stats.Err = err
	if err != nil {
		p.metrics.SyncErrors.WithLabelValues("nftables").Inc()
		p.log.Error(err, "Failed to sync Service NAT", "reason", ReasonApplyFailed)
	} else if stats.EventToKernel > 0 {
		p.metrics.NetworkProgram.Observe(stats.EventToKernel.Seconds())
	}
	if rs != nil && err == nil {
		p.log.V(4).Info("Synced Service NAT", "full", stats.Full, "services", stats.Services, "changed", stats.Changed,
			"build", stats.Build, "render", stats.Render, "apply", stats.Apply, "kernel", stats.Kernel, "eventToKernel", stats.EventToKernel)
	}
	p.mu.Lock()
	prev := p.status
	p.status.Err = err
	if rs != nil {
		p.status.Skipped = skipped
	}
	if err == nil {
		p.status.Synced, p.status.Rules = true, rules
	}
	cur := p.status
	p.mu.Unlock()
	outcomeChanged := !cur.sameOutcome(prev)
	if rs != nil && len(skipped) > 0 && outcomeChanged {
		msgs := make([]string, 0, min(len(skipped), 10))
		for _, s := range skipped[:min(len(skipped), 10)] {
			msgs = append(msgs, s.Error())
		}
		p.log.Info("Left invalid Service objects out of table ip vxflow", "count", len(skipped), "first", strings.Join(msgs, "; "),
			"reason", "they are invalid; everything else is programmed")
	}
	if p.OnSync != nil {
		p.OnSync(stats)
	}
	if p.OnStatus != nil && outcomeChanged {
		p.OnStatus(ctx, cur)
	}
}
