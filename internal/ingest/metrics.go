package ingest

import (
	"fmt"
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

// newMetrics makes the metrics and registers them on reg, when given (once
// per registry: a second Server needs a registry of its own).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.events, m.invalid} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(path string, code int, d time.Duration) {
	m.requests.WithLabelValues(path, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(path).Observe(d.Seconds())
}
