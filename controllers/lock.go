package controllers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// leaseLock is a cluster-wide mutex on a coordination Lease, held only for one allocation round. Two
// controller processes (leader election off, or a leader that lost its lease without noticing) take turns
// through it, so each round's uncached read sees every subnet the previous round created.
//
// Expiry is judged the way client-go's leader election does: by how long this process has seen the same
// record unchanged, on its own clock, so clock skew between processes does not matter.
type leaseLock struct {
	reader   client.Reader // uncached
	writer   client.Client
	key      types.NamespacedName
	identity string
	duration time.Duration

	observedRV   string
	observedTime time.Time
	acquiredAt   time.Time
	held         *coordinationv1.Lease
}

// Acquire blocks until the lock is this process's or ctx ends.
func (l *leaseLock) Acquire(ctx context.Context) error {
	for {
		ok, err := l.tryAcquire(ctx)
		if ok {
			return nil
		}
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			lockFailures.Inc()
		}
		// A short random pause: the holder releases after one round, usually within milliseconds.
		wait := 5*time.Millisecond + rand.N(20*time.Millisecond)
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to acquire allocation lock %s: %w", l.key, ctx.Err())
		case <-time.After(wait):
		}
	}
}

func (l *leaseLock) tryAcquire(ctx context.Context) (bool, error) {
	now := time.Now()
	lease := &coordinationv1.Lease{}
	err := l.reader.Get(ctx, l.key, lease)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: l.key.Namespace, Name: l.key.Name},
			Spec:       l.spec(now, 0),
		}
		if err := l.writer.Create(ctx, lease); err != nil {
			return false, fmt.Errorf("failed to create allocation lock %s: %w", l.key, err)
		}
		l.took(lease, now)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to get allocation lock %s: %w", l.key, err)
	}
	if lease.ResourceVersion != l.observedRV {
		l.observedRV, l.observedTime = lease.ResourceVersion, now
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	if holder != "" && holder != l.identity && now.Sub(l.observedTime) < l.duration {
		return false, nil
	}
	transitions := ptr.Deref(lease.Spec.LeaseTransitions, 0)
	if holder != l.identity {
		transitions++
	}
	lease.Spec = l.spec(now, transitions)
	if err := l.writer.Update(ctx, lease); err != nil {
		return false, fmt.Errorf("failed to take allocation lock %s: %w", l.key, err)
	}
	l.took(lease, now)
	return true, nil
}

func (l *leaseLock) spec(now time.Time, transitions int32) coordinationv1.LeaseSpec {
	t := metav1.NewMicroTime(now)
	return coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(l.identity),
		LeaseDurationSeconds: ptr.To(int32(l.duration / time.Second)),
		AcquireTime:          &t,
		RenewTime:            &t,
		LeaseTransitions:     ptr.To(transitions),
	}
}

func (l *leaseLock) took(lease *coordinationv1.Lease, now time.Time) {
	l.held, l.acquiredAt = lease, now
	l.observedRV, l.observedTime = lease.ResourceVersion, now
}

// Fresh reports whether the lock was taken recently enough that no other process can think it expired: a
// round stops creating objects once half the lease duration has passed.
func (l *leaseLock) Fresh() bool {
	return l.held != nil && time.Since(l.acquiredAt) < l.duration/2
}

// Release hands the lock back; when someone took it over meanwhile (after an expiry), there is nothing to do.
func (l *leaseLock) Release(ctx context.Context) error {
	lease := l.held
	l.held = nil
	if lease == nil {
		return nil
	}
	lease.Spec.HolderIdentity = ptr.To("")
	if err := l.writer.Update(ctx, lease); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to release allocation lock %s: %w", l.key, err)
	}
	l.observedRV = lease.ResourceVersion
	return nil
}
