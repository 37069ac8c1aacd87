package consumer

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/prometheus/client_golang/prometheus"
)

// gauge returns the value of the named gauge in reg; the test fails when it
// is not there.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 && mf.GetMetric()[0].Gauge != nil {
			return mf.GetMetric()[0].Gauge.GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestRetentionGauges: the age of the oldest event the durable has not
// acked grows while a sink outage holds events, next to the stream's max
// age, and falls back to 0 once everything is acked.
func TestRetentionGauges(t *testing.T) {
	e := newEnv(t)
	core := &breakerSink{recordSink: newRecordSink("core")}
	reg := prometheus.NewRegistry()
	cfg := baseConfig(t, &memLog{}, map[string]Sink{"core": core})
	cfg.Registerer = reg
	start(t, e.js, cfg)

	ids := e.publish(0, 5)
	waitFor(t, 10*time.Second, "the first events at core", hasAll(core.recordSink, ids))
	e.waitSettled(DefaultDurable, 10*time.Second)
	waitFor(t, 5*time.Second, "the stream's limits", func() bool {
		return gauge(t, reg, "bhiv_stream_max_age_seconds") == (7*24*time.Hour).Seconds() &&
			gauge(t, reg, "bhiv_stream_max_bytes") == -1 && gauge(t, reg, "bhiv_stream_bytes") > 0
	})
	if age := gauge(t, reg, "bhiv_consumer_oldest_unacked_age_seconds"); age != 0 {
		t.Errorf("oldest unacked age %v with everything acked, want 0", age)
	}

	core.open.Store(true)
	published := time.Now()
	ids = append(ids, e.publish(5, 10)...)
	time.Sleep(1500 * time.Millisecond)
	waitFor(t, 5*time.Second, "the held events' age", func() bool {
		return gauge(t, reg, "bhiv_consumer_oldest_unacked_age_seconds") >= 1.5
	})
	if age, most := gauge(t, reg, "bhiv_consumer_oldest_unacked_age_seconds"), time.Since(published).Seconds(); age > most {
		t.Errorf("oldest unacked age %vs, but the oldest unacked event was published %vs ago", age, most)
	}

	core.open.Store(false)
	waitFor(t, 10*time.Second, "every event at core", hasAll(core.recordSink, ids))
	e.waitSettled(DefaultDurable, 10*time.Second)
	waitFor(t, 5*time.Second, "the age back to 0", func() bool {
		return gauge(t, reg, "bhiv_consumer_oldest_unacked_age_seconds") == 0
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestWarnsWhenMaxAgeIsBelowTheHoldLimit: a stream that may delete events
// before the consumer gives up holding them is called out at start.
func TestWarnsWhenMaxAgeIsBelowTheHoldLimit(t *testing.T) {
	const warning = "the stream's max age is shorter than the hold limit"
	for _, tc := range []struct {
		name   string
		stream bhiv.StreamConfig
		warn   bool
	}{
		{"default", bhiv.StreamConfig{}, false},
		{"no max age", bhiv.StreamConfig{MaxAge: bhiv.NoMaxAge}, false},
		{"30 minutes", bhiv.StreamConfig{MaxAge: 30 * time.Minute, Duplicates: time.Minute}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var logs syncBuffer
			cfg := baseConfig(t, &memLog{}, map[string]Sink{"core": newRecordSink("core")})
			cfg.Stream = tc.stream
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			start(t, e.js, cfg)
			waitFor(t, 10*time.Second, "the consumer started", func() bool { return strings.Contains(logs.String(), "consumer started") })
			if got := strings.Contains(logs.String(), warning); got != tc.warn {
				t.Errorf("warned %v, want %v; logs:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}
