// Package controllers holds vxflow's cluster-side reconcilers: one per kind, thin, with the allocation
// logic kept in internal/ipam.
package controllers

// The controller's least-privilege permissions; `make manifests` turns them into config/rbac/controller.
// +kubebuilder:rbac:groups=network.vxflow.io,resources=clusternetworks,verbs=get;list;watch
// +kubebuilder:rbac:groups=network.vxflow.io,resources=clusternetworks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=network.vxflow.io,resources=hostsubnets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=network.vxflow.io,resources=hostsubnets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
