package agent

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/vxflow/vxflow/internal/model"
)

// PodStore holds the pods attached to this node's bridge and lets a CNI request wait until the sync that
// includes its change has been applied, so that ADD returns only when the pod's flows are on the switch.
type PodStore struct {
	mu      sync.Mutex
	pods    map[string]model.LocalPod // by sandbox ID
	gen     uint64                    // bumped on every change
	applied uint64                    // highest generation a successful sync included
	failed  uint64                    // highest generation a failed sync included
	lastErr error                     // the error of that failed sync
	changed chan struct{}             // closed and replaced whenever applied or failed moves
	trigger func()
	// recheck is set by a Put of a pod the store already holds unchanged: a repeated CNI ADD, which is how
	// a runtime repairs what CHECK found, so the next pod sync must compare with the switch, not memory.
	recheck bool
}

// NewPodStore returns an empty store that calls trigger after every change.
func NewPodStore(trigger func()) *PodStore {
	return &PodStore{pods: map[string]model.LocalPod{}, changed: make(chan struct{}), trigger: trigger}
}

// Seed loads the pods found on the switch at start, before the first sync, so that the first sync keeps
// their flows instead of deleting them.
func (s *PodStore) Seed(pods []model.LocalPod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range pods {
		s.pods[p.SandboxID] = p
	}
	s.gen++
}

// Put records a pod (added or changed) and returns the generation a sync must reach to include it.
func (s *PodStore) Put(pod model.LocalPod) uint64 {
	s.mu.Lock()
	if old, ok := s.pods[pod.SandboxID]; ok && samePod(old, pod) {
		s.recheck = true
	}
	s.pods[pod.SandboxID] = pod
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	s.trigger()
	return gen
}

// Delete forgets a pod and returns the generation a sync must reach to have removed its flows; ok is false
// when the pod was unknown.
func (s *PodStore) Delete(sandboxID string) (gen uint64, ok bool) {
	s.mu.Lock()
	_, ok = s.pods[sandboxID]
	delete(s.pods, sandboxID)
	s.gen++
	gen = s.gen
	s.mu.Unlock()
	s.trigger()
	return gen, ok
}

// Get returns the pod of a sandbox.
func (s *PodStore) Get(sandboxID string) (model.LocalPod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[sandboxID]
	return p, ok
}

// Pending reports whether a change has not been included in a successful or failed sync yet.
func (s *PodStore) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen > max(s.applied, s.failed)
}

// SnapshotForSync is Snapshot for the pod loop; recheck says whether a repeated ADD asked for the switch to
// be compared (and is cleared).
func (s *PodStore) SnapshotForSync() (pods []model.LocalPod, gen uint64, recheck bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	recheck, s.recheck = s.recheck, false
	pods, gen = s.snapshotLocked()
	return pods, gen, recheck
}

// samePod reports whether two records of a pod are equal.
func samePod(a, b model.LocalPod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.SandboxID == b.SandboxID && a.IP == b.IP &&
		bytes.Equal(a.MAC, b.MAC) && a.OFPort == b.OFPort && a.VNID == b.VNID
}

// Snapshot returns the pods, sorted by sandbox ID, and the generation they represent.
func (s *PodStore) Snapshot() ([]model.LocalPod, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *PodStore) snapshotLocked() ([]model.LocalPod, uint64) {
	out := make([]model.LocalPod, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SandboxID < out[j].SandboxID })
	return out, s.gen
}

// Synced records the outcome of a sync that started from the snapshot of generation gen.
func (s *PodStore) Synced(gen uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		if gen > s.applied {
			s.applied = gen
		}
	} else if gen > s.failed {
		s.failed, s.lastErr = gen, err
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Wait blocks until a sync that includes generation gen succeeded, or returns the error of a failed sync
// that included it, or ctx's error.
func (s *PodStore) Wait(ctx context.Context, gen uint64) error {
	for {
		s.mu.Lock()
		applied, failed, lastErr, changed := s.applied, s.failed, s.lastErr, s.changed
		s.mu.Unlock()
		switch {
		case applied >= gen:
			return nil
		case failed >= gen:
			return fmt.Errorf("failed to program the pod's flows: %w", lastErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to see the pod's flows programmed in time: %w", ctx.Err())
		case <-changed:
		}
	}
}
