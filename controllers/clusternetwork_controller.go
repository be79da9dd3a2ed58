package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/conditions"
	"github.com/vxflow/vxflow/internal/ipam"
)

// ClusterNetworkReconciler reports the pool on ClusterNetwork default: subnets allocated and total, Ready
// (a subnet can be handed out) and Degraded (Nodes wait on a full pool, HostSubnets outside every range
// block a removed range, or HostSubnets were refused).
type ClusterNetworkReconciler struct {
	Client   client.Client
	Pool     *Pool
	Recorder events.EventRecorder

	// lastWrite is when the status was last written; the controller runs one worker, so it needs no lock.
	lastWrite time.Time
}

// countInterval is the least time between two status writes that change only the counts: while thousands
// of Nodes join, every allocation changes subnetsAllocated, and each write would wake every watcher of
// the ClusterNetwork (all node agents).
const countInterval = time.Second

// SetupWithManager registers the reconciler; the pool wakes it on every change of capacity or verdicts, and
// Node arrivals and departures change how many Nodes wait.
func (r *ClusterNetworkReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil || r.Pool == nil || r.Recorder == nil {
		return errors.New("failed to set up the ClusterNetwork controller: Client, Pool and Recorder are required")
	}
	toDefault := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: vxflowv1alpha1.ClusterNetworkName}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusternetwork").
		For(&vxflowv1alpha1.ClusterNetwork{}).
		WatchesRawSource(r.Pool.clusterNetworkSource()).
		Watches(&corev1.Node{}, toDefault, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool { return nodeChanged().Update(e) },
		})).
		Complete(r)
}

// Reconcile is part of reconcile.Reconciler.
func (r *ClusterNetworkReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.Name != vxflowv1alpha1.ClusterNetworkName {
		return ctrl.Result{}, nil
	}
	if !r.Pool.Synced() {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	cn := &vxflowv1alpha1.ClusterNetwork{}
	if err := r.Client.Get(ctx, req.NamespacedName, cn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	st := clusterNetworkState{poolSummary: r.Pool.Summary()}
	if st.generation != cn.Generation {
		// The pool has not seen this spec yet; it wakes us when it has.
		return ctrl.Result{}, nil
	}
	if st.total > 0 && st.allocated >= st.total {
		waiting, err := r.waitingNodes(ctx)
		if err != nil {
			return ctrl.Result{}, err
		}
		st.waiting = waiting
	}
	recordRefused(st.losers)

	orig := cn.DeepCopy()
	setCapacity(cn, st)
	setReadyCondition(cn, st)
	setDegradedCondition(cn, st)
	cn.Status.ObservedGeneration = st.generation
	if equality.Semantic.DeepEqual(orig.Status, cn.Status) {
		return ctrl.Result{}, nil
	}
	if wait := countInterval - time.Since(r.lastWrite); wait > 0 && onlyCountsChanged(orig, cn) {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.Client.Status().Patch(ctx, cn, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to update ClusterNetwork %s status: %w", cn.Name, err)
	}
	r.lastWrite = time.Now()
	before := conditions.Get(orig.Status.Conditions, vxflowv1alpha1.ConditionDegraded)
	after := conditions.Get(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)
	if !conditions.Equal(before, after) {
		ctrl.LoggerFrom(ctx).Info("Set ClusterNetwork Degraded", "clusterNetwork", klog.KObj(cn), "status", after.Status,
			"reason", after.Reason, "message", after.Message)
		if after.Status == "True" {
			r.Recorder.Eventf(cn, nil, corev1.EventTypeWarning, after.Reason, "Allocate", "%s", after.Message)
		} else if before != nil && before.Status == "True" {
			r.Recorder.Eventf(cn, nil, corev1.EventTypeNormal, "Recovered", "Allocate", "%s", after.Message)
		}
	}
	return ctrl.Result{}, nil
}

// onlyCountsChanged reports whether the new status differs from the old one in subnetsAllocated and the
// Ready message that repeats it, and nothing else.
func onlyCountsChanged(orig, cn *vxflowv1alpha1.ClusterNetwork) bool {
	a, b := orig.Status.DeepCopy(), cn.Status.DeepCopy()
	a.SubnetsAllocated, b.SubnetsAllocated = 0, 0
	for _, st := range []*vxflowv1alpha1.ClusterNetworkStatus{a, b} {
		if c := conditions.Get(st.Conditions, vxflowv1alpha1.ConditionReady); c != nil && c.Reason == conditions.ReasonSubnetsAvailable {
			c.Message = ""
		}
	}
	return equality.Semantic.DeepEqual(a, b)
}

// waitingNodes lists, from the cache, the Nodes with a usable address and no HostSubnet.
func (r *ClusterNetworkReconciler) waitingNodes(ctx context.Context) ([]string, error) {
	n, ok := r.Pool.Network()
	if !ok {
		return nil, nil
	}
	nodes := &corev1.NodeList{}
	if err := r.Client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("failed to list Nodes: %w", err)
	}
	subnets := &vxflowv1alpha1.HostSubnetList{}
	if err := r.Client.List(ctx, subnets, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("failed to list HostSubnets: %w", err)
	}
	has := make(map[string]bool, len(subnets.Items))
	for i := range subnets.Items {
		has[subnets.Items[i].Name] = true
	}
	var out []string
	for i := range nodes.Items {
		if ip, _ := nodeIP(&nodes.Items[i], n); ip.IsValid() && !has[nodes.Items[i].Name] {
			out = append(out, nodes.Items[i].Name)
		}
	}
	return out, nil
}

// recordRefused exports the refused HostSubnets by reason.
func recordRefused(losers []refused) {
	counts := map[ipam.Reason]int{}
	for _, l := range losers {
		counts[l.reason]++
	}
	for _, reason := range []ipam.Reason{ipam.ReasonOverlap, ipam.ReasonDuplicate, ipam.ReasonOutsideClusterNetwork, ipam.ReasonInvalidSubnet} {
		refusedHostSubnets.WithLabelValues(string(reason)).Set(float64(counts[reason]))
	}
}
