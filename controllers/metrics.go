package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The controller's own metrics, served on /metrics beside controller-runtime's (which already include
// controller_runtime_reconcile_time_seconds per controller).
var (
	allocationsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vxflow_controller_subnet_allocations_total",
		Help: "HostSubnets the controller created for Nodes.",
	})
	allocationFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vxflow_controller_subnet_allocation_failures_total",
		Help: "Node subnet requests that could not be served, by reason (exhausted, no_cluster_network, invalid_cluster_network, api_error).",
	}, []string{"reason"})
	hostSubnetDeletions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vxflow_controller_hostsubnet_deletions_total",
		Help: "HostSubnets the controller deleted, by reason (node_deleted, stale_node_uid).",
	}, []string{"reason"})
	subnetsTotal = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vxflow_controller_subnets_total",
		Help: "Node subnets the cluster networks can hold.",
	})
	subnetsAllocated = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vxflow_controller_subnets_allocated",
		Help: "Node subnets in use by HostSubnets, whole or in part.",
	})
	refusedHostSubnets = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vxflow_controller_hostsubnets_refused",
		Help: "HostSubnets with Allocated=False, by reason.",
	}, []string{"reason"})
	nodesWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vxflow_controller_nodes_waiting_for_subnet",
		Help: "Nodes that found no free subnet (or no ClusterNetwork) and wait for capacity.",
	})
	roundDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "vxflow_controller_allocation_round_duration_seconds",
		Help:    "Time of one allocation round: lock, uncached read, allocation and creates.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	roundSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "vxflow_controller_allocation_round_nodes",
		Help:    "Nodes handled in one allocation round.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12),
	})
	lockFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vxflow_controller_allocation_lock_errors_total",
		Help: "API errors while taking the allocation lock (contention is not counted).",
	})
)

func init() {
	metrics.Registry.MustRegister(allocationsTotal, allocationFailures, hostSubnetDeletions, subnetsTotal,
		subnetsAllocated, refusedHostSubnets, nodesWaiting, roundDuration, roundSize, lockFailures)
}
