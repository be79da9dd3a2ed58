package agent

import (
	"context"
	"time"
)

// Runner coalesces bursts of change notifications into syncs that are at least MinInterval apart, and
// runs a sync at least every MaxInterval so that drift (a flow deleted by hand, a restarted switch) is
// repaired even when the API is quiet.
//
// MinInterval counts from the start of the previous sync a notification asked for (periodic syncs do not
// count), so a notification after a quiet period is synced at once (a CNI ADD on an idle node does not
// wait), and only a burst right after a sync waits; changes that arrive while a sync runs are served
// together by the next one.
type Runner struct {
	// MinInterval is the shortest time between the starts of two syncs; notifications inside it are merged.
	MinInterval time.Duration
	// MaxInterval is the longest time without a sync.
	MaxInterval time.Duration
	// RetryInterval is how soon a failed sync is retried.
	RetryInterval time.Duration
	// Sync does the work; an error schedules a retry after RetryInterval.
	Sync func(ctx context.Context) error

	kick chan struct{}
	// now and after are time.Now and time.After; tests replace them.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// NewRunner returns a runner; call Run to start it and Trigger to ask for a sync.
func NewRunner(minInterval, maxInterval, retryInterval time.Duration, sync func(context.Context) error) *Runner {
	return &Runner{
		MinInterval:   minInterval,
		MaxInterval:   maxInterval,
		RetryInterval: retryInterval,
		Sync:          sync,
		kick:          make(chan struct{}, 1),
		now:           time.Now,
		after:         time.After,
	}
}

// Trigger asks for a sync soon; it never blocks, and many triggers before the sync starts cost one sync.
func (r *Runner) Trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run syncs once at start and then whenever triggered or due, until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time // start of the last sync a notification asked for
	for {
		kicked := false
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			kicked = true
			// Wait out the rest of MinInterval so that a burst of notifications becomes one sync.
			if wait := r.MinInterval - r.now().Sub(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-r.after(wait):
				}
			}
		case <-timer.C:
		}
		// Notifications that arrived while waiting are served by this sync.
		select {
		case <-r.kick:
			kicked = true
		default:
		}
		// Only syncs that notifications asked for space the next ones: a change right after a periodic
		// (drift-repair) sync is applied at once.
		if kicked {
			last = r.now()
		}
		next := r.MaxInterval
		if err := r.Sync(ctx); err != nil {
			next = r.RetryInterval
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}
