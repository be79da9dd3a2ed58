package nft

import (
	"context"
	"sync"
	"time"

	"github.com/vxflow/vxflow/internal/render/nftables"
)

// Fake is a stateful Interface for tests of the agent: it keeps the last ruleset it was given and can fail
// on demand, like a kernel that refuses a transaction.
type Fake struct {
	mu sync.Mutex
	// Err, when set, makes the next Sync fail and leave the table unchanged.
	Err error
	// Syncs counts successful syncs.
	Syncs int
	// Triggers collects the trigger times passed to successful syncs.
	Triggers []time.Time
	current  *nftables.Ruleset
	full     bool
}

// NewFake returns a Fake whose table does not exist yet.
func NewFake() *Fake {
	return &Fake{full: true}
}

// Sync is part of Interface.
func (f *Fake) Sync(ctx context.Context, desired *nftables.Ruleset, triggerTimes ...time.Time) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if f.Err != nil {
		err := f.Err
		f.Err, f.full = nil, true
		return Result{}, err
	}
	res := Result{Full: f.full}
	if f.full {
		res.Reason = "first sync"
	}
	f.current, f.full = desired, false
	f.Syncs++
	f.Triggers = append(f.Triggers, triggerTimes...)
	return res, nil
}

// Close is part of Interface.
func (f *Fake) Close() error { return nil }

// Dump returns the table as `nft list table ip vxflow` would print it, or "" before the first sync.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current == nil {
		return ""
	}
	return f.current.String()
}
