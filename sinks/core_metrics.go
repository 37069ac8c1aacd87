package sinks

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// coreMetrics are the Core sink's metrics. A nil *coreMetrics records
// nothing.
type coreMetrics struct {
	reg       prometheus.Registerer
	attempts  prometheus.Counter
	batchSize prometheus.Histogram
	refusals  *prometheus.CounterVec
	gauges    []prometheus.Collector // read this Core: registered by it, unregistered by Close
}

// newCoreMetrics registers the Core sink's metrics with reg (nil: none).
// Collectors another sink or Core already registered are shared.
func newCoreMetrics(reg prometheus.Registerer, c *Core) (*coreMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	attempts, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bhiv_sink_attempts_total",
		Help: "Attempts made by the sinks to take an event (HTTP requests for Core).",
	}, []string{"sink"}))
	if err != nil {
		return nil, err
	}
	size, err := register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "bhiv_core_batch_size",
		Help:    "Events per POST to BHIV Core.",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
	}))
	if err != nil {
		return nil, err
	}
	refusals, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bhiv_core_refused_total",
		Help: "Answers of BHIV Core that refuse bhiv itself (401, 403, 404, 407: token, URL or proxy credentials); events are held while they last.",
	}, []string{"status"}))
	if err != nil {
		return nil, err
	}
	m := &coreMetrics{reg: reg, attempts: attempts.WithLabelValues(CoreName), batchSize: size, refusals: refusals}
	for _, g := range []struct {
		name, help string
		fn         func() float64
	}{
		{"bhiv_core_breaker_state", "State of the Core circuit breaker: 0 closed, 1 half-open, 2 open.", func() float64 {
			switch c.BreakerState() {
			case "open":
				return 2
			case "half-open":
				return 1
			}
			return 0
		}},
		{"bhiv_core_concurrency_limit", "Most requests in flight to BHIV Core at once, as the adaptive concurrency limiter sets it now (BHIV_CORE_CONCURRENCY when fixed).",
			func() float64 { return float64(c.limiter.Limit()) }},
		{"bhiv_core_requests_in_flight", "Requests to BHIV Core in flight now (attempts holding a permit of the concurrency limiter).",
			func() float64 { return float64(c.limiter.Inflight()) }},
		{"bhiv_core_requests_queued", "Requests to BHIV Core waiting for a permit of the concurrency limiter now.",
			func() float64 { return float64(c.limiter.Queued()) }},
	} {
		col := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, g.fn)
		if err := reg.Register(col); err != nil {
			m.unregister()
			return nil, err
		}
		m.gauges = append(m.gauges, col)
	}
	return m, nil
}

// register registers col with reg, or returns the collector of the same
// description already registered.
func register[C prometheus.Collector](reg prometheus.Registerer, col C) (C, error) {
	if err := reg.Register(col); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return col, err
	}
	return col, nil
}

func (m *coreMetrics) attempt() {
	if m != nil {
		m.attempts.Inc()
	}
}

func (m *coreMetrics) observeBatch(n int) {
	if m != nil {
		m.batchSize.Observe(float64(n))
	}
}

func (m *coreMetrics) refused(status int) {
	if m != nil {
		m.refusals.WithLabelValues(strconv.Itoa(status)).Inc()
	}
}

// unregister removes the gauges, which read this Core.
func (m *coreMetrics) unregister() {
	if m != nil {
		for _, g := range m.gauges {
			m.reg.Unregister(g)
		}
	}
}
