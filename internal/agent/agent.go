package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// LinkApplier is what the agent needs from internal/apply/link: the underlay's MTU and tun0's address,
// routes, MTU and the sysctls of the packet path.
type LinkApplier interface {
	// MoveAddresses moves the node IP (and its routes) from the underlay NIC to the OVS bridge that holds
	// it, for native tunneling; it returns the changes made.
	MoveAddresses(ctx context.Context, nic, bridge string) ([]string, error)
	// UnderlayMTU returns the MTU of the interface that holds the node IP.
	UnderlayMTU(nodeIP netip.Addr) (int, error)
	// Apply converges tun0, its routes and the sysctls onto the view; it returns the changes it made.
	Apply(ctx context.Context, view *model.NodeView) ([]string, error)
}

// RulesetApplier is the nftables applier: it converges the node's own table onto a rendered ruleset.
type RulesetApplier interface {
	// Sync programs desired atomically and returns what the transaction did (messages, kernel time) and the
	// number of rules and elements in the table; triggerTimes are the EndpointSlice changes it carries, for
	// network_programming_duration_seconds.
	Sync(ctx context.Context, desired *nftables.Ruleset, triggerTimes ...time.Time) (nft.Result, int, error)
}

// Config is the node agent's configuration, from its flags.
type Config struct {
	// NodeName is this node's name, also the name of its HostSubnet.
	NodeName string
	// NodeIP is the node's underlay address; its HostSubnet's hostIP must be this.
	NodeIP netip.Addr
	// Datapath is br0's datapath type.
	Datapath model.DatapathType
	// Underlay, when its Bridge is set, is the native-tunneling layout: the node IP lives on this OVS bridge.
	Underlay ovs.UnderlaySpec
	// StatusRefresh is how often a steady node rewrites its status (lastSync), at most.
	StatusRefresh time.Duration
	// InlineEndpoints DNATs straight from a Service's chain when no per-endpoint chain is needed, which
	// makes nftables updates about three times cheaper in the kernel (internal/render/nftables).
	InlineEndpoints bool
	// EndpointMap DNATs through shared endpoint data maps when no per-endpoint chain is needed, so that an
	// endpoint replaced by another is an element update that nf_tables commits without re-validating the
	// table (internal/render/nftables).
	EndpointMap bool
	// ServiceMinSyncInterval and ServiceSyncPeriod are the Service proxy's runner intervals (see
	// ServiceProxyConfig); zero means its defaults.
	ServiceMinSyncInterval, ServiceSyncPeriod time.Duration
}

// NFTEndpointsOptions turns the agent's --nft-endpoints value (map, inline or chains) into renderer options.
func NFTEndpointsOptions(layout string) (nftables.Options, error) {
	switch layout {
	case "map":
		return nftables.Options{EndpointMap: true}, nil
	case "inline":
		return nftables.Options{InlineEndpoints: true}, nil
	case "chains":
		return nftables.Options{}, nil
	}
	return nftables.Options{}, fmt.Errorf("failed to parse --nft-endpoints %q: want map, inline or chains", layout)
}

// nftLayout names the nftables endpoint layout for status (HostSubnetAgentStatus.NFTLayout).
func (c Config) nftLayout() string {
	switch {
	case c.EndpointMap:
		return v1alpha1.NFTLayoutEndpointMap
	case c.InlineEndpoints:
		return v1alpha1.NFTLayoutInlineEndpoints
	}
	return v1alpha1.NFTLayoutEndpointChains
}

// Agent converges one node onto what the API says.
type Agent struct {
	cfg     Config
	reader  client.Reader
	writer  client.Client
	ovs     ovs.Interface
	links   LinkApplier
	pods    *PodStore
	metrics *Metrics
	log     logr.Logger

	// services programs Service NAT in its own loop; the node's sync hands it the node facts.
	services *ServiceProxy

	mu       sync.Mutex
	lastView *model.NodeView
	lastErr  error
	synced   bool
	changeAt time.Time // when the oldest unapplied API change was seen
	// nodeReport is the last sync's report without the Service part (its Message is the node's summary),
	// so that a Service sync can rewrite the status with new counts.
	nodeReport SyncReport
	// reportMu serialises status writes from the node loop and the Service loop.
	reportMu sync.Mutex
	// podFlows lets CNI requests program their pods' flows without a full sync (podsync.go).
	podFlows podFlowState
}

// New returns an agent; reader is a cache of the watched objects, writer writes HostSubnet status.
func New(cfg Config, reader client.Reader, writer client.Client, sw ovs.Interface, links LinkApplier,
	nft RulesetApplier, metrics *Metrics, log logr.Logger) (*Agent, error) {
	switch {
	case cfg.NodeName == "":
		return nil, errors.New("failed to create the agent: the node name is empty")
	case !cfg.NodeIP.Is4():
		return nil, fmt.Errorf("failed to create the agent: node IP %q is not an IPv4 address", cfg.NodeIP)
	case reader == nil || writer == nil || sw == nil || links == nil || nft == nil || metrics == nil:
		return nil, errors.New("failed to create the agent: a dependency is nil")
	}
	if cfg.StatusRefresh == 0 {
		cfg.StatusRefresh = time.Minute
	}
	a := &Agent{cfg: cfg, reader: reader, writer: writer, ovs: sw, links: links,
		metrics: metrics, log: log.WithValues("node", cfg.NodeName)}
	a.services = NewServiceProxy(ServiceProxyConfig{
		Render:          nftables.Options{InlineEndpoints: cfg.InlineEndpoints, EndpointMap: cfg.EndpointMap},
		MinSyncInterval: cfg.ServiceMinSyncInterval, SyncPeriod: cfg.ServiceSyncPeriod,
	}, nft, metrics, a.log.WithName("services"))
	a.services.OnStatus = a.servicesChanged
	return a, nil
}

// Services returns the agent's Service proxy: connect it to its informers (StartServiceWatches) and Run it.
func (a *Agent) Services() *ServiceProxy { return a.services }

// SetPodStore connects the store of local pods whose flows the agent renders.
func (a *Agent) SetPodStore(p *PodStore) { a.pods = p }

// NoteChange records that an API change was observed, for network_programming_duration_seconds.
func (a *Agent) NoteChange() {
	a.mu.Lock()
	if a.changeAt.IsZero() {
		a.changeAt = time.Now()
	}
	a.mu.Unlock()
}

// View returns the node view of the last successful sync, nil before the first one.
func (a *Agent) View() *model.NodeView {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastView
}

// Healthy reports whether the node has converged at least once and the last syncs of the node and of
// Service NAT succeeded. Pods do not wait for the first Service sync (as they do not wait for kube-proxy).
func (a *Agent) Healthy() error {
	if err := a.services.Status().Err; err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.synced {
		return errors.New("the node has not been programmed yet")
	}
	return a.lastErr
}

// Sync observes, renders and applies once. It is the runner's work function.
func (a *Agent) Sync(ctx context.Context) error {
	start := time.Now()
	a.mu.Lock()
	changeAt := a.changeAt
	a.changeAt = time.Time{}
	a.mu.Unlock()

	var pods []model.LocalPod
	var podGen uint64
	a.podFlows.mu.Lock()
	a.podFlows.input = nil
	if a.pods != nil {
		pods, podGen = a.pods.Snapshot()
	}
	report, view, err := a.sync(ctx, pods)
	a.podFlows.mu.Unlock()
	a.metrics.SyncDuration.WithLabelValues("total").Observe(time.Since(start).Seconds())
	// The view is published before the waiting CNI requests are released, so that a request that returns
	// sees the state it waited for.
	a.mu.Lock()
	a.lastErr = err
	if err == nil {
		a.synced, a.lastView = true, view
	}
	a.mu.Unlock()
	if a.pods != nil {
		a.pods.Synced(podGen, err)
	}
	if err == nil {
		a.metrics.LastSync.SetToCurrentTime()
		if !changeAt.IsZero() {
			a.metrics.NetworkProgram.Observe(time.Since(changeAt).Seconds())
		}
	} else {
		a.metrics.SyncErrors.WithLabelValues("total").Inc()
		a.log.Error(err, "Failed to sync the node", "reason", report.Reason)
	}
	if report.Reason != "" {
		report.Time = time.Now()
		a.mu.Lock()
		a.nodeReport = report
		a.mu.Unlock()
		if serr := a.reportStatus(ctx, a.withServices(report, a.services.Status())); serr != nil {
			a.log.Error(serr, "Failed to report the node's status")
		}
	}
	return err
}

// servicesChanged rewrites the node's status after a Service sync changed its counts, errors or skipped
// objects; it is the Service proxy's OnStatus.
func (a *Agent) servicesChanged(ctx context.Context, st ServiceStatus) {
	a.mu.Lock()
	report := a.nodeReport
	a.mu.Unlock()
	if report.Reason == "" {
		return // the node loop reports first
	}
	report.Time = time.Now()
	if err := a.reportStatus(ctx, a.withServices(report, st)); err != nil {
		a.log.Error(err, "Failed to report the node's status")
	}
}

// withServices completes a node report of a programmed node with the Service proxy's part: the rule
// count, the Service objects left out, and a failed Service sync.
func (a *Agent) withServices(r SyncReport, st ServiceStatus) SyncReport {
	if r.Reason != ReasonProgrammed && r.Reason != ReasonPartiallyProgrammed {
		return r
	}
	summary, skipped := r.Message, r.skipped
	r.NFTRules = st.Rules
	if st.Err != nil {
		r.Reason, r.Message = ReasonApplyFailed, st.Err.Error()
		return r
	}
	r.Message = summary + fmt.Sprintf(", %d nftables rules and elements", st.Rules)
	if !st.Synced {
		r.Message = summary + ", Service NAT not programmed yet"
	}
	msgs := slices.Clone(skipped)
	for _, s := range st.Skipped {
		msgs = append(msgs, s.Error())
	}
	a.metrics.SkippedObjects.Set(float64(len(msgs)))
	r.Reason = ReasonProgrammed
	if len(msgs) > 0 {
		r.Reason = ReasonPartiallyProgrammed
		r.Message += "; left out: " + strings.Join(msgs, "; ")
	}
	return r
}

// sync is one pass of observe → model → render → apply; the report says what to put into the status.
func (a *Agent) sync(ctx context.Context, pods []model.LocalPod) (SyncReport, *model.NodeView, error) {
	cn := &v1alpha1.ClusterNetwork{}
	if err := a.reader.Get(ctx, client.ObjectKey{Name: v1alpha1.ClusterNetworkName}, cn); err != nil {
		if apierrors.IsNotFound(err) {
			return SyncReport{Reason: ReasonClusterNetworkMissing, Message: "ClusterNetwork default does not exist"},
				nil, errors.New("failed to find ClusterNetwork default: the node network is not configured yet")
		}
		return SyncReport{}, nil, fmt.Errorf("failed to get ClusterNetwork default: %w", err)
	}
	var hsList v1alpha1.HostSubnetList
	if err := a.reader.List(ctx, &hsList); err != nil {
		return SyncReport{}, nil, fmt.Errorf("failed to list HostSubnets: %w", err)
	}
	own := findHostSubnet(hsList.Items, a.cfg.NodeName)
	if own == nil {
		// No status to write: the object does not exist yet.
		return SyncReport{}, nil, fmt.Errorf("failed to find HostSubnet %s: the controller has not allocated this node a subnet yet", a.cfg.NodeName)
	}

	if a.cfg.Underlay.Bridge != "" {
		if changes, err := a.ovs.EnsureUnderlayBridge(ctx, a.cfg.Underlay); err != nil {
			return a.failed(own, ReasonApplyFailed, err), nil, fmt.Errorf("failed to ensure underlay bridge %s: %w", a.cfg.Underlay.Bridge, err)
		} else if len(changes) > 0 {
			a.log.Info("Configured the underlay bridge", "bridge", a.cfg.Underlay.Bridge, "changes", changes)
		}
		if a.cfg.Underlay.NIC != "" {
			changes, err := a.links.MoveAddresses(ctx, a.cfg.Underlay.NIC, a.cfg.Underlay.Bridge)
			if err != nil {
				return a.failed(own, ReasonApplyFailed, err), nil, fmt.Errorf("failed to move the node IP onto %s: %w", a.cfg.Underlay.Bridge, err)
			}
			if len(changes) > 0 {
				a.log.Info("Moved the node IP onto the underlay bridge", "changes", changes, "reason", "OVS native tunneling routes only through OVS bridges")
			}
		}
	}
	underlayMTU, err := a.links.UnderlayMTU(a.cfg.NodeIP)
	if err != nil {
		return a.failed(own, ReasonApplyFailed, err), nil, fmt.Errorf("failed to read the underlay MTU: %w", err)
	}
	view, err := model.BuildNodeView(model.NodeInput{
		ClusterNetwork: cn,
		HostSubnets:    hsList.Items,
		NodeName:       a.cfg.NodeName,
		Facts:          model.NodeFacts{NodeIP: a.cfg.NodeIP, UnderlayMTU: underlayMTU, Datapath: a.cfg.Datapath},
		Pods:           pods,
	})
	if err != nil {
		return a.failed(own, ReasonInvalidConfiguration, err), nil, fmt.Errorf("failed to build the node's model: %w", err)
	}

	t := time.Now()
	changes, err := a.ovs.EnsureBridge(ctx, ovs.BridgeSpec{
		DatapathType: string(view.Datapath), VXLANDstPort: int(view.VXLANPort), TunMTU: view.MTU,
	})
	if err != nil {
		a.metrics.SyncErrors.WithLabelValues("bridge").Inc()
		return a.failed(own, ReasonApplyFailed, err), nil, fmt.Errorf("failed to ensure bridge br0: %w", err)
	}
	if len(changes) > 0 {
		a.log.Info("Configured br0", "changes", changes, "reason", "bridge differed from the desired ports and settings")
	}
	if changes, err := a.links.Apply(ctx, view); err != nil {
		a.metrics.SyncErrors.WithLabelValues("link").Inc()
		return a.failed(own, ReasonApplyFailed, err), nil, fmt.Errorf("failed to configure tun0 and routes: %w", err)
	} else if len(changes) > 0 {
		a.log.Info("Configured tun0, routes and sysctls", "changes", changes)
	}
	a.metrics.SyncDuration.WithLabelValues("link").Observe(time.Since(t).Seconds())

	t = time.Now()
	flows, err := openflow.Render(view)
	if err != nil {
		return a.failed(own, ReasonInvalidConfiguration, err), nil, fmt.Errorf("failed to render br0's flows: %w", err)
	}
	res, err := a.ovs.Sync(ctx, flows)
	a.metrics.SyncDuration.WithLabelValues("openflow").Observe(time.Since(t).Seconds())
	if err != nil {
		a.metrics.SyncErrors.WithLabelValues("openflow").Inc()
		return a.failed(own, ReasonApplyFailed, err), nil, fmt.Errorf("failed to program br0's flows: %w", err)
	}
	a.recordFlows(flows, res)
	a.podFlows.input = &model.NodeInput{ClusterNetwork: cn, HostSubnets: hsList.Items, NodeName: a.cfg.NodeName,
		Facts: model.NodeFacts{NodeIP: a.cfg.NodeIP, UnderlayMTU: underlayMTU, Datapath: a.cfg.Datapath}}

	// Service NAT is the Service proxy's loop; new node facts make it rebuild every Service.
	a.services.SetNode(model.ServiceNodeFromView(view))

	a.metrics.RemoteNodes.Set(float64(len(view.RemoteNodes)))
	a.metrics.LocalPods.Set(float64(len(view.LocalPods)))
	report := SyncReport{
		Generation: own.Generation, Flows: len(flows), StateHash: stateHash(flows),
		MTU: view.MTU, Datapath: string(view.Datapath), NFTLayout: a.cfg.nftLayout(), Reason: ReasonProgrammed,
		Message: fmt.Sprintf("%d flows, %d remote nodes, %d local pods", len(flows), len(view.RemoteNodes), len(view.LocalPods)),
	}
	var msgs []string
	if len(view.Skipped) > 0 {
		msgs = make([]string, 0, len(view.Skipped))
		for _, s := range view.Skipped {
			msgs = append(msgs, s.Error())
		}
		report.Reason = ReasonPartiallyProgrammed
		a.log.Info("Left invalid objects out of the node's state", "skipped", msgs, "reason", "they conflict with other objects or are invalid")
	}
	report.skipped = msgs
	return report, view, nil
}

// failed is the status report of a sync that could not program the node.
func (a *Agent) failed(own *v1alpha1.HostSubnet, reason string, err error) SyncReport {
	return SyncReport{Generation: own.Generation, Reason: reason, Message: err.Error(), Datapath: string(a.cfg.Datapath)}
}

// recordFlows logs and counts what a flow sync changed.
func (a *Agent) recordFlows(flows openflow.FlowSet, res ovs.SyncResult) {
	a.metrics.Flows.Reset()
	for table, n := range flows.CountByTable() {
		a.metrics.Flows.WithLabelValues(strconv.Itoa(int(table))).Set(float64(n))
	}
	a.metrics.FlowMods.WithLabelValues("add").Add(float64(res.Added))
	a.metrics.FlowMods.WithLabelValues("modify").Add(float64(res.Modified))
	a.metrics.FlowMods.WithLabelValues("delete").Add(float64(res.Deleted))
	if res.Reset {
		a.metrics.SwitchResets.Inc()
		a.log.Info("Reprogrammed br0 from scratch", "flows", res.Total, "reason", "the switch had no flows: ovs-vswitchd restarted or the bridge was flushed")
	} else if res.FlowMods() > 0 {
		a.log.Info("Programmed br0", "added", res.Added, "modified", res.Modified, "deleted", res.Deleted, "total", res.Total, "duration", res.Duration)
	}
}

// reportStatus writes the agent's part of its HostSubnet status when it changed.
func (a *Agent) reportStatus(ctx context.Context, r SyncReport) error {
	a.reportMu.Lock()
	defer a.reportMu.Unlock()
	hs := &v1alpha1.HostSubnet{}
	if err := a.reader.Get(ctx, client.ObjectKey{Name: a.cfg.NodeName}, hs); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("failed to get HostSubnet %s: %w", a.cfg.NodeName, err)
	}
	if !statusChanged(hs, r, a.cfg.StatusRefresh) {
		return nil
	}
	obj := statusApplyObject(a.cfg.NodeName, r, programmedTransitionTime(hs, r, r.Time))
	if err := a.writer.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
		client.FieldOwner("vxflow-agent"), client.ForceOwnership); err != nil {
		return fmt.Errorf("failed to apply HostSubnet %s status: %w", a.cfg.NodeName, err)
	}
	return nil
}

func findHostSubnet(items []v1alpha1.HostSubnet, name string) *v1alpha1.HostSubnet {
	for i := range items {
		if items[i].Name == name {
			return &items[i]
		}
	}
	return nil
}

// stateHash identifies a rendered flow set, so `vxflowctl render` output can be matched to a node.
func stateHash(flows openflow.FlowSet) string {
	h := sha256.New()
	for _, f := range flows {
		h.Write([]byte(f.String()))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
