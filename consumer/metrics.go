package consumer

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a sink delivery, the outcome label of
// bhiv_sink_deliveries_total.
const (
	OutcomeSuccess            = "success"
	OutcomeRetryableExhausted = "retryable_exhausted"
	OutcomePermanent          = "permanent"
	kindInvalid               = "invalid"
)

// metrics are the consumer's Prometheus metrics. They exist (and count)
// whether or not a Registerer is given.
type metrics struct {
	received       *prometheus.CounterVec
	acked          prometheus.Counter
	naked          prometheus.Counter
	terminated     prometheus.Counter
	deliveries     *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	failureRecords *prometheus.CounterVec
	intakePaused   prometheus.Gauge
	inFlight       prometheus.Gauge
	pending        prometheus.Gauge
	ackPending     prometheus.Gauge
	oldestUnacked  prometheus.Gauge
	streamMaxAge   prometheus.Gauge
	streamBytes    prometheus.Gauge
	streamMaxBytes prometheus.Gauge

	// Plain counters for the summary log line.
	nReceived, nAcked, nNaked, nTerminated, nFailures atomic.Uint64
}

// newMetrics makes the metrics and registers them on reg, when given.
func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		received: newCounterVec(reg, "bhiv_events_received_total",
			"Messages received from JetStream, by event kind (invalid for messages that are not valid events).", "kind"),
		acked: newCounter(reg, "bhiv_events_acked_total",
			"Events acked: every sink took them or their failure is in the failure log."),
		naked: newCounter(reg, "bhiv_events_naked_total",
			"Events Nak'ed back to JetStream (failure log unwritable, or unfinished at shutdown)."),
		terminated: newCounter(reg, "bhiv_events_terminated_total",
			"Messages terminated after their failure records: not valid events, or delivered BHIV_MAX_DELIVER times without an ack."),
		deliveries: newCounterVec(reg, "bhiv_sink_deliveries_total",
			"Final outcomes of event deliveries to a sink.", "sink", "outcome"),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bhiv_sink_delivery_duration_seconds",
			Help:    "Time a sink took to take or finally fail one event, retries included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"sink"})),
		failureRecords: newCounterVec(reg, "bhiv_failure_records_total",
			"Records written to the failure log, by sink and error class.", "sink", "class"),
		intakePaused: newGauge(reg, "bhiv_intake_paused",
			"1 while intake is paused because a sink is unavailable, else 0."),
		inFlight: newGauge(reg, "bhiv_events_in_flight",
			"Messages received and not yet acked, Nak'ed or terminated by this process."),
		pending: newGauge(reg, "bhiv_consumer_pending",
			"Messages in the stream not yet delivered to the durable consumer (from consumer info, polled)."),
		ackPending: newGauge(reg, "bhiv_consumer_ack_pending",
			"Messages delivered to the durable consumer and not yet acked, all processes (from consumer info, polled)."),
		oldestUnacked: newGauge(reg, "bhiv_consumer_oldest_unacked_age_seconds",
			"Age of the oldest event in the stream the durable consumer has not acked (delivered or not), 0 when there is none (polled). JetStream deletes it, acked or not, when this reaches bhiv_stream_max_age_seconds."),
		streamMaxAge: newGauge(reg, "bhiv_stream_max_age_seconds",
			"The stream's MaxAge: events older than this are deleted, acked or not; 0 for no age limit (polled)."),
		streamBytes: newGauge(reg, "bhiv_stream_bytes",
			"Bytes stored in the stream (polled)."),
		streamMaxBytes: newGauge(reg, "bhiv_stream_max_bytes",
			"The stream's MaxBytes: at this size publishes are refused; -1 for no limit (polled)."),
	}
}

// newCounter makes a counter and registers it on reg, when given.
func newCounter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

// newCounterVec makes a counter with labels and registers it on reg, when
// given.
func newCounterVec(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

// newGauge makes a gauge and registers it on reg, when given.
func newGauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

// sinkCollector reports, at scrape time, each sink's queue and the
// deliveries running on it.
type sinkCollector struct {
	sinks          []*sinkState
	queued, active *prometheus.Desc
}

func newSinkCollector(sinks []*sinkState) *sinkCollector {
	return &sinkCollector{
		sinks: sinks,
		queued: prometheus.NewDesc("bhiv_sink_queued",
			"Events taken in and waiting for a sink: how far it is behind the other sinks.", []string{"sink"}, nil),
		active: prometheus.NewDesc("bhiv_sink_deliveries_running",
			"Deliveries running on a sink now.", []string{"sink"}, nil),
	}
}

func (sc *sinkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sc.queued
	ch <- sc.active
}

func (sc *sinkCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range sc.sinks {
		s.mu.Lock()
		q, r := s.queue.len(), s.running
		s.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(sc.queued, prometheus.GaugeValue, float64(q), s.name)
		ch <- prometheus.MustNewConstMetric(sc.active, prometheus.GaugeValue, float64(r), s.name)
	}
}

// register registers c on reg, when given, or returns the collector
// already registered under the same description (a second consumer in one
// process shares them).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A conflicting registration: count anyway, unexported.
	}
	return c
}
