package ovs

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// Fake is a stateful in-memory Interface for unit tests of the agent and the CNI plugin. Like the switch it
// applies a Sync atomically or not at all, rejects what OVS rejects (invalid flows, a goto_table that does not
// go forward, pod ports before the bridge), assigns ofports from 3 up, and can simulate an ovs-vswitchd
// restart and hand edits.
type Fake struct {
	mu sync.Mutex

	bridge      *BridgeSpec
	underlay    *UnderlaySpec
	bridgeIDs   map[string]string
	ports       map[string]PodPort
	flows       map[string]openflow.Flow
	lastCount   int
	last        []openflow.Flow // what the last successful sync left, for SyncChanges
	failNext    error
	syncResults []SyncResult
}

var _ Interface = &Fake{}

// NewFake returns a Fake with no bridge and no flows.
func NewFake() *Fake {
	return &Fake{bridgeIDs: map[string]string{}, ports: map[string]PodPort{}, flows: map[string]openflow.Flow{}, lastCount: -1}
}

// EnsureBridge is part of Interface.
func (f *Fake) EnsureBridge(_ context.Context, spec BridgeSpec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec.DatapathType == "" {
		spec.DatapathType = DatapathSystem
	}
	if spec.DatapathType != DatapathSystem && spec.DatapathType != DatapathNetdev {
		return nil, fmt.Errorf("failed to ensure bridge %s: unknown datapath type %q", DefaultBridge, spec.DatapathType)
	}
	if spec.VXLANDstPort == 0 {
		spec.VXLANDstPort = DefaultVXLANDstPort
	}
	switch {
	case f.bridge == nil:
		f.bridge = &spec
		return []string{"created bridge " + DefaultBridge}, nil
	case *f.bridge != spec:
		f.bridge = &spec
		return []string{"updated bridge " + DefaultBridge}, nil
	}
	return nil, nil
}

// EnsureUnderlayBridge is part of Interface.
func (f *Fake) EnsureUnderlayBridge(_ context.Context, spec UnderlaySpec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec.Bridge == "" || spec.NIC == "" || spec.Bridge == DefaultBridge {
		return nil, fmt.Errorf("failed to ensure the underlay bridge: invalid spec %+v", spec)
	}
	if f.underlay != nil && *f.underlay == spec {
		return nil, nil
	}
	f.underlay = &spec
	return []string{"ensured underlay bridge " + spec.Bridge}, nil
}

// Underlay returns the last UnderlaySpec ensured, nil when none was.
func (f *Fake) Underlay() *UnderlaySpec {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.underlay == nil {
		return nil
	}
	u := *f.underlay
	return &u
}

// Bridge returns the last BridgeSpec ensured (defaults filled in), nil when the bridge does not exist.
func (f *Fake) Bridge() *BridgeSpec {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bridge == nil {
		return nil
	}
	b := *f.bridge
	return &b
}

// EnsurePodPort is part of Interface.
func (f *Fake) EnsurePodPort(ctx context.Context, name string, externalIDs map[string]string) (int, error) {
	return f.EnsurePodPortAt(ctx, name, externalIDs, 0)
}

// EnsurePodPortAt is part of Interface: like ovs-vswitchd, the Fake grants a requested ofport to a new port
// when no other port has it, and picks the lowest free one otherwise.
func (f *Fake) EnsurePodPortAt(_ context.Context, name string, externalIDs map[string]string, request int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bridge == nil {
		return 0, fmt.Errorf("failed to ensure pod port %s: bridge %s does not exist (EnsureBridge first)", name, DefaultBridge)
	}
	if name == "" || name == DefaultBridge || name == VXLANPort || name == TunPort {
		return 0, fmt.Errorf("failed to ensure pod port %q: reserved or empty name", name)
	}
	if request != 0 && (request <= TunOfport || request > MaxOfport) {
		return 0, fmt.Errorf("failed to ensure pod port %s: ofport %d is outside the pod range %d-%d", name, request, TunOfport+1, MaxOfport)
	}
	ids := maps.Clone(externalIDs)
	if ids == nil {
		ids = map[string]string{}
	}
	if p, ok := f.ports[name]; ok {
		p.ExternalIDs = ids
		f.ports[name] = p
		return p.Ofport, nil
	}
	used := map[int]bool{}
	for _, p := range f.ports {
		used[p.Ofport] = true
	}
	ofport := request
	if ofport == 0 || used[ofport] {
		ofport = TunOfport + 1
		for used[ofport] {
			ofport++
		}
	}
	f.ports[name] = PodPort{Name: name, Ofport: ofport, ExternalIDs: ids}
	return ofport, nil
}

// OfportFree is part of Interface.
func (f *Fake) OfportFree(_ context.Context, name string, ofport int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, p := range f.ports {
		if n != name && p.Ofport == ofport {
			return false, nil
		}
	}
	return true, nil
}

// DeletePort is part of Interface.
func (f *Fake) DeletePort(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ports, name)
	return nil
}

// ListPodPorts is part of Interface.
func (f *Fake) ListPodPorts(_ context.Context) ([]PodPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]PodPort, 0, len(f.ports))
	for _, p := range f.ports {
		p.ExternalIDs = maps.Clone(p.ExternalIDs)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// BridgeExternalIDs is part of Interface.
func (f *Fake) BridgeExternalIDs(_ context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bridge == nil {
		return nil, fmt.Errorf("failed to read the external_ids of %s: the bridge does not exist", DefaultBridge)
	}
	return maps.Clone(f.bridgeIDs), nil
}

// SetBridgeExternalIDs is part of Interface.
func (f *Fake) SetBridgeExternalIDs(_ context.Context, ids map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bridge == nil {
		return fmt.Errorf("failed to set the external_ids of %s: the bridge does not exist", DefaultBridge)
	}
	f.bridgeIDs = mergeIDs(f.bridgeIDs, ids)
	return nil
}

// Sync is part of Interface.
func (f *Fake) Sync(_ context.Context, desired []openflow.Flow) (SyncResult, error) {
	return f.sync(desired, false)
}

// SyncChanges is part of Interface: like the real applier it trusts its memory of the last sync, so a flow
// changed behind its back stays changed until the next Sync.
func (f *Fake) SyncChanges(_ context.Context, desired []openflow.Flow) (SyncResult, error) {
	return f.sync(desired, true)
}

func (f *Fake) sync(desired []openflow.Flow, fromMemory bool) (SyncResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		f.last = nil
		return SyncResult{}, err
	}
	if f.bridge == nil {
		return SyncResult{}, fmt.Errorf("failed to dump the flows of %s: the bridge does not exist", DefaultBridge)
	}
	for _, fl := range desired {
		if err := validateFlow(fl); err != nil {
			return SyncResult{}, fmt.Errorf("failed to validate the desired flows: %w", err)
		}
	}
	actual, dumped := f.last, false
	if !fromMemory || actual == nil {
		actual, dumped = f.dumpLocked(), true
	}
	d, err := diffFlows(desired, actual)
	if err != nil {
		return SyncResult{}, fmt.Errorf("failed to diff the flows of %s: %w", DefaultBridge, err)
	}
	upserts := slices.Concat(d.adds, d.mods)
	// What the switch would reject rejects the whole bundle.
	for _, fl := range upserts {
		if err := checkGotoTables(fl); err != nil {
			f.last = nil
			return SyncResult{}, fmt.Errorf("failed to apply a bundle of %d flow-mods to %s (nothing applied): %w",
				len(d.adds)+len(d.mods)+len(d.deletes), DefaultBridge, err)
		}
	}
	res := SyncResult{Added: len(d.adds), Modified: len(d.mods), Deleted: len(d.deletes), Total: len(desired),
		Reset: dumped && len(f.flows) == 0 && f.lastCount > 0}
	for _, fl := range d.deletes {
		delete(f.flows, fl.Key())
	}
	for _, fl := range upserts {
		f.flows[fl.Key()] = fl
	}
	f.lastCount = len(desired)
	f.last = slices.Clone(desired)
	f.syncResults = append(f.syncResults, res)
	return res, nil
}

// checkGotoTables rejects a goto_table that does not go to a later table (OFPBIC_BAD_TABLE_ID on a switch).
func checkGotoTables(fl openflow.Flow) error {
	for _, a := range splitTopLevel(fl.Actions) {
		v, ok := strings.CutPrefix(a, "goto_table:")
		if !ok {
			continue
		}
		t, err := strconv.Atoi(v)
		if err != nil || t <= int(fl.Table) || t > 254 {
			return fmt.Errorf("OFPBIC_BAD_TABLE_ID for %s", fl.String())
		}
	}
	return nil
}

// Dump is part of Interface; the order is table, then priority from high to low, then match.
func (f *Fake) Dump(_ context.Context) ([]openflow.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bridge == nil {
		return nil, fmt.Errorf("failed to dump the flows of %s: the bridge does not exist", DefaultBridge)
	}
	return f.dumpLocked(), nil
}

func (f *Fake) dumpLocked() []openflow.Flow {
	out := make([]openflow.Flow, 0, len(f.flows))
	for _, fl := range f.flows {
		out = append(out, fl)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Match < b.Match
	})
	return out
}

// DumpText returns the flows as `ovs-ofctl dump-flows` would list them (one Flow.String per line).
func (f *Fake) DumpText() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, fl := range f.dumpLocked() {
		b.WriteString(fl.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Drifted is part of Interface.
func (f *Fake) Drifted(_ context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastCount < 0 || len(f.flows) != f.lastCount, nil
}

// RestartVSwitchd simulates an ovs-vswitchd restart: the flows are gone, OVSDB state (bridge, ports,
// external_ids) stays.
func (f *Fake) RestartVSwitchd() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = map[string]openflow.Flow{}
}

// DeleteFlow simulates `ovs-ofctl --strict del-flows` by hand; it reports whether the flow existed.
func (f *Fake) DeleteFlow(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.flows[key]
	delete(f.flows, key)
	return ok
}

// SetFlow simulates `ovs-ofctl add-flow` by hand (adding or replacing the flow with fl's key).
func (f *Fake) SetFlow(fl openflow.Flow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows[fl.Key()] = fl
}

// FailNextSync makes the next Sync return err without changing anything.
func (f *Fake) FailNextSync(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// SyncResults returns the results of every successful Sync, oldest first.
func (f *Fake) SyncResults() []SyncResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SyncResult(nil), f.syncResults...)
}
