package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/ipam"
)

// Event reasons the controller writes on Nodes and HostSubnets.
const (
	eventSubnetPoolExhausted    = "SubnetPoolExhausted"
	eventNoUsableNodeIP         = "NoUsableNodeIP"
	eventStaleHostSubnetDeleted = "StaleHostSubnetDeleted"
	eventHostIPUpdated          = "HostIPUpdated"
	eventHostIPMismatch         = "HostIPMismatch"
	eventAllocationFailed       = "AllocationFailed"
)

// subnetAllocator creates the HostSubnets of Nodes that need one, in rounds. A round takes the cluster-wide
// allocation lock, reads ClusterNetwork default and every HostSubnet from the API server (not the cache),
// rebuilds the ledger from them, allocates for every pending Node that still has no HostSubnet, creates the
// objects and releases the lock. Rounds are serialized in this process by the single run loop, and across
// processes by the lock, so no two rounds ever decide from the same view: this is the uniqueness check that
// holds even when two controllers run without leader election. Requests that arrive during a round are
// batched into the next one, which keeps the uncached reads few when thousands of Nodes join at once.
type subnetAllocator struct {
	client    client.Client
	apiReader client.Reader
	lock      *leaseLock
	recorder  events.EventRecorder
	maxBatch  int
	workers   int

	mu sync.Mutex
	// pending are Nodes to allocate for in the next round.
	pending map[string]struct{}
	// waiting are Nodes that found no free subnet (or no ClusterNetwork); they are retried when the pool
	// reports freed capacity.
	waiting map[string]struct{}
	wake    chan struct{}
}

func newSubnetAllocator(c client.Client, r client.Reader, lock *leaseLock, rec events.EventRecorder, maxBatch, workers int) *subnetAllocator {
	return &subnetAllocator{
		client: c, apiReader: r, lock: lock, recorder: rec, maxBatch: maxBatch, workers: workers,
		pending: map[string]struct{}{}, waiting: map[string]struct{}{}, wake: make(chan struct{}, 1),
	}
}

// Request asks for a HostSubnet for the Node called name; it returns at once and is idempotent.
func (a *subnetAllocator) Request(name string) {
	a.mu.Lock()
	a.pending[name] = struct{}{}
	a.mu.Unlock()
	a.signal()
}

// retryWaiting moves every waiting Node back to pending; the pool calls it when capacity may have come back.
func (a *subnetAllocator) retryWaiting() {
	a.mu.Lock()
	n := len(a.waiting)
	for name := range a.waiting {
		a.pending[name] = struct{}{}
	}
	clear(a.waiting)
	nodesWaiting.Set(0)
	a.mu.Unlock()
	if n > 0 {
		a.signal()
	}
}

func (a *subnetAllocator) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// NeedLeaderElection is part of manager.LeaderElectionRunnable: only the leader allocates.
func (a *subnetAllocator) NeedLeaderElection() bool { return true }

// Start is part of manager.Runnable: it runs rounds until ctx ends.
func (a *subnetAllocator) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("subnet-allocator")
	ctx = ctrl.LoggerInto(ctx, log)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		for ctx.Err() == nil {
			names := a.take()
			if len(names) == 0 {
				break
			}
			a.round(ctx, names)
		}
	}
}

// take removes up to maxBatch pending names.
func (a *subnetAllocator) take() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var names []string
	for n := range a.pending {
		if len(names) == a.maxBatch {
			break
		}
		names = append(names, n)
		delete(a.pending, n)
	}
	slices.Sort(names) // Allocation order within a round does not matter, but reproducible logs help.
	return names
}

// retryLater puts names back after a pause, so a failing API server is not hammered.
func (a *subnetAllocator) retryLater(names []string, after time.Duration) {
	time.AfterFunc(after, func() {
		for _, n := range names {
			a.Request(n)
		}
	})
}

func (a *subnetAllocator) park(names ...string) {
	a.mu.Lock()
	for _, n := range names {
		a.waiting[n] = struct{}{}
	}
	nodesWaiting.Set(float64(len(a.waiting)))
	a.mu.Unlock()
}

// round allocates for names under the lock; see subnetAllocator.
func (a *subnetAllocator) round(ctx context.Context, names []string) {
	log := ctrl.LoggerFrom(ctx)
	start := time.Now()
	defer func() {
		roundDuration.Observe(time.Since(start).Seconds())
		roundSize.Observe(float64(len(names)))
	}()
	if err := a.lock.Acquire(ctx); err != nil {
		if ctx.Err() == nil {
			log.Error(err, "Failed to take the allocation lock")
			a.retryLater(names, time.Second)
		}
		return
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.lock.Release(rctx); err != nil {
			log.Error(err, "Failed to release the allocation lock")
		}
	}()

	creates, err := a.plan(ctx, names)
	if err != nil {
		log.Error(err, "Failed to plan an allocation round", "nodes", len(names))
		allocationFailures.WithLabelValues("api_error").Add(float64(len(names)))
		a.retryLater(names, time.Second)
		return
	}
	a.create(ctx, creates)
	log.V(2).Info("Finished an allocation round", "requested", len(names), "created", len(creates),
		"duration", time.Since(start))
}

// plannedSubnet is one HostSubnet to create and the Node it is for.
type plannedSubnet struct {
	node *corev1.Node
	hs   *vxflowv1alpha1.HostSubnet
}

// plan reads the API server and decides a subnet for each Node that needs one.
func (a *subnetAllocator) plan(ctx context.Context, names []string) ([]plannedSubnet, error) {
	log := ctrl.LoggerFrom(ctx)
	cn := &vxflowv1alpha1.ClusterNetwork{}
	if err := a.apiReader.Get(ctx, types.NamespacedName{Name: vxflowv1alpha1.ClusterNetworkName}, cn); err != nil {
		if apierrors.IsNotFound(err) {
			log.Info("Deferred allocation until ClusterNetwork default exists", "nodes", len(names), "reason", "NoClusterNetwork")
			allocationFailures.WithLabelValues("no_cluster_network").Add(float64(len(names)))
			a.park(names...)
			return nil, nil
		}
		return nil, fmt.Errorf("failed to get ClusterNetwork %s: %w", vxflowv1alpha1.ClusterNetworkName, err)
	}
	n, err := parseNetwork(&cn.Spec)
	if err != nil {
		log.Error(err, "Deferred allocation: ClusterNetwork default is unusable", "reason", "InvalidSpec")
		allocationFailures.WithLabelValues("invalid_cluster_network").Add(float64(len(names)))
		a.park(names...)
		return nil, nil
	}
	list := &vxflowv1alpha1.HostSubnetList{}
	if err := a.apiReader.List(ctx, list); err != nil {
		return nil, fmt.Errorf("failed to list HostSubnets: %w", err)
	}
	exists := make(map[string]bool, len(list.Items))
	claims := make([]ipam.Claim, 0, len(list.Items))
	for i := range list.Items {
		exists[list.Items[i].Name] = true
		claims = append(claims, claimOf(&list.Items[i]))
	}
	ledger, err := ipam.NewLedger(n.ranges, claims)
	if err != nil {
		return nil, fmt.Errorf("failed to rebuild the ledger: %w", err)
	}
	var planned []plannedSubnet
	var exhausted []*corev1.Node
	for _, name := range names {
		if exists[name] {
			continue // Created meanwhile (by us in an earlier round, another controller or a person).
		}
		node := &corev1.Node{}
		if err := a.client.Get(ctx, types.NamespacedName{Name: name}, node); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("failed to get Node %s: %w", name, err)
		}
		ip, _ := nodeIP(node, n)
		if !ip.IsValid() {
			continue // The Node reconciler reports it.
		}
		p, err := ledger.Allocate(name, time.Now())
		if errors.Is(err, ipam.ErrExhausted) {
			exhausted = append(exhausted, node)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to allocate a subnet for Node %s: %w", name, err)
		}
		planned = append(planned, plannedSubnet{node: node, hs: newHostSubnet(node, ip, p)})
	}
	if len(exhausted) > 0 {
		total, used := ledger.Capacity()
		for _, node := range exhausted {
			a.park(node.Name)
			allocationFailures.WithLabelValues("exhausted").Inc()
			a.recorder.Eventf(node, nil, corev1.EventTypeWarning, eventSubnetPoolExhausted, "Allocate",
				"No free subnet for this Node: %d of %d subnets allocated; add a range to ClusterNetwork %s",
				used, total, vxflowv1alpha1.ClusterNetworkName)
		}
		log.Info("Found no free subnet", "nodes", len(exhausted), "allocated", used, "total", total, "reason", "PoolExhausted")
	}
	return planned, nil
}

// create makes the planned HostSubnets with a few parallel requests, stopping when the lock gets old.
func (a *subnetAllocator) create(ctx context.Context, planned []plannedSubnet) {
	log := ctrl.LoggerFrom(ctx)
	work := make(chan plannedSubnet)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var retry []string
	for range min(a.workers, len(planned)) {
		wg.Go(func() {
			for p := range work {
				if !a.lock.Fresh() {
					mu.Lock()
					retry = append(retry, p.node.Name)
					mu.Unlock()
					continue
				}
				err := a.client.Create(ctx, p.hs)
				switch {
				case err == nil:
					allocationsTotal.Inc()
					// No event for a success: at thousands of Nodes it would add a third API write per Node
					// (HostSubnet create, status, event); failures and unusual changes do get events.
					log.Info("Created HostSubnet", "hostSubnet", klog.KObj(p.hs), "subnet", p.hs.Spec.Subnet,
						"hostIP", p.hs.Spec.HostIP, "nodeUID", p.node.UID, "reason", "NodeWithoutSubnet")
				case apierrors.IsAlreadyExists(err):
					// A HostSubnet of that name appeared after our read: the Node reconciler looks at it.
				default:
					allocationFailures.WithLabelValues("api_error").Inc()
					log.Error(err, "Failed to create HostSubnet", "hostSubnet", klog.KObj(p.hs))
					a.recorder.Eventf(p.node, nil, corev1.EventTypeWarning, eventAllocationFailed, "Allocate",
						"Failed to create HostSubnet with subnet %s: %v", p.hs.Spec.Subnet, err)
					mu.Lock()
					retry = append(retry, p.node.Name)
					mu.Unlock()
				}
			}
		})
	}
	for _, p := range planned {
		if ctx.Err() != nil {
			break
		}
		work <- p
	}
	close(work)
	wg.Wait()
	if len(retry) > 0 && ctx.Err() == nil {
		a.retryLater(retry, 100*time.Millisecond)
	}
}

// newHostSubnet is the HostSubnet the controller makes for node. The owner reference lets the garbage
// collector remove it if the Node is deleted while the controller is down; the annotation lets the
// controller recognise its own objects and a re-created Node.
func newHostSubnet(node *corev1.Node, ip netip.Addr, p netip.Prefix) *vxflowv1alpha1.HostSubnet {
	return &vxflowv1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{
			Name:            node.Name,
			Annotations:     map[string]string{vxflowv1alpha1.NodeUIDAnnotation: string(node.UID)},
			OwnerReferences: []metav1.OwnerReference{nodeOwnerRef(node)},
		},
		Spec: vxflowv1alpha1.HostSubnetSpec{Host: node.Name, HostIP: ip.String(), Subnet: p.String()},
	}
}

func nodeOwnerRef(node *corev1.Node) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: ptr.To(true)}
}

// gatewayOf is the gateway of a subnet in API form, or "" when it does not parse.
func gatewayOf(subnet string) string {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !ipam.ValidSubnet(p) {
		return ""
	}
	return ipam.Gateway(p).String()
}
