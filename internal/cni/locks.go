package cni

import "sync"

// keyedMutex serialises requests for one sandbox while letting requests for different sandboxes run in
// parallel (OpenShift SDN's server had one worker for all pods).
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// lock blocks until key is free and returns the function that frees it.
func (k *keyedMutex) lock(key string) func() {
	e := k.ref(key)
	e.mu.Lock()
	return func() { e.mu.Unlock(); k.unref(key, e) }
}

// tryLock takes key only if it is free; GC uses it to skip sandboxes a request is working on.
func (k *keyedMutex) tryLock(key string) (func(), bool) {
	e := k.ref(key)
	if !e.mu.TryLock() {
		k.unref(key, e)
		return nil, false
	}
	return func() { e.mu.Unlock(); k.unref(key, e) }, true
}

func (k *keyedMutex) ref(key string) *keyedEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	return e
}

func (k *keyedMutex) unref(key string, e *keyedEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(k.locks, key)
	}
}
