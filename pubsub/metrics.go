package pubsub

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// hubMetrics are the Hub's pm_pubsub_* metrics.
type hubMetrics struct {
	received       prometheus.Counter
	delivered      prometheus.Counter
	drops          prometheus.Counter
	publishErrors  prometheus.Counter
	reconnects     prometheus.Counter
	resyncs        *prometheus.CounterVec
	channels       prometheus.Gauge
	subscriptions  prometheus.Gauge
	deliveryAge    prometheus.Histogram
	publishSeconds prometheus.Histogram
}

func newHubMetrics(reg prometheus.Registerer, queued func() float64) (*hubMetrics, error) {
	m := &hubMetrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_pubsub_events_received_total",
			Help: "Messages received from Redis on project channels.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_pubsub_deliveries_total",
			Help: "Event frames handed to local subscribers.",
		}),
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_pubsub_handoff_drops_total",
			Help: "Messages dropped because the queue from the Redis reader to the fan-out was full.",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_pubsub_publish_errors_total",
			Help: "Publishes that Redis refused or did not answer.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_pubsub_reconnects_total",
			Help: "Times a working subscriber connection to Redis broke and had to be re-established.",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_pubsub_resync_notices_total",
			Help: "Projects whose local subscribers were told to resync, by reason.",
		}, []string{"reason"}),
		channels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pm_pubsub_subscribed_channels",
			Help: "Project channels this node subscribes in Redis.",
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pm_pubsub_local_subscriptions",
			Help: "Subscriptions of local subscribers (connections) to projects on this node.",
		}),
		deliveryAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pm_event_delivery_age_seconds",
			Help:    "Age of events (since their commit on the publishing node) when this node hands them to its local subscribers; across nodes it includes their clocks' difference.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pm_pubsub_publish_duration_seconds",
			Help:    "Time Redis took to answer a PUBLISH (SPUBLISH) of an event, failures included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	for _, r := range []string{ReasonEventsDropped, ReasonRedisReconnected, ReasonLateConfirmation, ReasonMissedEvents} {
		m.resyncs.WithLabelValues(r)
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pm_pubsub_handoff_queued",
		Help: "Messages waiting in the queue from the Redis reader to the fan-out.",
	}, queued)
	return m, register(reg, m.received, m.delivered, m.drops, m.publishErrors, m.reconnects, m.resyncs, m.channels, m.subscriptions, m.deliveryAge, m.publishSeconds, queue)
}

// ledgerMetrics are the Ledger's pm_idempotency_* metrics.
type ledgerMetrics struct {
	claimed  prometheus.Counter
	replayed prometheus.Counter
	reused   prometheus.Counter
	inFlight prometheus.Counter
	lost     prometheus.Counter
	errors   *prometheus.CounterVec
}

func newLedgerMetrics(reg prometheus.Registerer) (*ledgerMetrics, error) {
	m := &ledgerMetrics{
		claimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_idempotency_claimed_total",
			Help: "Requests claimed: seen for the first time, they run.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_idempotency_replayed_total",
			Help: "Repeated requests answered with the stored outcome.",
		}),
		reused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_idempotency_reused_ids_total",
			Help: "Requests refused because their message_id was already used for a different request.",
		}),
		inFlight: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_idempotency_in_flight_total",
			Help: "Repeated requests refused with UNAVAILABLE because the first attempt was still running.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_idempotency_claims_lost_total",
			Help: "Responses not stored because their claim had expired or been taken over.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_idempotency_errors_total",
			Help: "Redis failures of the idempotency ledger, by operation; the request then runs without it.",
		}, []string{"op"}),
	}
	for _, op := range []string{"claim", "complete", "release"} {
		m.errors.WithLabelValues(op)
	}
	return m, register(reg, m.claimed, m.replayed, m.reused, m.inFlight, m.lost, m.errors)
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("pubsub: register metrics: %w", err)
		}
	}
	return nil
}
