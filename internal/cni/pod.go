package cni

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/klog/v2"

	"github.com/vxflow/vxflow/internal/apply/link"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/cni/wire"
	"github.com/vxflow/vxflow/internal/model"
)

// rollbackTimeout bounds the clean-up of a failed ADD, which runs even when the request was cancelled.
const rollbackTimeout = 30 * time.Second

// HostVethName is the host end's name for an attachment: "veth" and 11 hex digits of a hash of the container
// ID and interface name, so a repeated ADD or a DEL without a record finds the same link and port.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "veth" + hex.EncodeToString(sum[:])[:11]
}

// add attaches a pod: address, veth, OVS port, flows. A repeated ADD for the same container and interface
// keeps the address and port and reconfigures whatever differs.
func (s *Server) add(ctx context.Context, req *wire.Request, conf *wire.NetConf) (types.Result, error) {
	podArgs, err := wire.ParsePodArgs(req.Args)
	if err != nil {
		return nil, &cniError{code: types.ErrInvalidEnvironmentVariables, msg: "failed to parse CNI_ARGS", err: err}
	}
	if ok, err := link.PodNetNSExists(req.Netns); err != nil || !ok {
		return nil, &cniError{code: wire.CodeInvalidNetNS, msg: fmt.Sprintf("%s is not a network namespace", req.Netns), err: err}
	}
	nc, err := s.nodeConfig()
	if err != nil {
		return nil, err
	}
	tm := newTimings()
	unlock := s.locks.lock(req.ContainerID)
	defer unlock()
	tm.mark("lock")

	k := attKey{req.ContainerID, req.IfName}
	att, exists := s.store.get(k)
	if exists && !nc.Subnet.Contains(att.IP) {
		s.log.Info("Detached a pod whose address left the node subnet", "pod", klog.KRef(att.Namespace, att.Name),
			"container", att.ContainerID, "ip", att.IP, "subnet", nc.Subnet, "reason", "SubnetChanged")
		if err := s.teardown(ctx, att, true); err != nil {
			return nil, err
		}
		exists = false
	}
	if exists && (att.Netns != req.Netns || att.Namespace != podArgs.Namespace || att.Name != podArgs.Name) {
		att.Netns, att.Namespace, att.Name = req.Netns, podArgs.Namespace, podArgs.Name
		if err := s.store.update(att); err != nil {
			return nil, err
		}
	}
	if !exists {
		att, err = s.store.allocate(nc.Subnet, nc.Gateway, Attachment{
			ContainerID: req.ContainerID,
			IfName:      req.IfName,
			Netns:       req.Netns,
			Namespace:   podArgs.Namespace,
			Name:        podArgs.Name,
			HostIfName:  HostVethName(req.ContainerID, req.IfName),
		})
		if errors.Is(err, ErrPoolExhausted) {
			return nil, &cniError{code: wire.CodePoolExhausted,
				msg: fmt.Sprintf("the node's pod subnet %s has no free address", nc.Subnet), err: err}
		}
		if err != nil {
			return nil, err
		}
		s.metrics.allocated.Inc()
	}
	tm.mark("address")
	result, err := s.attach(ctx, nc, att, conf, tm, !exists)
	if err != nil {
		if !exists {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			if terr := s.teardown(rctx, att, true); terr != nil {
				s.log.Error(terr, "Failed to roll back a failed ADD", "container", att.ContainerID, "ip", att.IP)
			}
		}
		return nil, err
	}
	s.log.Info("Attached a pod", "pod", klog.KRef(att.Namespace, att.Name), "container", att.ContainerID,
		"ip", att.IP, "port", att.HostIfName, "reason", map[bool]string{true: "RepeatedAdd", false: "Add"}[exists],
		"durations", tm)
	return result, nil
}

// timings records how long each step of a request took, for the logs.
type timings struct {
	last  time.Time
	steps []string
}

func newTimings() *timings { return &timings{last: time.Now()} }

// mark ends the step called name.
func (t *timings) mark(name string) {
	now := time.Now()
	t.steps = append(t.steps, name+"="+now.Sub(t.last).Round(10*time.Microsecond).String())
	t.last = now
}

// String renders the steps as "lock=10µs address=1.2ms ...".
func (t *timings) String() string { return strings.Join(t.steps, " ") }

// PodOfport is the OpenFlow port a new pod port asks for: the address's offset in the node subnet plus one
// (the pod at .2 of a /23 gets 3, the first pod port), or 0 when that is past the highest requestable number.
func PodOfport(subnet netip.Prefix, ip netip.Addr) int {
	if !subnet.Contains(ip) || !ip.Is4() {
		return 0
	}
	a, n := ip.As4(), subnet.Masked().Addr().As4()
	offset := binary.BigEndian.Uint32(a[:]) - binary.BigEndian.Uint32(n[:])
	if offset < 2 || offset+1 > ovs.MaxOfport {
		return 0
	}
	return int(offset) + 1
}

// attach makes the veth, the OVS port and the flows of an allocated attachment and builds the CNI result.
// A fresh attachment asks for PodOfport's number; when no other port has it, the pod's flows are programmed
// while the veth and the port are made instead of after them (flows for a port that does not exist yet match
// nothing), and programmed again only if ovs-vswitchd gave the port another number.
func (s *Server) attach(ctx context.Context, nc NodeNetConfig, att Attachment, conf *wire.NetConf, tm *timings, fresh bool) (types.Result, error) {
	want := 0
	if fresh {
		want = PodOfport(nc.Subnet, att.IP)
	}
	var early chan error
	if want != 0 {
		if free, err := s.ports.OfportFree(ctx, att.HostIfName, want); err == nil && free {
			early = make(chan error, 1)
			go func() { early <- s.network.PodAttached(ctx, localPod(att, want)) }()
		}
	}
	// The early flows are waited for on every return, so that a rollback's PodDetached comes after them.
	earlyErr := func() (done bool, err error) {
		if early == nil {
			return false, nil
		}
		err, early = <-early, nil
		return true, err
	}
	spec := s.vethSpec(nc, att)
	veth, err := link.SetupPodVeth(spec)
	if err != nil {
		_, _ = earlyErr()
		return nil, &cniError{code: wire.CodeSetupFailed, msg: "failed to set up the pod's interface", err: err}
	}
	tm.mark("veth")
	ofport, err := s.ports.EnsurePodPortAt(ctx, att.HostIfName, externalIDs(att), want)
	if err != nil {
		_, _ = earlyErr()
		return nil, &cniError{code: wire.CodeSetupFailed, msg: fmt.Sprintf("failed to add port %s to br0", att.HostIfName), err: err}
	}
	tm.mark("port")
	s.setOFPort(att.key(), ofport)
	done, err := earlyErr()
	if !done || err != nil || ofport != want {
		if done && err == nil {
			s.log.Info("Reprogramming a pod's flows", "container", att.ContainerID, "requested", want, "ofport", ofport,
				"reason", "OfportTaken")
		}
		err = s.network.PodAttached(ctx, localPod(att, ofport))
	}
	if err != nil {
		return nil, &cniError{code: wire.CodeSetupFailed, msg: "failed to program the pod's flows", err: err}
	}
	tm.mark("flows")
	ifIndex := 1
	res := &types100.Result{
		CNIVersion: wire.CNIVersion,
		Interfaces: []*types100.Interface{
			{Name: att.HostIfName, Mac: veth.HostMAC.String()},
			{Name: att.IfName, Mac: veth.PodMAC.String(), Sandbox: att.Netns},
		},
		IPs: []*types100.IPConfig{{
			Interface: &ifIndex,
			Address:   net.IPNet{IP: att.IP.AsSlice(), Mask: net.CIDRMask(nc.Subnet.Bits(), 32)},
			Gateway:   nc.Gateway.AsSlice(),
		}},
		DNS: conf.DNS,
	}
	for _, r := range spec.Routes {
		rt := &types.Route{Dst: net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}}
		if r.Gateway.IsValid() {
			rt.GW = r.Gateway.AsSlice()
		} else {
			scope := 253 // RT_SCOPE_LINK: on-link, not "via the default gateway"
			rt.Scope = &scope
		}
		res.Routes = append(res.Routes, rt)
	}
	return res, nil
}

// vethSpec declares the pod's interface from the node's network.
func (s *Server) vethSpec(nc NodeNetConfig, att Attachment) link.PodVethSpec {
	routes := []link.PodRoute{{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: nc.Gateway}}
	for _, cn := range nc.ClusterNetworks {
		routes = append(routes, link.PodRoute{Dst: cn.Masked()})
	}
	if nc.ServiceNetwork.IsValid() {
		routes = append(routes, link.PodRoute{Dst: nc.ServiceNetwork.Masked(), Gateway: nc.Gateway})
	}
	return link.PodVethSpec{
		HostNetNS:  s.cfg.HostNetNS,
		PodNetNS:   att.Netns,
		IfName:     att.IfName,
		HostIfName: att.HostIfName,
		MTU:        nc.MTU,
		MAC:        model.PodMAC(att.IP),
		Address:    netip.PrefixFrom(att.IP, nc.Subnet.Bits()),
		Routes:     routes,
		DisableTxChecksum: s.cfg.PodTxChecksum == ChecksumOffloadOff ||
			(s.cfg.PodTxChecksum == ChecksumOffloadAuto && nc.Datapath == model.DatapathNetdev),
	}
}

func externalIDs(a Attachment) map[string]string {
	return map[string]string{
		ExternalIDSandbox:      a.ContainerID,
		ExternalIDIfName:       a.IfName,
		ExternalIDIP:           a.IP.String(),
		ExternalIDPodNamespace: a.Namespace,
		ExternalIDPodName:      a.Name,
	}
}

// teardown removes an attachment in the order that keeps the address and ofport from being reused too early:
// flows (through the agent), port, veth, then the address. It stops at the first failure so a retry finishes.
func (s *Server) teardown(ctx context.Context, a Attachment, detach bool) error {
	if detach {
		if err := s.network.PodDetached(ctx, a.ContainerID); err != nil {
			return &cniError{code: wire.CodeSetupFailed, msg: "failed to remove the pod's flows", err: err}
		}
	}
	if err := s.ports.DeletePort(ctx, a.HostIfName); err != nil {
		return &cniError{code: wire.CodeSetupFailed, msg: fmt.Sprintf("failed to delete port %s from br0", a.HostIfName), err: err}
	}
	s.setOFPort(a.key(), 0)
	if err := link.DeletePodVeth(s.cfg.HostNetNS, a.HostIfName); err != nil {
		return &cniError{code: wire.CodeSetupFailed, msg: "failed to delete the pod's veth", err: err}
	}
	if err := s.store.release(a); err != nil {
		return &cniError{code: wire.CodeSetupFailed, msg: "failed to release the pod's address", err: err}
	}
	s.metrics.allocated.Dec()
	return nil
}

// del detaches a pod; an attachment the server does not know succeeds (after removing a port or veth that
// carries its name, in case the record was lost).
func (s *Server) del(ctx context.Context, req *wire.Request) error {
	unlock := s.locks.lock(req.ContainerID)
	defer unlock()
	att, ok := s.store.get(attKey{req.ContainerID, req.IfName})
	if !ok {
		name := HostVethName(req.ContainerID, req.IfName)
		if err := s.ports.DeletePort(ctx, name); err != nil {
			s.log.Error(err, "Failed to delete the port of an unknown attachment", "container", req.ContainerID, "port", name)
		}
		if err := link.DeletePodVeth(s.cfg.HostNetNS, name); err != nil {
			s.log.Error(err, "Failed to delete the veth of an unknown attachment", "container", req.ContainerID, "veth", name)
		}
		s.log.V(2).Info("Ignored DEL of an unknown attachment", "container", req.ContainerID, "ifName", req.IfName)
		return nil
	}
	if err := s.teardown(ctx, att, true); err != nil {
		return err
	}
	s.log.Info("Detached a pod", "pod", klog.KRef(att.Namespace, att.Name), "container", att.ContainerID,
		"ip", att.IP, "reason", "Del")
	return nil
}

// check verifies everything ADD made; the error lists every problem found.
func (s *Server) check(ctx context.Context, req *wire.Request, conf *wire.NetConf) error {
	nc, err := s.nodeConfig()
	if err != nil {
		return err
	}
	unlock := s.locks.lock(req.ContainerID)
	defer unlock()
	att, ok := s.store.get(attKey{req.ContainerID, req.IfName})
	if !ok {
		return &cniError{code: wire.CodeCheckFailed,
			msg: fmt.Sprintf("vxflow has no attachment of container %s interface %s", req.ContainerID, req.IfName)}
	}
	var probs []string
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return &cniError{code: types.ErrDecodingFailure, msg: "failed to parse prevResult", err: err}
		}
		prev, err := types100.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return &cniError{code: types.ErrDecodingFailure, msg: "failed to convert prevResult", err: err}
		}
		found := false
		for _, ip := range prev.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap() == att.IP {
				found = true
			}
		}
		if !found {
			probs = append(probs, fmt.Sprintf("prevResult does not hold the pod's address %s", att.IP))
		}
	}
	if err := link.CheckPodInterface(s.vethSpec(nc, att)); err != nil {
		probs = append(probs, err.Error())
	}
	ports, err := s.ports.ListPodPorts(ctx)
	if err != nil {
		return &cniError{code: wire.CodeCheckFailed, msg: "failed to list the ports of br0", err: err}
	}
	ofport := 0
	portFound := false
	for _, p := range ports {
		if p.Name != att.HostIfName {
			continue
		}
		portFound = true
		switch {
		case p.Ofport <= 0:
			probs = append(probs, fmt.Sprintf("OVS port %s has no OpenFlow port number (ovs-vswitchd could not open it)", p.Name))
		case p.ExternalIDs[ExternalIDSandbox] != att.ContainerID || p.ExternalIDs[ExternalIDIP] != att.IP.String():
			probs = append(probs, fmt.Sprintf("OVS port %s has external_ids sandbox=%q ip=%q, want %q and %q", p.Name,
				p.ExternalIDs[ExternalIDSandbox], p.ExternalIDs[ExternalIDIP], att.ContainerID, att.IP))
		default:
			ofport = p.Ofport
		}
	}
	if !portFound {
		probs = append(probs, fmt.Sprintf("OVS port %s is missing from br0", att.HostIfName))
	}
	if ofport > 0 {
		s.setOFPort(att.key(), ofport)
		present, err := s.network.PodFlowsPresent(ctx, localPod(att, ofport))
		if err != nil {
			return &cniError{code: wire.CodeCheckFailed, msg: "failed to read the pod's flows", err: err}
		}
		if !present {
			probs = append(probs, fmt.Sprintf("the flows of %s (ofport %d) are missing from br0", att.IP, ofport))
		}
	}
	if len(probs) > 0 {
		return &cniError{code: wire.CodeCheckFailed, msg: fmt.Sprintf("the network of pod %s (container %s, %s) is broken: %s",
			klog.KRef(att.Namespace, att.Name), att.ContainerID, att.IP, strings.Join(probs, "; "))}
	}
	return nil
}

// gc removes every attachment the runtime no longer lists and every pod port without an attachment. Without a
// list (cnitool's GC sends none) it removes nothing: the runtime has already sent DEL for what it knew.
// Attachments a request is working on right now are skipped.
func (s *Server) gc(ctx context.Context, conf *wire.NetConf) error {
	if conf.ValidAttachments == nil {
		s.log.V(2).Info("Ignored GC without a list of valid attachments")
		return nil
	}
	valid := map[attKey]bool{}
	for _, a := range conf.ValidAttachments {
		valid[attKey{a.ContainerID, a.IfName}] = true
	}
	var errs []error
	for _, a := range s.store.list() {
		if valid[a.key()] {
			continue
		}
		if err := s.collect(ctx, a, true, "NotInValidAttachments"); err != nil {
			errs = append(errs, err)
		}
	}
	_, perr := s.collectPorts(ctx, "GC")
	errs = append(errs, perr)
	if err := errors.Join(errs...); err != nil {
		return &cniError{code: wire.CodeSetupFailed, msg: "failed to collect stale attachments", err: err}
	}
	return nil
}

// collect tears a stale attachment down unless a request holds its sandbox.
func (s *Server) collect(ctx context.Context, a Attachment, detach bool, reason string) error {
	unlock, ok := s.locks.tryLock(a.ContainerID)
	if !ok {
		return nil
	}
	defer unlock()
	cur, ok := s.store.get(a.key())
	if !ok || cur.IP != a.IP {
		return nil
	}
	if err := s.teardown(ctx, cur, detach); err != nil {
		return fmt.Errorf("failed to collect %s (container %s): %w", cur.IP, cur.ContainerID, err)
	}
	s.log.Info("Collected a stale attachment", "pod", klog.KRef(cur.Namespace, cur.Name), "container", cur.ContainerID,
		"ip", cur.IP, "port", cur.HostIfName, "reason", reason)
	return nil
}

// collectPorts deletes pod ports (and their veths) that carry the server's sandbox key but belong to no
// attachment: left by a crash between DEL's steps or by a lost record.
func (s *Server) collectPorts(ctx context.Context, reason string) ([]string, error) {
	ports, err := s.ports.ListPodPorts(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list the ports of br0: %w", err)
	}
	var deleted []string
	owned := map[string]bool{}
	for _, a := range s.store.list() {
		owned[a.HostIfName] = true
	}
	var errs []error
	for _, p := range ports {
		sandbox := p.ExternalIDs[ExternalIDSandbox]
		if sandbox == "" || owned[p.Name] {
			continue
		}
		unlock, ok := s.locks.tryLock(sandbox)
		if !ok {
			continue
		}
		if err := s.ports.DeletePort(ctx, p.Name); err != nil {
			errs = append(errs, fmt.Errorf("failed to delete the stale port %s: %w", p.Name, err))
		} else if err := link.DeletePodVeth(s.cfg.HostNetNS, p.Name); err != nil {
			errs = append(errs, err)
		} else {
			deleted = append(deleted, p.Name)
			s.log.Info("Collected a stale pod port", "port", p.Name, "container", sandbox,
				"ip", p.ExternalIDs[ExternalIDIP], "reason", reason)
		}
		unlock()
	}
	return deleted, errors.Join(errs...)
}

// ReconcileReport says what Reconcile found and collected.
type ReconcileReport struct {
	// Kept counts the attachments whose sandbox still runs.
	Kept int
	// Collected are the attachments whose network namespace was gone; their port, veth and address were freed.
	Collected []Attachment
	// PortsDeleted are pod ports of br0 that belonged to no attachment.
	PortsDeleted []string
}

// Reconcile compares the persisted attachments with the running sandboxes (their network namespaces) and
// with br0's ports, and collects what leaked: attachments of vanished sandboxes (port, veth, address) and
// ports without an attachment. It learns the ofports of the others for Pods. The agent calls it at start,
// before Serve; it does not call PodDetached (the agent's first full sync renders only Pods).
func (s *Server) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	ports, err := s.ports.ListPodPorts(ctx)
	if err != nil {
		return rep, fmt.Errorf("failed to reconcile the CNI attachments: failed to list the ports of br0: %w", err)
	}
	byName := map[string]int{}
	for _, p := range ports {
		byName[p.Name] = p.Ofport
	}
	var errs []error
	for _, a := range s.store.list() {
		alive, err := link.PodNetNSExists(a.Netns)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !alive {
			if err := s.collect(ctx, a, false, "SandboxGone"); err != nil {
				errs = append(errs, err)
				continue
			}
			rep.Collected = append(rep.Collected, a)
			continue
		}
		rep.Kept++
		if ofport, ok := byName[a.HostIfName]; ok {
			s.setOFPort(a.key(), ofport)
		}
	}
	deleted, err := s.collectPorts(ctx, "NoAttachment")
	rep.PortsDeleted = deleted
	if err != nil {
		errs = append(errs, err)
	}
	s.log.Info("Reconciled the CNI attachments", "kept", rep.Kept, "collected", len(rep.Collected),
		"portsDeleted", len(rep.PortsDeleted))
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("failed to reconcile the CNI attachments: %w", err)
	}
	return rep, nil
}
