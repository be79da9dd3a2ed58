package nft

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vxflow/vxflow/internal/render/nftables"
)

// Metrics are the Service NAT applier's Prometheus series. The names are kube-proxy's with the prefix
// vxflow_ instead of kubeproxy_ where the meaning is the same, so dashboards compare directly; the chain,
// rule and element gauges are vxflow's own.
type Metrics struct {
	SyncDuration        prometheus.Histogram
	SyncFullDuration    prometheus.Histogram
	SyncPartialDuration prometheus.Histogram
	NetworkProgramming  prometheus.Histogram
	LastSync            prometheus.Gauge
	SyncFailures        prometheus.Counter
	FullSyncs           *prometheus.CounterVec
	Messages            prometheus.Counter
	Chains              prometheus.Gauge
	Rules               prometheus.Gauge
	Sets                prometheus.Gauge
	Elements            prometheus.Gauge
}

// syncBuckets are kube-proxy's sync duration buckets: 1 ms doubling up to about 16 s.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// programmingBuckets are kube-proxy's network programming latency buckets: 0.25 s to 5 minutes.
var programmingBuckets = func() []float64 {
	b := prometheus.LinearBuckets(0.25, 0.25, 2)
	b = append(b, prometheus.LinearBuckets(1, 1, 59)...)
	b = append(b, prometheus.LinearBuckets(60, 5, 12)...)
	return append(b, prometheus.LinearBuckets(120, 30, 7)...)
}()

// NewMetrics creates the series and registers them with reg (the agent's registry, which it exposes).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vxflow", Name: "sync_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds: one nftables sync of the Service NAT table, full or partial.", Buckets: syncBuckets,
		}),
		SyncFullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vxflow", Name: "sync_full_proxy_rules_duration_seconds",
			Help: "Latency in seconds of full syncs of the Service NAT table.", Buckets: syncBuckets,
		}),
		SyncPartialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vxflow", Name: "sync_partial_proxy_rules_duration_seconds",
			Help: "Latency in seconds of partial syncs of the Service NAT table.", Buckets: syncBuckets,
		}),
		NetworkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vxflow", Name: "network_programming_duration_seconds",
			Help:    "In Cluster Network Programming Latency in seconds: from an EndpointSlice's last-change-trigger-time to its rules being in the kernel.",
			Buckets: programmingBuckets,
		}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Name: "sync_proxy_rules_last_timestamp_seconds",
			Help: "The last time the Service NAT table was successfully synced.",
		}),
		SyncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vxflow", Name: "sync_proxy_rules_nftables_sync_failures_total",
			Help: "Cumulative Service NAT syncs whose nftables transaction failed.",
		}),
		FullSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vxflow", Subsystem: "nftables", Name: "full_syncs_total",
			Help: "Full syncs of the Service NAT table, by reason (first sync, previous sync failed, table deleted, ruleset changed by ...).",
		}, []string{"reason"}),
		Messages: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vxflow", Subsystem: "nftables", Name: "netlink_messages_total",
			Help: "Netlink messages sent in Service NAT transactions.",
		}),
		Chains: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "nftables", Name: "chains",
			Help: "Chains in table ip vxflow after the last successful sync.",
		}),
		Rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "nftables", Name: "rules",
			Help: "Rules in table ip vxflow after the last successful sync.",
		}),
		Sets: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "nftables", Name: "sets",
			Help: "Sets and maps in table ip vxflow after the last successful sync.",
		}),
		Elements: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow", Subsystem: "nftables", Name: "set_elements",
			Help: "Set and map elements written by vxflow in table ip vxflow after the last successful sync.",
		}),
	}
	reg.MustRegister(m.SyncDuration, m.SyncFullDuration, m.SyncPartialDuration, m.NetworkProgramming, m.LastSync,
		m.SyncFailures, m.FullSyncs, m.Messages, m.Chains, m.Rules, m.Sets, m.Elements)
	return m
}

// fullSyncReason folds the reasons into a few label values so that the label stays bounded.
func fullSyncReason(r string) string {
	switch {
	case r == "first sync", r == "previous sync failed", r == "table deleted":
		return r
	case len(r) >= 14 && r[:14] == "table changed:":
		return "table changed"
	case len(r) >= 18 && r[:18] == "ruleset changed by":
		return "ruleset changed by another writer"
	}
	return "other"
}

// observe records a successful sync.
func (m *Metrics) observe(res Result, desired *nftables.Ruleset, triggerTimes []time.Time) {
	d := res.Duration.Seconds()
	m.SyncDuration.Observe(d)
	if res.Full {
		m.SyncFullDuration.Observe(d)
		m.FullSyncs.WithLabelValues(fullSyncReason(res.Reason)).Inc()
	} else {
		m.SyncPartialDuration.Observe(d)
	}
	now := time.Now()
	m.LastSync.Set(float64(now.UnixNano()) / 1e9)
	m.Messages.Add(float64(res.Messages))
	for _, t := range triggerTimes {
		if !t.IsZero() {
			m.NetworkProgramming.Observe(now.Sub(t).Seconds())
		}
	}
	sets, chains, rules, elements := desired.Counts()
	m.Sets.Set(float64(sets))
	m.Chains.Set(float64(chains))
	m.Rules.Set(float64(rules))
	m.Elements.Set(float64(elements))
}
