package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunnerCoalescesBursts(t *testing.T) {
	var syncs atomic.Int32
	r := NewRunner(50*time.Millisecond, time.Hour, time.Hour, func(context.Context) error {
		syncs.Add(1)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	waitFor(t, func() bool { return syncs.Load() == 1 }, "the initial sync")
	// A trigger after the (periodic) initial sync is served at once; a burst right after it waits out
	// MinInterval and becomes one sync.
	r.Trigger()
	waitFor(t, func() bool { return syncs.Load() == 2 }, "the triggered sync")
	for range 100 {
		r.Trigger()
	}
	waitFor(t, func() bool { return syncs.Load() >= 3 }, "a sync after the burst")
	time.Sleep(200 * time.Millisecond)
	if got := syncs.Load(); got != 3 {
		t.Errorf("100 triggers in a burst caused %d syncs, want 1", got-2)
	}
}

func TestRunnerRetriesFailuresAndResyncsPeriodically(t *testing.T) {
	var syncs atomic.Int32
	r := NewRunner(time.Millisecond, 30*time.Millisecond, 5*time.Millisecond, func(context.Context) error {
		if syncs.Add(1) == 1 {
			return errors.New("switch not ready")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	// 1 failure, a retry, then periodic syncs without any trigger.
	waitFor(t, func() bool { return syncs.Load() >= 4 }, "a retry and periodic resyncs")
}

// fakeClock is the runner's clock in tests: time moves only when the test says, and a wait for MinInterval
// is recorded and ends only when the test releases it.
type fakeClock struct {
	mu      sync.Mutex
	t       time.Time
	waits   []time.Duration
	release chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), release: make(chan time.Time)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	return c.release
}

func (c *fakeClock) recordedWaits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// TestRunnerMinIntervalCountsFromTheLastStart checks when a triggered sync waits: MinInterval is measured from
// the start of the previous sync, so only a trigger soon after a sync started waits, for the rest of it.
func TestRunnerMinIntervalCountsFromTheLastStart(t *testing.T) {
	clock := newFakeClock()
	var syncs atomic.Int32
	block := make(chan struct{})
	r := NewRunner(time.Hour, 100*time.Hour, 100*time.Hour, func(context.Context) error {
		if syncs.Add(1) == 3 {
			<-block // the third sync is a long one
		}
		return nil
	})
	r.now, r.after = clock.now, clock.after
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	waitFor(t, func() bool { return syncs.Load() == 1 }, "the initial sync")

	// After a quiet period longer than MinInterval a trigger syncs at once.
	clock.advance(2 * time.Hour)
	r.Trigger()
	waitFor(t, func() bool { return syncs.Load() == 2 }, "the sync after a quiet period")
	if w := clock.recordedWaits(); len(w) != 0 {
		t.Fatalf("a trigger after a quiet period waited %v", w)
	}

	// A burst 10 minutes after that sync started waits for the other 50 minutes and costs one sync.
	clock.advance(10 * time.Minute)
	for range 50 {
		r.Trigger()
	}
	waitFor(t, func() bool { return len(clock.recordedWaits()) == 1 }, "the runner to wait out MinInterval")
	if w := clock.recordedWaits()[0]; w != 50*time.Minute {
		t.Errorf("a burst 10m after a sync waited %v, want the 50m left of MinInterval", w)
	}
	if got := syncs.Load(); got != 2 {
		t.Fatalf("the burst synced before MinInterval ended (%d syncs)", got)
	}
	clock.advance(50 * time.Minute)
	clock.release <- clock.now()
	waitFor(t, func() bool { return syncs.Load() == 3 }, "the sync after the burst")

	// Triggers during a sync that outlasts MinInterval are served by one sync right after it, without a wait.
	r.Trigger()
	r.Trigger()
	clock.advance(2 * time.Hour)
	close(block)
	waitFor(t, func() bool { return syncs.Load() == 4 }, "the sync after the long one")
	time.Sleep(50 * time.Millisecond)
	if got, w := syncs.Load(), clock.recordedWaits(); got != 4 || len(w) != 1 {
		t.Errorf("after a long sync: %d syncs and waits %v, want 4 syncs and only the earlier wait", got, w)
	}
}

// TestRunnerPeriodicSyncsDoNotDelayChanges checks that a trigger right after a periodic sync is synced at
// once: only syncs that triggers asked for count for MinInterval.
func TestRunnerPeriodicSyncsDoNotDelayChanges(t *testing.T) {
	clock := newFakeClock()
	var syncs atomic.Int32
	r := NewRunner(time.Hour, 20*time.Millisecond, time.Hour, func(context.Context) error {
		syncs.Add(1)
		return nil
	})
	r.now, r.after = clock.now, clock.after
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	waitFor(t, func() bool { return syncs.Load() >= 3 }, "periodic syncs")
	r.Trigger()
	time.Sleep(100 * time.Millisecond)
	if w := clock.recordedWaits(); len(w) != 0 {
		t.Errorf("a trigger after periodic syncs waited %v, want no wait", w)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
