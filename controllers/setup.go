package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Options configures the controllers; zero fields take the defaults below.
type Options struct {
	// LockNamespace is the namespace of the allocation lock Lease (required).
	LockNamespace string
	// LockName is the allocation lock Lease's name; default vxflow-subnet-allocator.
	LockName string
	// LockDuration is how long a crashed holder blocks allocation; default 15s.
	LockDuration time.Duration
	// Identity names this process in the lock; default hostname_random.
	Identity string
	// MaxBatch caps the Nodes one allocation round handles; default 1000.
	MaxBatch int
	// CreateWorkers is how many HostSubnet creates a round runs at once; default 16.
	CreateWorkers int
	// Workers is MaxConcurrentReconciles of the Node and HostSubnet controllers; default 4.
	Workers int
}

func (o *Options) defaults() error {
	if o.LockNamespace == "" {
		return errors.New("the allocation lock namespace is required")
	}
	if o.LockName == "" {
		o.LockName = "vxflow-subnet-allocator"
	}
	if o.LockDuration == 0 {
		o.LockDuration = 15 * time.Second
	}
	if o.LockDuration < 2*time.Second {
		return fmt.Errorf("the allocation lock duration %s is shorter than 2s", o.LockDuration)
	}
	if o.Identity == "" {
		host, _ := os.Hostname()
		o.Identity = host + "_" + string(uuid.NewUUID())
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.CreateWorkers <= 0 {
		o.CreateWorkers = 16
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	return nil
}

// SetupWithManager wires the pool, the allocator and the Node, HostSubnet and ClusterNetwork controllers into
// mgr, and returns the pool for readiness checks.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, o Options) (*Pool, error) {
	if mgr == nil {
		return nil, errors.New("failed to set up controllers: no manager")
	}
	if err := o.defaults(); err != nil {
		return nil, fmt.Errorf("failed to set up controllers: %w", err)
	}
	recorder := mgr.GetEventRecorder("vxflow-controller")
	pool := NewPool()
	if err := pool.Register(ctx, mgr.GetCache()); err != nil {
		return nil, fmt.Errorf("failed to set up the pool: %w", err)
	}
	lock := &leaseLock{
		reader:   mgr.GetAPIReader(),
		writer:   mgr.GetClient(),
		key:      types.NamespacedName{Namespace: o.LockNamespace, Name: o.LockName},
		identity: o.Identity,
		duration: o.LockDuration,
	}
	alloc := newSubnetAllocator(mgr.GetClient(), mgr.GetAPIReader(), lock, recorder, o.MaxBatch, o.CreateWorkers)
	pool.OnFreed(alloc.retryWaiting)
	if err := mgr.Add(alloc); err != nil {
		return nil, fmt.Errorf("failed to add the subnet allocator: %w", err)
	}
	if err := (&NodeReconciler{Client: mgr.GetClient(), Pool: pool, Allocator: alloc, Recorder: recorder}).SetupWithManager(mgr, o.Workers); err != nil {
		return nil, err
	}
	if err := (&HostSubnetReconciler{Client: mgr.GetClient(), Pool: pool, Recorder: recorder}).SetupWithManager(mgr, o.Workers); err != nil {
		return nil, err
	}
	if err := (&ClusterNetworkReconciler{Client: mgr.GetClient(), Pool: pool, Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return pool, nil
}
