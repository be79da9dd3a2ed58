package ovs

// Group commit of pod ports. ovs-vswitchd reconfigures itself after OVSDB transactions that touch its bridges,
// in its single main loop, so 20 CNI ADDs that each commit their own port can cost up to 20 reconfigurations
// and 20 round trips through the Switch's mutex. Instead, EnsurePodPort and DeletePort queue their change and take the Switch's mutex:
// whoever gets it first drains the whole queue into one transaction, and everyone queued meanwhile finds
// their change done when the mutex comes to them. A call alone commits at once (nothing waits to gather a
// batch); a call that arrives while a transaction is in flight rides with the next one.
//
// Each caller keeps its own outcome: a change that cannot be planned (no bridge, a port of another bridge)
// fails alone before the transaction, and when the shared transaction fails, its changes are retried one
// transaction each so that only the faulty one fails.

import (
	"context"
	"fmt"
	"slices"

	"github.com/ovn-org/libovsdb/model"
	"github.com/ovn-org/libovsdb/ovsdb"

	"github.com/vxflow/vxflow/internal/apply/ovs/ovsdbmodel"
)

// portOp is one queued EnsurePodPort or DeletePort.
type portOp struct {
	ctx    context.Context
	name   string
	ids    map[string]string // the interface's external_ids (EnsurePodPort)
	ofport int               // the ofport_request of a port created (EnsurePodPortAt), 0 for none
	delete bool              // DeletePort

	err  error         // the outcome, set before done is closed
	cfg  int           // with a delete: the next_cfg ovs-vswitchd reaches once it has removed the port
	done chan struct{} // closed once the change is in OVSDB and in the cache, or failed
}

// submitPortOp queues op and returns once it has been committed (by this caller or by another that drained
// the queue) and the cache shows it, or it failed.
func (s *Switch) submitPortOp(op *portOp) error {
	op.done = make(chan struct{})
	s.queueMu.Lock()
	s.queue = append(s.queue, op)
	s.queueMu.Unlock()
	for {
		s.mu.Lock()
		select {
		case <-op.done:
			s.mu.Unlock()
			return op.err
		default:
		}
		s.commitQueuedLocked(op.ctx)
		s.mu.Unlock()
	}
}

// commitQueuedLocked takes the queued changes, one per port name (a second change of the same port waits for
// the next round, so that each caller sees the order it asked in), commits them and closes their done
// channels. The caller holds s.mu.
func (s *Switch) commitQueuedLocked(ctx context.Context) {
	s.queueMu.Lock()
	var batch, rest []*portOp
	seen := map[string]bool{}
	for _, op := range s.queue {
		if seen[op.name] {
			rest = append(rest, op)
			continue
		}
		seen[op.name] = true
		batch = append(batch, op)
	}
	s.queue = rest
	s.queueMu.Unlock()
	if len(batch) == 0 {
		return
	}
	s.commitPortOpsLocked(ctx, batch)
	for _, op := range batch {
		close(op.done)
	}
}

// commitPortOpsLocked sets the outcome of each op of batch (distinct names): the changes that can be planned
// go out together, and one at a time when the shared transaction fails.
func (s *Switch) commitPortOpsLocked(ctx context.Context, batch []*portOp) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		for _, op := range batch {
			op.err = err
		}
		return
	}
	var ok []*portOp
	for _, op := range batch {
		if _, _, op.err = s.planPortOps(snap, []*portOp{op}); op.err == nil {
			ok = append(ok, op)
		}
	}
	if len(ok) == 0 {
		return
	}
	// Deletes ask for a barrier: ovs-vswitchd closes a removed port's socket in its main loop (with the
	// userspace datapath, one synchronize_net() in the kernel per port), and DeletePort waits for that rather
	// than leaving the work to whatever the switch does next, such as the ADDs that follow.
	barrier := slices.ContainsFunc(ok, func(op *portOp) bool { return op.delete })
	_, cfg, err := s.transactLocked(ctx, func(snap *snapshot) ([]ovsdb.Operation, []string, error) {
		return s.planPortOps(snap, ok)
	}, barrier)
	if err == nil || len(ok) == 1 {
		for _, op := range ok {
			op.err, op.cfg = err, cfg
		}
		return
	}
	for _, op := range ok {
		_, op.cfg, op.err = s.transactLocked(op.ctx, func(snap *snapshot) ([]ovsdb.Operation, []string, error) {
			return s.planPortOps(snap, []*portOp{op})
		}, op.delete)
	}
}

// planPortOps returns the operations that apply ops (distinct names) to the SDN bridge, as one transaction:
// added and updated ports as planPorts does, deleted ports by removing their reference from the bridge.
func (s *Switch) planPortOps(snap *snapshot, ops []*portOp) ([]ovsdb.Operation, []string, error) {
	br := snap.bridges[s.bridge]
	var specs []portSpec
	var deleted []string
	var changes []string
	for _, op := range ops {
		switch {
		case op.delete:
			if br == nil {
				continue
			}
			if p := snap.portOnBridge(br, op.name); p != nil {
				deleted = append(deleted, p.UUID)
				changes = append(changes, "deleted port "+op.name)
			}
		case br == nil:
			return nil, nil, fmt.Errorf("bridge %s does not exist (EnsureBridge first)", s.bridge)
		default:
			ps := portSpec{name: op.name, externalIDs: op.ids}
			if op.ofport != 0 {
				ps.ofportRequest = ptr(op.ofport)
			}
			specs = append(specs, ps)
		}
	}
	var out []ovsdb.Operation
	if len(specs) > 0 {
		o, c, err := s.planPorts(snap, br, specs)
		if err != nil {
			return nil, nil, err
		}
		out, changes = append(out, o...), append(changes, c...)
	}
	if len(deleted) > 0 {
		// Removing the reference deletes the Port and its Interfaces (they are not root rows).
		ref := &ovsdbmodel.Bridge{UUID: br.UUID}
		o, err := s.db.Where(ref).Mutate(ref, model.Mutation{
			Field: &ref.Ports, Mutator: ovsdb.MutateOperationDelete, Value: deleted,
		})
		if err != nil {
			return nil, nil, err
		}
		out = append(out, o...)
	}
	return out, changes, nil
}
