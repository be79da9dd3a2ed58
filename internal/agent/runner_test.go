package agent

import (
	"context"
	"errors"
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
	for range 100 {
		r.Trigger()
	}
	waitFor(t, func() bool { return syncs.Load() >= 2 }, "a sync after the burst")
	time.Sleep(200 * time.Millisecond)
	if got := syncs.Load(); got != 2 {
		t.Errorf("100 triggers in a burst caused %d syncs after the initial one, want 1", got-1)
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
