package ingest

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of an event, the outcome label of bhiv_ingest_events_total.
const (
	outcomeStored    = "stored"
	outcomeDuplicate = "duplicate"
	outcomeNotStored = "not_stored"
)

// metrics are the server's Prometheus metrics. They exist (and count)
// whether or not a Registerer is given.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	events   *prometheus.CounterVec
	invalid  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bhiv_ingest_requests_total",
			Help: "HTTP requests answered by bhiv ingest, by path and status code.",
		}, []string{"path", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bhiv_ingest_request_duration_seconds",
			Help:    "Time to answer an HTTP request, waiting for JetStream's acks included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"path"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bhiv_ingest_events_total",
			Help: "Valid events received over HTTP, by kind and outcome: stored, duplicate (already in the stream), not_stored (JetStream did not ack).",
		}, []string{"kind", "outcome"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bhiv_ingest_invalid_total",
			Help: "Requests (or batch events) refused as invalid input; nothing of them was stored.",
		}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.duration = register(reg, m.duration)
		m.events = register(reg, m.events)
		m.invalid = register(reg, m.invalid)
	}
	return m
}

func (m *metrics) observe(path string, code int, d time.Duration) {
	m.requests.WithLabelValues(path, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(path).Observe(d.Seconds())
}

// register registers c, or returns the collector already registered under
// the same description (a second server in one process shares them).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
