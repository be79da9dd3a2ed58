package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the agent's Prometheus series; kube-proxy's names are used where the meaning is the same so
// dashboards compare directly.
type Metrics struct {
	SyncDuration   *prometheus.HistogramVec
	SyncErrors     *prometheus.CounterVec
	LastSync       prometheus.Gauge
	Flows          *prometheus.GaugeVec
	FlowMods       *prometheus.CounterVec
	DriftRepairs   *prometheus.CounterVec
	SwitchResets   prometheus.Counter
	RemoteNodes    prometheus.Gauge
	LocalPods      prometheus.Gauge
	SkippedObjects prometheus.Gauge
	NetworkProgram prometheus.Histogram
}

// kubeProxyBuckets are kube-proxy's sync duration buckets: 1 ms doubling up to about 16 s.
var kubeProxyBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// NewMetrics creates the agent's series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "sync_duration_seconds",
			Help:    "Time one sync of a part of the node took (part: openflow, nftables, link, total).",
			Buckets: kubeProxyBuckets,
		}, []string{"part"}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "sync_errors_total",
			Help: "Syncs that failed, by part.",
		}, []string{"part"}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "last_successful_sync_timestamp_seconds",
			Help: "When the node last converged completely.",
		}),
		Flows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "flows",
			Help: "Desired OpenFlow flows on br0, by table.",
		}, []string{"table"}),
		FlowMods: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "flow_mods_total",
			Help: "Flow-mods sent to br0, by kind (add, modify, delete).",
		}, []string{"kind"}),
		DriftRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "drift_repairs_total",
			Help: "Syncs that found the node changed behind the agent's back and repaired it, by part.",
		}, []string{"part"}),
		SwitchResets: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "switch_resets_total",
			Help: "Times br0 was found empty (ovs-vswitchd restarted) and fully reprogrammed.",
		}),
		RemoteNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "remote_nodes",
			Help: "Remote HostSubnets this node tunnels to.",
		}),
		LocalPods: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "local_pods",
			Help: "Pods attached to this node's br0.",
		}),
		SkippedObjects: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "skipped_objects",
			Help: "Invalid or conflicting HostSubnets and pods left out of the node's state.",
		}),
		NetworkProgram: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vxflow", Subsystem: "agent", Name: "network_programming_duration_seconds",
			Help:    "Time from an API change being seen by the agent to its being applied on the node.",
			Buckets: kubeProxyBuckets,
		}),
	}
	reg.MustRegister(m.SyncDuration, m.SyncErrors, m.LastSync, m.Flows, m.FlowMods, m.DriftRepairs,
		m.SwitchResets, m.RemoteNodes, m.LocalPods, m.SkippedObjects, m.NetworkProgram)
	return m
}
