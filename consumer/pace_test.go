package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gateSink takes no event until its gate opens: a Core that does not answer
// for a long time.
type gateSink struct {
	*recordSink
	gate chan struct{}
}

func (s *gateSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	s.busy.Add(1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		s.busy.Add(-1)
		return ctx.Err()
	}
	s.busy.Add(-1)
	return s.recordSink.Deliver(ctx, ev)
}

// TestSlowSinkDoesNotHoldBackTheOther: each sink runs at its own pace. While
// Core takes nothing at all, the Bucket takes every event; once Core answers,
// it gets them all too, and every event is acked once both have it.
func TestSlowSinkDoesNotHoldBackTheOther(t *testing.T) {
	e := newEnv(t)
	core := &gateSink{recordSink: newRecordSink("core"), gate: make(chan struct{})}
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.Concurrency = 4 // Core's deliveries at once: far fewer than the events
	r := start(t, e.js, cfg)

	ids := e.publish(0, 500)
	waitFor(t, 20*time.Second, "every event in the bucket while Core takes none", hasAll(bucket, ids))
	if got := core.count(); got != 0 {
		t.Fatalf("core took %d events before its gate opened", got)
	}
	if got := core.busy.Load(); got != int64(cfg.Concurrency) {
		t.Errorf("%d deliveries running at Core, want its limit %d", got, cfg.Concurrency)
	}
	if r.c.sinks[1].name != "core" {
		t.Fatalf("sinks[1] is %s", r.c.sinks[1].name)
	}
	if got := r.c.sinks[1].queued(); got != len(ids)-cfg.Concurrency {
		t.Errorf("%d events queued for core, want %d", got, len(ids)-cfg.Concurrency)
	}
	if info := e.info(DefaultDurable); info.AckFloor.Stream != 0 {
		t.Errorf("ack floor %d while Core has nothing: events acked early", info.AckFloor.Stream)
	}
	close(core.gate)
	waitFor(t, 20*time.Second, "every event at core", hasAll(core.recordSink, ids))
	e.waitSettled(DefaultDurable, 10*time.Second)
	checkExactlyOnce(t, "core", core.taken(), ids)
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
	if got := testutil.ToFloat64(r.c.m.acked); got != float64(len(ids)) {
		t.Errorf("acked %v, want %d", got, len(ids))
	}
}

// paceSink sets its own pace (Pacer) and counts the most deliveries it saw
// at once.
type paceSink struct {
	*recordSink
	limit   atomic.Int64
	running atomic.Int64
	peak    atomic.Int64
}

func (s *paceSink) MaxInFlight() int { return int(s.limit.Load()) }

func (s *paceSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return s.recordSink.Deliver(ctx, ev)
}

// TestPacerSetsTheSinksConcurrency: a sink that sets its own pace gets at
// most MaxInFlight deliveries at once, asked anew as it changes, whatever
// Config.Concurrency says.
func TestPacerSetsTheSinksConcurrency(t *testing.T) {
	e := newEnv(t)
	core := &paceSink{recordSink: newRecordSink("core")}
	core.delay = 20 * time.Millisecond
	core.limit.Store(3)
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core})
	cfg.Concurrency = 64
	start(t, e.js, cfg)

	ids := e.publish(0, 60)
	waitFor(t, 20*time.Second, "the first events at core", func() bool { return core.count() >= 30 })
	if got := core.peak.Load(); got != 3 {
		t.Errorf("peak deliveries at once %d, want the pacer's 3", got)
	}
	core.limit.Store(12)
	more := e.publish(60, 300)
	waitFor(t, 20*time.Second, "every event at core", hasAll(core.recordSink, append(ids, more...)))
	if got := core.peak.Load(); got != 12 {
		t.Errorf("peak deliveries at once %d after the pacer raised its limit, want 12", got)
	}
}
