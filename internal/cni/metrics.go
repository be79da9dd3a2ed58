package cni

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	requests  *prometheus.HistogramVec
	allocated prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "vxflow",
			Subsystem: "cni",
			Name:      "request_duration_seconds",
			Help:      "Latency of CNI requests handled by the agent, by command and CNI error code (0 for success).",
			Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"command", "code"}),
		allocated: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vxflow",
			Subsystem: "cni",
			Name:      "allocated_addresses",
			Help:      "Pod addresses of the node subnet currently allocated.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	return errors.Join(r.Register(m.requests), r.Register(m.allocated))
}
