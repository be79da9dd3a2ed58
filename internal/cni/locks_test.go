package cni

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyedMutex is a unit test: one key is exclusive, different keys run in parallel, tryLock skips a
// held key, and no entries are left behind.
func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			unlock := k.lock("same")
			n := inside.Add(1)
			if n > maxInside.Load() {
				maxInside.Store(n)
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			unlock()
		})
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Errorf("%d holders of one key at once", maxInside.Load())
	}

	unlockA := k.lock("a")
	done := make(chan struct{})
	go func() { k.lock("b")(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("key b waited for key a")
	}
	if _, ok := k.tryLock("a"); ok {
		t.Error("tryLock took a held key")
	}
	unlockA()
	unlock, ok := k.tryLock("a")
	if !ok {
		t.Fatal("tryLock failed on a free key")
	}
	unlock()
	if len(k.locks) != 0 {
		t.Errorf("entries left: %v", k.locks)
	}
}
