package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/conditions"
)

// HostSubnetReconciler writes each HostSubnet's Allocated condition and gatewayIP from the pool's verdict:
// whether the subnet is inside a cluster network and no older HostSubnet overlaps it. It never changes a
// spec; the Node reconciler owns those.
type HostSubnetReconciler struct {
	Client   client.Client
	Pool     *Pool
	Recorder events.EventRecorder
}

// SetupWithManager registers the reconciler; besides HostSubnet events it is woken by the pool whenever a
// verdict may have changed, which covers HostSubnets that lose or win because of another one.
func (r *HostSubnetReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	if r.Client == nil || r.Pool == nil || r.Recorder == nil {
		return errors.New("failed to set up the HostSubnet controller: Client, Pool and Recorder are required")
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("hostsubnet").
		For(&vxflowv1alpha1.HostSubnet{}).
		WatchesRawSource(r.Pool.hostSubnetSource()).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// Reconcile is part of reconcile.Reconciler.
func (r *HostSubnetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if !r.Pool.Synced() {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	hs := &vxflowv1alpha1.HostSubnet{}
	if err := r.Client.Get(ctx, req.NamespacedName, hs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	v, ok := r.Pool.Verdict(hs.Name)
	if !ok || v.claim != claimOf(hs) {
		// The pool has not seen this version yet; it wakes us when it has.
		return ctrl.Result{}, nil
	}
	orig := hs.DeepCopy()
	setAllocatedCondition(hs, v)
	setGatewayIP(hs, v)
	hs.Status.ObservedGeneration = hs.Generation
	if equality.Semantic.DeepEqual(orig.Status, hs.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, hs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to update HostSubnet %s status: %w", hs.Name, err)
	}
	before := conditions.Get(orig.Status.Conditions, vxflowv1alpha1.ConditionAllocated)
	after := conditions.Get(hs.Status.Conditions, vxflowv1alpha1.ConditionAllocated)
	if !conditions.Equal(before, after) {
		ctrl.LoggerFrom(ctx).Info("Set HostSubnet Allocated", "hostSubnet", klog.KObj(hs), "status", after.Status,
			"reason", after.Reason, "message", after.Message)
		if after.Status == "False" {
			r.Recorder.Eventf(hs, nil, corev1.EventTypeWarning, after.Reason, "Allocate", "%s", after.Message)
		}
	}
	return ctrl.Result{}, nil
}
