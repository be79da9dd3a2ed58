package ovs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/ovn-org/libovsdb/cache"
	"github.com/ovn-org/libovsdb/client"
	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"
	"k8s.io/klog/v2"

	"github.com/vxflow/vxflow/internal/apply/ovs/ovsdbmodel"
)

// Defaults of Config.
const (
	// DefaultDBEndpoint is where ovsdb-server listens on a packaged install.
	DefaultDBEndpoint = "unix:/var/run/openvswitch/db.sock"
	// DefaultTimeout bounds each ovs-ofctl run and each wait for ovs-vswitchd.
	DefaultTimeout = 30 * time.Second
)

// Config says where the switch is.
type Config struct {
	// DBEndpoint is ovsdb-server's endpoint ("unix:<path>" or "tcp:<ip>:<port>"); DefaultDBEndpoint when
	// empty.
	DBEndpoint string
	// RunDir is ovs-vswitchd's run directory (OVS_RUNDIR), where ovs-ofctl finds <bridge>.mgmt; empty means
	// ovs-ofctl's own default (normally /var/run/openvswitch, or $OVS_RUNDIR).
	RunDir string
	// Bridge is the SDN bridge; DefaultBridge when empty.
	Bridge string
	// Timeout bounds each ovs-ofctl run and each wait for ovs-vswitchd (such as an ofport assignment);
	// DefaultTimeout when zero.
	Timeout time.Duration
}

// Switch is the real Interface: OVSDB through libovsdb (its cache is kept by a monitor of the Open_vSwitch,
// Bridge, Port and Interface tables) and flows through its FlowApplier.
type Switch struct {
	*FlowApplier

	bridge  string
	timeout time.Duration
	db      client.Client

	mu sync.Mutex // serialises OVSDB read-modify-write sequences of this process (agent and CNI)

	queueMu sync.Mutex
	queue   []*portOp // pod port changes waiting for the next shared transaction

	transactions atomic.Int64  // OVSDB transactions sent, for tests
	deleteWait   time.Duration // DeleteApplyWait; tests shorten it

	changedMu sync.Mutex
	changed   chan struct{} // closed and replaced whenever the cache changes
}

var _ Interface = &Switch{}

// New connects to ovsdb-server and returns the Switch of cfg.Bridge; the bridge itself need not exist yet
// (EnsureBridge creates it). The connection reconnects by itself; Close ends it.
func New(ctx context.Context, cfg Config) (*Switch, error) {
	if cfg.DBEndpoint == "" {
		cfg.DBEndpoint = DefaultDBEndpoint
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	dbModel, err := model.NewClientDBModel("Open_vSwitch", map[string]model.Model{
		"Open_vSwitch": &ovsdbmodel.OpenvSwitch{},
		"Bridge":       &ovsdbmodel.Bridge{},
		"Port":         &ovsdbmodel.Port{},
		"Interface":    &ovsdbmodel.Interface{},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to build the OVSDB model: %w", err)
	}
	logger := klog.FromContext(ctx).WithName("libovsdb")
	bo := backoff.NewExponentialBackOff()
	bo.MaxElapsedTime = 0 // keep trying: ovsdb-server may be restarted at any time
	c, err := client.NewOVSDBClient(dbModel,
		client.WithEndpoint(cfg.DBEndpoint),
		client.WithReconnect(cfg.Timeout, bo),
		client.WithLogger(&logger),
	)
	if err != nil {
		return nil, fmt.Errorf("failed to create the OVSDB client: %w", err)
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("failed to connect to ovsdb-server at %s: %w", cfg.DBEndpoint, err)
	}
	s := &Switch{
		FlowApplier: NewFlowApplier(cfg.Bridge, cfg.RunDir, cfg.Timeout),
		bridge:      cfg.Bridge,
		timeout:     cfg.Timeout,
		db:          c,
		changed:     make(chan struct{}),
		deleteWait:  DeleteApplyWait,
	}
	// Waiters for ovs-vswitchd (an ofport) or for our own transaction wake up on the change instead of
	// polling: with 20 CNI ADDs at once, polling snapshots cost the CPU ovs-vswitchd needs.
	notify := func(string, model.Model) { s.notifyCacheChanged() }
	c.Cache().AddEventHandler(&cache.EventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(table string, _, m model.Model) { notify(table, m) },
		DeleteFunc: notify,
	})
	// Only the columns we read: Interface statistics change every few seconds and would flood the monitor.
	root, br, port, iface := &ovsdbmodel.OpenvSwitch{}, &ovsdbmodel.Bridge{}, &ovsdbmodel.Port{}, &ovsdbmodel.Interface{}
	if _, err := c.Monitor(ctx, c.NewMonitor(
		client.WithTable(root, &root.Bridges, &root.NextCfg, &root.CurCfg),
		client.WithTable(br, &br.Name, &br.Ports, &br.DatapathType, &br.FailMode, &br.Protocols, &br.ExternalIDs),
		client.WithTable(port, &port.Name, &port.Interfaces),
		client.WithTable(iface, &iface.Name, &iface.Type, &iface.Options, &iface.Ofport, &iface.OfportRequest,
			&iface.MTURequest, &iface.ExternalIDs, &iface.Error),
	)); err != nil {
		c.Close()
		return nil, fmt.Errorf("failed to monitor ovsdb-server at %s: %w", cfg.DBEndpoint, err)
	}
	return s, nil
}

// Close ends the OVSDB connection.
func (s *Switch) Close() { s.db.Close() }

// portSpec declares one port (with its single interface of the same name).
type portSpec struct {
	name          string
	ifaceType     string
	options       map[string]string
	ofportRequest *int
	mtuRequest    *int
	externalIDs   map[string]string // nil: not managed
}

// bridgeSpec declares a bridge and the ports it must have (others are left alone).
type bridgeSpec struct {
	name         string
	datapathType string
	failMode     *ovsdbmodel.BridgeFailMode
	protocols    []ovsdbmodel.BridgeProtocols
	ports        []portSpec
}

// EnsureBridge is part of Interface.
func (s *Switch) EnsureBridge(ctx context.Context, spec BridgeSpec) ([]string, error) {
	dp := spec.DatapathType
	if dp == "" {
		dp = DatapathSystem
	}
	if dp != DatapathSystem && dp != DatapathNetdev {
		return nil, fmt.Errorf("failed to ensure bridge %s: unknown datapath type %q", s.bridge, dp)
	}
	dstPort := spec.VXLANDstPort
	if dstPort == 0 {
		dstPort = DefaultVXLANDstPort
	}
	if dstPort < 1 || dstPort > 65535 {
		return nil, fmt.Errorf("failed to ensure bridge %s: VXLAN port %d out of range", s.bridge, dstPort)
	}
	var mtu *int
	if spec.TunMTU > 0 {
		mtu = ptr(spec.TunMTU)
	}
	secure := ovsdbmodel.BridgeFailModeSecure
	bs := bridgeSpec{
		name:         s.bridge,
		datapathType: dp,
		failMode:     &secure,
		protocols:    []ovsdbmodel.BridgeProtocols{ovsdbmodel.BridgeProtocolsOpenflow13},
		ports: []portSpec{
			{name: s.bridge, ifaceType: "internal"},
			{name: VXLANPort, ifaceType: "vxlan", ofportRequest: ptr(VXLANOfport), options: map[string]string{
				"remote_ip": "flow", "key": "flow", "dst_port": strconv.Itoa(dstPort),
			}},
			{name: TunPort, ifaceType: "internal", ofportRequest: ptr(TunOfport), mtuRequest: mtu},
		},
	}
	changes, err := s.ensure(ctx, func(snap *snapshot) ([]ovsdb.Operation, []string, error) { return s.planBridge(snap, bs) })
	if err != nil {
		return nil, fmt.Errorf("failed to ensure bridge %s: %w", s.bridge, err)
	}
	// Once vxlan0 and tun0 have their ofports, ovs-vswitchd has built the bridge: flows can be synced and
	// tun0 configured.
	if err := s.waitOfports(ctx, s.bridge, VXLANPort, TunPort); err != nil {
		return nil, fmt.Errorf("failed to ensure bridge %s: %w", s.bridge, err)
	}
	return changes, nil
}

// waitOfports waits until ovs-vswitchd has assigned an ofport to each of bridge's ports; a port it could
// not add fails with the interface's error.
func (s *Switch) waitOfports(ctx context.Context, bridge string, ports ...string) error {
	return s.waitCache(ctx, func(snap *snapshot) (bool, error) {
		for _, name := range ports {
			iface := snap.ifaceOnBridge(bridge, name)
			if iface == nil || iface.Ofport == nil || *iface.Ofport == 0 {
				return false, nil
			}
			if *iface.Ofport < 0 {
				return false, fmt.Errorf("ovs-vswitchd could not add interface %s: %s", name, deref(iface.Error))
			}
		}
		return true, nil
	})
}

// EnsureUnderlayBridge is part of Interface.
func (s *Switch) EnsureUnderlayBridge(ctx context.Context, spec UnderlaySpec) ([]string, error) {
	if spec.Bridge == "" || spec.NIC == "" {
		return nil, fmt.Errorf("failed to ensure the underlay bridge: bridge %q and NIC %q must be set", spec.Bridge, spec.NIC)
	}
	if spec.Bridge == s.bridge {
		return nil, fmt.Errorf("failed to ensure the underlay bridge: %s is the SDN bridge", spec.Bridge)
	}
	dp := spec.DatapathType
	if dp == "" {
		dp = DatapathNetdev
	}
	bs := bridgeSpec{
		name:         spec.Bridge,
		datapathType: dp,
		ports: []portSpec{
			{name: spec.Bridge, ifaceType: "internal"},
			{name: spec.NIC},
		},
	}
	changes, err := s.ensure(ctx, func(snap *snapshot) ([]ovsdb.Operation, []string, error) { return s.planBridge(snap, bs) })
	if err != nil {
		return nil, fmt.Errorf("failed to ensure underlay bridge %s: %w", spec.Bridge, err)
	}
	if err := s.waitOfports(ctx, spec.Bridge, spec.NIC, spec.Bridge); err != nil {
		return nil, fmt.Errorf("failed to ensure underlay bridge %s: %w", spec.Bridge, err)
	}
	return changes, nil
}

// EnsurePodPort is part of Interface. Concurrent calls share one OVSDB transaction (see portbatch.go), so a
// burst of CNI ADDs is one reconfiguration of ovs-vswitchd rather than one per pod.
func (s *Switch) EnsurePodPort(ctx context.Context, name string, externalIDs map[string]string) (int, error) {
	return s.EnsurePodPortAt(ctx, name, externalIDs, 0)
}

// EnsurePodPortAt is part of Interface.
func (s *Switch) EnsurePodPortAt(ctx context.Context, name string, externalIDs map[string]string, ofport int) (int, error) {
	if name == "" || name == s.bridge || name == VXLANPort || name == TunPort {
		return 0, fmt.Errorf("failed to ensure pod port %q: reserved or empty name", name)
	}
	if ofport != 0 && (ofport <= TunOfport || ofport > MaxOfport) {
		return 0, fmt.Errorf("failed to ensure pod port %s: ofport %d is outside the pod range %d-%d", name, ofport, TunOfport+1, MaxOfport)
	}
	ids := maps.Clone(externalIDs)
	if ids == nil {
		ids = map[string]string{}
	}
	if err := s.submitPortOp(&portOp{ctx: ctx, name: name, ids: ids, ofport: ofport}); err != nil {
		return 0, fmt.Errorf("failed to ensure pod port %s: %w", name, err)
	}
	assigned := 0
	// The transaction put the port on the SDN bridge; from here only its interface row (names are unique)
	// is read, not a snapshot of every table: 20 concurrent ADDs woken by each cache update made snapshots
	// (libovsdb clones rows through JSON) a third of the CNI server's CPU.
	if err := s.waitFor(ctx, func(ctx context.Context) (bool, error) {
		iface, err := s.interfaceNamed(ctx, name)
		if err != nil {
			return false, err
		}
		switch {
		case iface == nil || iface.Ofport == nil || *iface.Ofport == 0:
			return false, nil
		case *iface.Ofport < 0:
			return false, fmt.Errorf("ovs-vswitchd could not add interface %s: %s", name, deref(iface.Error))
		}
		assigned = *iface.Ofport
		return true, nil
	}); err != nil {
		return 0, fmt.Errorf("failed to get the ofport of pod port %s: %w", name, err)
	}
	return assigned, nil
}

// OfportFree is part of Interface.
func (s *Switch) OfportFree(ctx context.Context, name string, ofport int) (bool, error) {
	var taken []ovsdbmodel.Interface
	err := s.db.WhereCache(func(i *ovsdbmodel.Interface) bool {
		return i.Name != name && ((i.Ofport != nil && *i.Ofport == ofport) || (i.OfportRequest != nil && *i.OfportRequest == ofport))
	}).List(ctx, &taken)
	if err != nil && !errors.Is(err, client.ErrNotFound) {
		return false, fmt.Errorf("failed to read the OVSDB cache: %w", err)
	}
	return len(taken) == 0, nil
}

// interfaceNamed returns the cached Interface row called name, nil when there is none.
func (s *Switch) interfaceNamed(ctx context.Context, name string) (*ovsdbmodel.Interface, error) {
	var rows []ovsdbmodel.Interface
	err := s.db.WhereCache(func(i *ovsdbmodel.Interface) bool { return i.Name == name }).List(ctx, &rows)
	if err != nil && !errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("failed to read the OVSDB cache: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return &rows[0], nil
}

// DeletePort is part of Interface. Like EnsurePodPort, concurrent calls share one OVSDB transaction. It
// returns once ovs-vswitchd has removed the port, or after DeleteApplyWait when ovs-vswitchd is not
// keeping up (not running): the port is gone from OVSDB then, and ovs-vswitchd removes it when it runs.
func (s *Switch) DeletePort(ctx context.Context, name string) error {
	op := &portOp{ctx: ctx, name: name, delete: true}
	if err := s.submitPortOp(op); err != nil {
		return fmt.Errorf("failed to delete port %s from %s: %w", name, s.bridge, err)
	}
	if op.cfg > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.deleteWait)
		defer cancel()
		if err := s.waitApplied(wctx, op.cfg); err != nil {
			klog.FromContext(ctx).Info("Deleted a port before ovs-vswitchd applied it", "port", name,
				"reason", "ovs-vswitchd did not reach the configuration in time", "err", err)
		}
	}
	return nil
}

// DeleteApplyWait bounds how long DeletePort waits for ovs-vswitchd after the port left OVSDB, so that a
// DEL does not hang while ovs-vswitchd restarts.
const DeleteApplyWait = 5 * time.Second

// ListPodPorts is part of Interface.
func (s *Switch) ListPodPorts(ctx context.Context) ([]PodPort, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list the pod ports of %s: %w", s.bridge, err)
	}
	ports := []PodPort{}
	br := snap.bridges[s.bridge]
	if br == nil {
		return ports, nil
	}
	for _, pu := range br.Ports {
		p := snap.ports[pu]
		if p == nil || p.Name == s.bridge || p.Name == VXLANPort || p.Name == TunPort {
			continue
		}
		pp := PodPort{Name: p.Name, ExternalIDs: map[string]string{}}
		if iface := snap.ifaceOfPort(p); iface != nil {
			pp.Ofport = deref(iface.Ofport)
			maps.Copy(pp.ExternalIDs, iface.ExternalIDs)
		}
		ports = append(ports, pp)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Name < ports[j].Name })
	return ports, nil
}

// BridgeExternalIDs is part of Interface.
func (s *Switch) BridgeExternalIDs(ctx context.Context) (map[string]string, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read the external_ids of %s: %w", s.bridge, err)
	}
	br := snap.bridges[s.bridge]
	if br == nil {
		return nil, fmt.Errorf("failed to read the external_ids of %s: the bridge does not exist", s.bridge)
	}
	return maps.Clone(br.ExternalIDs), nil
}

// SetBridgeExternalIDs is part of Interface.
func (s *Switch) SetBridgeExternalIDs(ctx context.Context, ids map[string]string) error {
	_, err := s.ensure(ctx, func(snap *snapshot) ([]ovsdb.Operation, []string, error) {
		br := snap.bridges[s.bridge]
		if br == nil {
			return nil, nil, fmt.Errorf("the bridge does not exist")
		}
		want := mergeIDs(br.ExternalIDs, ids)
		if maps.Equal(want, br.ExternalIDs) {
			return nil, nil, nil
		}
		upd := &ovsdbmodel.Bridge{UUID: br.UUID, ExternalIDs: want}
		ops, err := s.db.Where(upd).Update(upd, &upd.ExternalIDs)
		return ops, []string{"set external_ids"}, err
	})
	if err != nil {
		return fmt.Errorf("failed to set the external_ids of %s: %w", s.bridge, err)
	}
	return nil
}

// mergeIDs returns cur with ids applied (an empty value deletes the key).
func mergeIDs(cur, ids map[string]string) map[string]string {
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range ids {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// snapshot is a consistent read of the monitored tables, indexed.
type snapshot struct {
	root    *ovsdbmodel.OpenvSwitch
	bridges map[string]*ovsdbmodel.Bridge    // by name
	ports   map[string]*ovsdbmodel.Port      // by UUID
	ifaces  map[string]*ovsdbmodel.Interface // by UUID
}

func (s *Switch) snapshot(ctx context.Context) (*snapshot, error) {
	var roots []ovsdbmodel.OpenvSwitch
	var bridges []ovsdbmodel.Bridge
	var ports []ovsdbmodel.Port
	var ifaces []ovsdbmodel.Interface
	for _, l := range []any{&roots, &bridges, &ports, &ifaces} {
		if err := s.db.List(ctx, l); err != nil && !errors.Is(err, client.ErrNotFound) {
			return nil, fmt.Errorf("failed to read the OVSDB cache: %w", err)
		}
	}
	snap := &snapshot{
		bridges: make(map[string]*ovsdbmodel.Bridge, len(bridges)),
		ports:   make(map[string]*ovsdbmodel.Port, len(ports)),
		ifaces:  make(map[string]*ovsdbmodel.Interface, len(ifaces)),
	}
	if len(roots) > 0 {
		snap.root = &roots[0]
	}
	for i := range bridges {
		snap.bridges[bridges[i].Name] = &bridges[i]
	}
	for i := range ports {
		snap.ports[ports[i].UUID] = &ports[i]
	}
	for i := range ifaces {
		snap.ifaces[ifaces[i].UUID] = &ifaces[i]
	}
	return snap, nil
}

// portOnBridge returns br's port called name, nil when it has none.
func (snap *snapshot) portOnBridge(br *ovsdbmodel.Bridge, name string) *ovsdbmodel.Port {
	for _, pu := range br.Ports {
		if p := snap.ports[pu]; p != nil && p.Name == name {
			return p
		}
	}
	return nil
}

// ifaceOfPort returns the port's interface of the same name (or its only interface).
func (snap *snapshot) ifaceOfPort(p *ovsdbmodel.Port) *ovsdbmodel.Interface {
	var only *ovsdbmodel.Interface
	for _, iu := range p.Interfaces {
		if i := snap.ifaces[iu]; i != nil {
			if i.Name == p.Name {
				return i
			}
			only = i
		}
	}
	if len(p.Interfaces) == 1 {
		return only
	}
	return nil
}

// ifaceOnBridge returns the interface of bridge's port name, nil when there is none.
func (snap *snapshot) ifaceOnBridge(bridge, name string) *ovsdbmodel.Interface {
	br := snap.bridges[bridge]
	if br == nil {
		return nil
	}
	p := snap.portOnBridge(br, name)
	if p == nil {
		return nil
	}
	return snap.ifaceOfPort(p)
}

// bridgeOfPort returns the name of the bridge holding the port called name, "" when none does.
func (snap *snapshot) bridgeOfPort(name string) string {
	for bn, br := range snap.bridges {
		if snap.portOnBridge(br, name) != nil {
			return bn
		}
	}
	return ""
}

// planBridge returns the operations (and their descriptions) that make the snapshot match bs.
func (s *Switch) planBridge(snap *snapshot, bs bridgeSpec) ([]ovsdb.Operation, []string, error) {
	br := snap.bridges[bs.name]
	if br == nil {
		return s.planNewBridge(snap, bs)
	}
	var ops []ovsdb.Operation
	var changes []string
	upd := &ovsdbmodel.Bridge{UUID: br.UUID, DatapathType: bs.datapathType, FailMode: bs.failMode, Protocols: bs.protocols}
	var fields []any
	if br.DatapathType != bs.datapathType {
		fields = append(fields, &upd.DatapathType)
		changes = append(changes, fmt.Sprintf("set bridge %s datapath_type=%s", bs.name, bs.datapathType))
	}
	if bs.failMode != nil && deref(br.FailMode) != *bs.failMode {
		fields = append(fields, &upd.FailMode)
		changes = append(changes, fmt.Sprintf("set bridge %s fail_mode=%s", bs.name, *bs.failMode))
	}
	if bs.protocols != nil && !sameSet(br.Protocols, bs.protocols) {
		fields = append(fields, &upd.Protocols)
		changes = append(changes, fmt.Sprintf("set bridge %s protocols=%v", bs.name, bs.protocols))
	}
	if len(fields) > 0 {
		o, err := s.db.Where(upd).Update(upd, fields...)
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, o...)
	}
	pops, pchanges, err := s.planPorts(snap, br, bs.ports)
	if err != nil {
		return nil, nil, err
	}
	return append(ops, pops...), append(changes, pchanges...), nil
}

// planNewBridge returns the one transaction that creates a bridge with all its ports (and the root row when
// the database was never initialised).
func (s *Switch) planNewBridge(snap *snapshot, bs bridgeSpec) ([]ovsdb.Operation, []string, error) {
	var ops []ovsdb.Operation
	var portUUIDs []string
	for i, ps := range bs.ports {
		if other := snap.bridgeOfPort(ps.name); other != "" {
			return nil, nil, fmt.Errorf("port %s already belongs to bridge %s", ps.name, other)
		}
		o, pu, err := s.createPort(ps, i)
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, o...)
		portUUIDs = append(portUUIDs, pu)
	}
	br := &ovsdbmodel.Bridge{
		UUID: "newbridge", Name: bs.name, DatapathType: bs.datapathType, FailMode: bs.failMode,
		Protocols: bs.protocols, Ports: portUUIDs,
	}
	o, err := s.db.Create(br)
	if err != nil {
		return nil, nil, err
	}
	ops = append(ops, o...)
	if snap.root == nil {
		o, err = s.db.Create(&ovsdbmodel.OpenvSwitch{UUID: "newroot", Bridges: []string{br.UUID}})
	} else {
		root := &ovsdbmodel.OpenvSwitch{UUID: snap.root.UUID}
		o, err = s.db.Where(root).Mutate(root, model.Mutation{
			Field: &root.Bridges, Mutator: ovsdb.MutateOperationInsert, Value: []string{br.UUID},
		})
	}
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(bs.ports))
	for _, ps := range bs.ports {
		names = append(names, ps.name)
	}
	return append(ops, o...), []string{fmt.Sprintf("created bridge %s (datapath_type=%s) with ports %s",
		bs.name, bs.datapathType, strings.Join(names, ","))}, nil
}

// createPort returns the operations that insert a port and its interface; i makes the named UUIDs unique.
func (s *Switch) createPort(ps portSpec, i int) ([]ovsdb.Operation, string, error) {
	iface := &ovsdbmodel.Interface{
		UUID: fmt.Sprintf("newiface%d", i), Name: ps.name, Type: ps.ifaceType, Options: ps.options,
		OfportRequest: ps.ofportRequest, MTURequest: ps.mtuRequest, ExternalIDs: ps.externalIDs,
	}
	port := &ovsdbmodel.Port{UUID: fmt.Sprintf("newport%d", i), Name: ps.name, Interfaces: []string{iface.UUID}}
	ops, err := s.db.Create(iface, port)
	if err != nil {
		return nil, "", err
	}
	return ops, port.UUID, nil
}

// planPorts returns the operations that add the missing ports of specs to br and correct the interface
// columns that differ. Ports not in specs are left alone.
func (s *Switch) planPorts(snap *snapshot, br *ovsdbmodel.Bridge, specs []portSpec) ([]ovsdb.Operation, []string, error) {
	var ops []ovsdb.Operation
	var changes []string
	var added []string
	for i, ps := range specs {
		p := snap.portOnBridge(br, ps.name)
		if p == nil {
			if other := snap.bridgeOfPort(ps.name); other != "" {
				return nil, nil, fmt.Errorf("port %s belongs to bridge %s, not %s", ps.name, other, br.Name)
			}
			o, pu, err := s.createPort(ps, i)
			if err != nil {
				return nil, nil, err
			}
			ops = append(ops, o...)
			added = append(added, pu)
			changes = append(changes, fmt.Sprintf("added port %s to %s", ps.name, br.Name))
			continue
		}
		iface := snap.ifaceOfPort(p)
		if iface == nil {
			return nil, nil, fmt.Errorf("port %s of %s has no interface %s", ps.name, br.Name, ps.name)
		}
		upd := &ovsdbmodel.Interface{
			UUID: iface.UUID, Type: ps.ifaceType, Options: ps.options, OfportRequest: ps.ofportRequest,
			MTURequest: ps.mtuRequest, ExternalIDs: ps.externalIDs,
		}
		var fields []any
		if iface.Type != ps.ifaceType {
			fields = append(fields, &upd.Type)
			changes = append(changes, fmt.Sprintf("set interface %s type=%q", ps.name, ps.ifaceType))
		}
		if !maps.Equal(iface.Options, ps.options) {
			fields = append(fields, &upd.Options)
			changes = append(changes, fmt.Sprintf("set interface %s options=%v", ps.name, ps.options))
		}
		// A pod port asks for no ofport after it exists: clearing or changing the request would renumber it.
		if ps.ofportRequest != nil && !samePtr(iface.OfportRequest, ps.ofportRequest) {
			fields = append(fields, &upd.OfportRequest)
			changes = append(changes, fmt.Sprintf("set interface %s ofport_request=%s", ps.name, ptrString(ps.ofportRequest)))
		}
		if !samePtr(iface.MTURequest, ps.mtuRequest) {
			fields = append(fields, &upd.MTURequest)
			changes = append(changes, fmt.Sprintf("set interface %s mtu_request=%s", ps.name, ptrString(ps.mtuRequest)))
		}
		if ps.externalIDs != nil && !maps.Equal(iface.ExternalIDs, ps.externalIDs) {
			fields = append(fields, &upd.ExternalIDs)
			changes = append(changes, fmt.Sprintf("set interface %s external_ids", ps.name))
		}
		if len(fields) > 0 {
			o, err := s.db.Where(upd).Update(upd, fields...)
			if err != nil {
				return nil, nil, err
			}
			ops = append(ops, o...)
		}
	}
	if len(added) > 0 {
		ref := &ovsdbmodel.Bridge{UUID: br.UUID}
		o, err := s.db.Where(ref).Mutate(ref, model.Mutation{
			Field: &ref.Ports, Mutator: ovsdb.MutateOperationInsert, Value: added,
		})
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, o...)
	}
	return ops, changes, nil
}

// ensure runs plan against the cache; when it returns operations it sends them as one transaction and waits
// until the cache (fed by the monitor, asynchronously) shows that nothing is left to do, so the next call
// and readers see the result.
func (s *Switch) ensure(ctx context.Context, plan func(*snapshot) ([]ovsdb.Operation, []string, error)) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ensureLocked(ctx, plan)
}

// ensureLocked is ensure for a caller that holds s.mu.
func (s *Switch) ensureLocked(ctx context.Context, plan func(*snapshot) ([]ovsdb.Operation, []string, error)) ([]string, error) {
	changes, _, err := s.transactLocked(ctx, plan, false)
	return changes, err
}

// transactLocked is ensureLocked that, with barrier, also increments next_cfg in the transaction and
// returns its new value: ovs-vswitchd sets cur_cfg to it once it has applied the transaction (see
// waitApplied). cfg is 0 when nothing was sent.
func (s *Switch) transactLocked(ctx context.Context, plan func(*snapshot) ([]ovsdb.Operation, []string, error),
	barrier bool) (changes []string, cfg int, err error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return nil, 0, err
	}
	ops, changes, err := plan(snap)
	if err != nil || len(ops) == 0 {
		return nil, 0, err
	}
	selectAt := -1
	if barrier && snap.root != nil {
		root := &ovsdbmodel.OpenvSwitch{UUID: snap.root.UUID}
		bump, err := s.db.Where(root).Mutate(root, model.Mutation{
			Field: &root.NextCfg, Mutator: ovsdb.MutateOperationAdd, Value: 1,
		})
		if err != nil {
			return nil, 0, err
		}
		ops = append(slices.Clip(ops), bump...)
		selectAt = len(ops)
		ops = append(ops, ovsdb.Operation{
			Op: ovsdb.OperationSelect, Table: "Open_vSwitch", Columns: []string{"next_cfg"},
			Where: []ovsdb.Condition{{Column: "_uuid", Function: ovsdb.ConditionEqual, Value: ovsdb.UUID{GoUUID: root.UUID}}},
		})
	}
	s.transactions.Add(1)
	reply, err := s.db.Transact(ctx, ops...)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to send the OVSDB transaction: %w", err)
	}
	if opErrs, err := ovsdb.CheckOperationResults(reply, ops); err != nil {
		errs := []error{err}
		for _, e := range opErrs {
			errs = append(errs, e)
		}
		return nil, 0, fmt.Errorf("failed to commit the OVSDB transaction: %w", errors.Join(errs...))
	}
	if selectAt >= 0 && selectAt < len(reply) && len(reply[selectAt].Rows) == 1 {
		// JSON numbers arrive as float64.
		if v, ok := reply[selectAt].Rows[0]["next_cfg"].(float64); ok {
			cfg = int(v)
		}
	}
	klog.FromContext(ctx).V(2).Info("Updated OVSDB", "bridge", s.bridge, "changes", changes)
	if err := s.waitCache(ctx, func(snap *snapshot) (bool, error) {
		ops, _, err := plan(snap)
		return len(ops) == 0, err
	}); err != nil {
		return nil, 0, fmt.Errorf("failed to see the transaction in the OVSDB cache: %w", err)
	}
	return changes, cfg, nil
}

// waitApplied waits until ovs-vswitchd has applied the configuration numbered cfg (its cur_cfg reached
// it), or until ctx ends or the timeout passes.
func (s *Switch) waitApplied(ctx context.Context, cfg int) error {
	return s.waitFor(ctx, func(ctx context.Context) (bool, error) {
		var roots []ovsdbmodel.OpenvSwitch
		if err := s.db.List(ctx, &roots); err != nil && !errors.Is(err, client.ErrNotFound) {
			return false, fmt.Errorf("failed to read the OVSDB cache: %w", err)
		}
		return len(roots) > 0 && roots[0].CurCfg >= cfg, nil
	})
}

// cachePoll is how often waitCache looks at the cache when no change notification arrives (they are lost
// when libovsdb replaces its cache after a reconnect).
const cachePoll = 50 * time.Millisecond

// waitCache looks at the cache whenever it changes (and every cachePoll) until done reports true or an
// error, or the timeout passes.
func (s *Switch) waitCache(ctx context.Context, done func(*snapshot) (bool, error)) error {
	return s.waitFor(ctx, func(ctx context.Context) (bool, error) {
		snap, err := s.snapshot(ctx)
		if err != nil {
			return false, err
		}
		return done(snap)
	})
}

// waitFor calls check whenever the cache changes (and every cachePoll) until it reports true or an error,
// or the timeout passes; check should read only the rows it needs.
func (s *Switch) waitFor(ctx context.Context, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	t := time.NewTicker(cachePoll)
	defer t.Stop()
	for {
		changed := s.cacheChanged()
		ok, err := check(ctx)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to see ovs-vswitchd/ovsdb-server catch up in time: %w", ctx.Err())
		case <-changed:
		case <-t.C:
		}
	}
}

// cacheChanged returns a channel that is closed at the next change of the cache.
func (s *Switch) cacheChanged() <-chan struct{} {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	return s.changed
}

// notifyCacheChanged wakes the waiters of cacheChanged; libovsdb calls it for every row the monitor adds,
// updates or deletes.
func (s *Switch) notifyCacheChanged() {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func samePtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func ptrString(p *int) string {
	if p == nil {
		return "[]"
	}
	return strconv.Itoa(*p)
}

func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return true
}
