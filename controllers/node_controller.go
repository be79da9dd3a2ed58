package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
)

// NodeReconciler gives every Node a HostSubnet named after it and keeps its hostIP equal to the Node's
// InternalIP. It deletes the HostSubnet it made when the Node goes away or is re-created under the same name,
// and never changes or deletes a hand-made HostSubnet (one without the node-uid annotation).
type NodeReconciler struct {
	Client    client.Client
	Pool      *Pool
	Allocator *subnetAllocator
	Recorder  events.EventRecorder
}

// nodeScope is what one reconcile observed; each phase reads it.
type nodeScope struct {
	// node is nil when the Node does not exist.
	node *corev1.Node
	// hs is the HostSubnet named after the Node, nil when there is none.
	hs *vxflowv1alpha1.HostSubnet
}

// SetupWithManager registers the reconciler; it watches Nodes, the HostSubnets named after them, and the
// ClusterNetwork (whose arrival or growth lets waiting Nodes get a subnet).
func (r *NodeReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if r.Client == nil || r.Pool == nil || r.Allocator == nil || r.Recorder == nil {
		return errors.New("failed to set up the Node controller: Client, Pool, Allocator and Recorder are required")
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("node").
		For(&corev1.Node{}, builder.WithPredicates(nodeChanged())).
		Watches(&vxflowv1alpha1.HostSubnet{}, &handler.EnqueueRequestForObject{},
			builder.WithPredicates(hostSubnetSpecChanged())).
		Watches(&vxflowv1alpha1.ClusterNetwork{}, handler.EnqueueRequestsFromMapFunc(r.nodesWithoutSubnet),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// nodeChanged passes Node events that can change the HostSubnet: create, delete and address changes, not
// the heartbeats that rewrite Node status every few seconds.
func nodeChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Node)
			n, ok2 := e.ObjectNew.(*corev1.Node)
			return !ok1 || !ok2 || !slices.Equal(o.Status.Addresses, n.Status.Addresses)
		},
	}
}

// hostSubnetSpecChanged ignores HostSubnet status writes (the agent's every sync, the controller's own).
func hostSubnetSpecChanged() predicate.Predicate {
	return predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{},
		predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return !slices.Equal(e.ObjectOld.GetOwnerReferences(), e.ObjectNew.GetOwnerReferences())
		}})
}

// nodesWithoutSubnet maps a ClusterNetwork event to every Node that has no HostSubnet yet.
func (r *NodeReconciler) nodesWithoutSubnet(ctx context.Context, _ client.Object) []reconcile.Request {
	nodes := &corev1.NodeList{}
	subnets := &vxflowv1alpha1.HostSubnetList{}
	if err := r.Client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list Nodes")
		return nil
	}
	if err := r.Client.List(ctx, subnets, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list HostSubnets")
		return nil
	}
	has := make(map[string]bool, len(subnets.Items))
	for i := range subnets.Items {
		has[subnets.Items[i].Name] = true
	}
	var out []reconcile.Request
	for i := range nodes.Items {
		if !has[nodes.Items[i].Name] {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: nodes.Items[i].Name}})
		}
	}
	return out
}

// Reconcile is part of reconcile.Reconciler: it observes the Node and its HostSubnet, then runs the one
// phase that applies.
func (r *NodeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &nodeScope{}
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err == nil {
		s.node = node
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("failed to get Node %s: %w", req.Name, err)
	}
	hs := &vxflowv1alpha1.HostSubnet{}
	if err := r.Client.Get(ctx, req.NamespacedName, hs); err == nil {
		s.hs = hs
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("failed to get HostSubnet %s: %w", req.Name, err)
	}
	switch {
	case s.node == nil:
		return ctrl.Result{}, r.deleteOrphan(ctx, s)
	case s.hs == nil:
		return r.requestSubnet(ctx, s)
	case isControllerMade(s.hs) && s.hs.Annotations[vxflowv1alpha1.NodeUIDAnnotation] != string(s.node.UID):
		return ctrl.Result{}, r.deleteStale(ctx, s)
	default:
		return ctrl.Result{}, r.syncHostIP(ctx, s)
	}
}

// deleteOrphan deletes the controller-made HostSubnet of a Node that no longer exists. The garbage collector
// would do the same through the owner reference, but only where it runs and only later.
func (r *NodeReconciler) deleteOrphan(ctx context.Context, s *nodeScope) error {
	if s.hs == nil || !isControllerMade(s.hs) || s.hs.DeletionTimestamp != nil {
		return nil
	}
	if err := r.deleteHostSubnet(ctx, s.hs); err != nil {
		return err
	}
	hostSubnetDeletions.WithLabelValues("node_deleted").Inc()
	ctrl.LoggerFrom(ctx).Info("Deleted HostSubnet", "hostSubnet", klog.KObj(s.hs), "subnet", s.hs.Spec.Subnet,
		"reason", "NodeDeleted")
	return nil
}

// deleteStale deletes a HostSubnet made for an earlier Node of the same name; the delete event brings the
// Node back here, and it gets a fresh allocation.
func (r *NodeReconciler) deleteStale(ctx context.Context, s *nodeScope) error {
	if s.hs.DeletionTimestamp != nil {
		return nil
	}
	if err := r.deleteHostSubnet(ctx, s.hs); err != nil {
		return err
	}
	hostSubnetDeletions.WithLabelValues("stale_node_uid").Inc()
	old := s.hs.Annotations[vxflowv1alpha1.NodeUIDAnnotation]
	ctrl.LoggerFrom(ctx).Info("Deleted HostSubnet of an earlier Node with the same name", "hostSubnet", klog.KObj(s.hs),
		"subnet", s.hs.Spec.Subnet, "oldNodeUID", old, "nodeUID", s.node.UID, "reason", "NodeRecreated")
	r.Recorder.Eventf(s.node, nil, corev1.EventTypeNormal, eventStaleHostSubnetDeleted, "Delete",
		"Deleted HostSubnet %s (subnet %s) left by an earlier Node with UID %s", s.hs.Name, s.hs.Spec.Subnet, old)
	return nil
}

// deleteHostSubnet deletes exactly the object observed: a precondition on its UID keeps a newer HostSubnet of
// the same name safe.
func (r *NodeReconciler) deleteHostSubnet(ctx context.Context, hs *vxflowv1alpha1.HostSubnet) error {
	err := r.Client.Delete(ctx, hs, client.Preconditions{UID: &hs.UID})
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return fmt.Errorf("failed to delete HostSubnet %s: %w", hs.Name, err)
}

// requestSubnet hands the Node to the allocator, or reports why it cannot have a subnet.
func (r *NodeReconciler) requestSubnet(ctx context.Context, s *nodeScope) (ctrl.Result, error) {
	n, ok := r.Pool.Network()
	if !ok {
		// The pool learns ClusterNetwork default from its own informer handler, which may run after this
		// reconciler's ClusterNetwork event; asking again shortly never loses the Node to that race.
		ctrl.LoggerFrom(ctx).V(2).Info("Deferred allocation until ClusterNetwork default is usable", "reason", "NoClusterNetwork")
		return ctrl.Result{RequeueAfter: networkRetryInterval}, nil
	}
	if _, why := nodeIP(s.node, n); why != "" {
		r.Recorder.Eventf(s.node, nil, corev1.EventTypeWarning, eventNoUsableNodeIP, "Allocate",
			"No HostSubnet until the Node has a usable InternalIP: %s", why)
		return ctrl.Result{}, nil
	}
	r.Allocator.Request(s.node.Name)
	return ctrl.Result{}, nil
}

// networkRetryInterval is how soon a Node that found no usable ClusterNetwork asks again.
const networkRetryInterval = time.Second

// syncHostIP keeps a controller-made HostSubnet's hostIP and owner reference current; a hand-made one is only
// checked, and a mismatch reported.
func (r *NodeReconciler) syncHostIP(ctx context.Context, s *nodeScope) error {
	n, ok := r.Pool.Network()
	if !ok {
		return nil
	}
	ip, why := nodeIP(s.node, n)
	if why != "" {
		r.Recorder.Eventf(s.node, s.hs, corev1.EventTypeWarning, eventNoUsableNodeIP, "Update",
			"HostSubnet %s keeps hostIP %s: %s", s.hs.Name, s.hs.Spec.HostIP, why)
		return nil
	}
	if !isControllerMade(s.hs) {
		if s.hs.Spec.HostIP != ip.String() {
			r.Recorder.Eventf(s.hs, s.node, corev1.EventTypeWarning, eventHostIPMismatch, "Update",
				"Hand-made HostSubnet keeps hostIP %s, but Node %s has InternalIP %s", s.hs.Spec.HostIP, s.node.Name, ip)
		}
		return nil
	}
	desired := s.hs.DeepCopy()
	desired.Spec.HostIP = ip.String()
	ref := nodeOwnerRef(s.node)
	if !slices.ContainsFunc(desired.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == ref.UID }) {
		desired.OwnerReferences = append(desired.OwnerReferences, ref)
	}
	if desired.Spec.HostIP == s.hs.Spec.HostIP && len(desired.OwnerReferences) == len(s.hs.OwnerReferences) {
		return nil
	}
	if err := r.Client.Patch(ctx, desired, client.MergeFromWithOptions(s.hs, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("failed to update HostSubnet %s: %w", s.hs.Name, err)
	}
	if desired.Spec.HostIP != s.hs.Spec.HostIP {
		ctrl.LoggerFrom(ctx).Info("Updated HostSubnet hostIP", "hostSubnet", klog.KObj(s.hs), "from", s.hs.Spec.HostIP,
			"to", desired.Spec.HostIP, "reason", "NodeIPChanged")
		r.Recorder.Eventf(s.node, desired, corev1.EventTypeNormal, eventHostIPUpdated, "Update",
			"HostSubnet %s hostIP changed from %s to %s", s.hs.Name, s.hs.Spec.HostIP, desired.Spec.HostIP)
	}
	return nil
}
