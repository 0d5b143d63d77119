package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus instruments, all prefixed pm_.
type metrics struct {
	connections     prometheus.Gauge
	upgrades        *prometheus.CounterVec
	closes          *prometheus.CounterVec
	requests        *prometheus.CounterVec
	requestSeconds  *prometheus.HistogramVec
	invalidFrames   prometheus.Counter
	slowConsumers   prometheus.Counter
	rateLimitCloses prometheus.Counter
	writeErrors     prometheus.Counter
	framesPerWrite  prometheus.Histogram
	eventsPublished prometheus.Counter
	publishErrors   prometheus.Counter
	// Limits across the cluster.
	tenantRateLimited prometheus.Counter
	failOpen          *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pm_connections", Help: "WebSocket connections open on this node.",
		}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_upgrades_total", Help: "WebSocket upgrade attempts by result (ok, unauthorized, forbidden_origin, failed, draining, node_full, connect_rate, tenant_full).",
		}, []string{"result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_connection_closes_total", Help: "Connections closed by the node, by close code.",
		}, []string{"code"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_requests_total", Help: "Requests handled, by operation and outcome (ok, replayed, undelivered or an error code).",
		}, []string{"op", "outcome"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pm_request_duration_seconds", Help: "Time from a request's arrival to its response being queued (a chunked load: its last frame written).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op"}),
		invalidFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_invalid_frames_total", Help: "Frames that could not be decoded or had no known payload.",
		}),
		rateLimitCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_rate_limit_disconnects_total", Help: "Connections closed (1008) for sending on while rate limited.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_slow_consumer_disconnects_total", Help: "Connections closed because their send queue exceeded its byte limit.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_write_errors_total", Help: "Writes to a connection that failed (timed out, peer gone, frame refused); each drops its connection.",
		}),
		framesPerWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pm_frames_per_write", Help: "WebSocket frames (events, answers, pings) each write to a connection carried: one system call per write.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		eventsPublished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_events_published_total", Help: "Work item events published after commit.",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_event_publish_errors_total", Help: "Events whose publication to other nodes failed (they catch up by resync).",
		}),
		tenantRateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_tenant_rate_limited_total", Help: "Requests refused with RATE_LIMITED because their tenant spent its request rate across the cluster.",
		}),
		failOpen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_limit_fail_open_total", Help: "Connections or requests let through because a cluster-wide limit could not be checked (Redis out of reach), by limit (tenant_connections, tenant_requests).",
		}, []string{"limit"}),
	}
	// Known label values are exported from the start, at 0, so that rate()
	// and alerts see a limit's first fail-open too.
	for _, limit := range []string{"tenant_connections", "tenant_requests"} {
		m.failOpen.WithLabelValues(limit)
	}
	for _, c := range []prometheus.Collector{
		m.tenantRateLimited, m.failOpen,
		m.connections, m.upgrades, m.closes, m.requests, m.requestSeconds, m.invalidFrames,
		m.slowConsumers, m.rateLimitCloses, m.writeErrors, m.framesPerWrite, m.eventsPublished, m.publishErrors,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
