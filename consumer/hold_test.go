package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// tripSink behaves like a sink behind a circuit breaker whose probes a test
// scripts: answer decides each call's result; an answer wrapping
// bhiv.ErrUnavailable trips the breaker (Available is false for delay).
type tripSink struct {
	*recordSink
	delay     time.Duration
	answer    atomic.Pointer[func(ev *bhiv.Event) error]
	mu        sync.Mutex
	openUntil time.Time
	outages   atomic.Int64 // outage answers given
}

func newTripSink(name string, delay time.Duration) *tripSink {
	return &tripSink{recordSink: newRecordSink(name), delay: delay}
}

func (s *tripSink) setAnswer(f func(ev *bhiv.Event) error) { s.answer.Store(&f) }

func (s *tripSink) Available() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !time.Now().Before(s.openUntil)
}

func (s *tripSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	if !s.Available() {
		s.outages.Add(1)
		return &bhiv.SinkError{Sink: s.name, Class: bhiv.ClassRetryableExhausted, Err: fmt.Errorf("breaker open: %w", bhiv.ErrUnavailable)}
	}
	if f := s.answer.Load(); f != nil {
		if err := (*f)(ev); err != nil {
			if errors.Is(err, bhiv.ErrUnavailable) {
				s.outages.Add(1)
				s.mu.Lock()
				s.openUntil = time.Now().Add(s.delay)
				s.mu.Unlock()
			}
			return err
		}
	}
	return s.recordSink.Deliver(ctx, ev)
}

// outageErr is what a breaker-guarded sink answers when its breaker opened
// during the event's own attempts.
func outageErr(name string, attempts int) error {
	return &bhiv.SinkError{Sink: name, Class: bhiv.ClassRetryableExhausted, Attempts: attempts,
		Err: fmt.Errorf("circuit breaker open: %w", bhiv.ErrUnavailable)}
}

func permanentErr(name string) error {
	return &bhiv.SinkError{Sink: name, Class: bhiv.ClassPermanent, Status: 400, Attempts: 1, Err: errors.New("core answered bad request")}
}

// TestIntakeResumesWhenHeldEventsFail: the events held during an outage all
// end as failure records (the breaker's half-open probe is answered with a
// permanent failure, not a success). No sink is unavailable any more, so
// intake must resume and later events be consumed and acked.
func TestIntakeResumesWhenHeldEventsFail(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sinks func() (Sink, func(func(*bhiv.Event) error))
	}{
		{"with availability", func() (Sink, func(func(*bhiv.Event) error)) {
			s := newTripSink("core", 200*time.Millisecond)
			return s, s.setAnswer
		}},
		{"without availability", func() (Sink, func(func(*bhiv.Event) error)) {
			s := newRecordSink("core")
			var f atomic.Pointer[func(*bhiv.Event) error]
			s.fail = func(ev *bhiv.Event) error {
				if p := f.Load(); p != nil {
					return (*p)(ev)
				}
				return nil
			}
			return s, func(g func(*bhiv.Event) error) { f.Store(&g) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			core, answer := tc.sinks()
			bucket := newRecordSink("bucket")
			log := &memLog{}
			cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
			cfg.Concurrency = 8
			r := start(t, e.js, cfg)

			// Core's attempts fail and its breaker opens: every event is
			// held and intake pauses.
			answer(func(*bhiv.Event) error { return outageErr("core", 2) })
			first := e.publish(0, 5) // fewer than the workers: all are being worked on
			waitFor(t, 10*time.Second, "intake paused", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 1 })
			waitFor(t, 10*time.Second, "the first events at the bucket", hasAll(bucket, first))

			// The probe, and every retry after it, is answered 400.
			answer(func(*bhiv.Event) error { return permanentErr("core") })
			waitFor(t, 10*time.Second, "the held events in the failure log", func() bool { return len(log.records()) == len(first) })
			for _, rec := range log.records() {
				if rec.Sink != "core" || rec.ErrorClass != bhiv.ClassPermanent || rec.Status != 400 {
					t.Errorf("record %+v, want core / permanent / 400", rec)
				}
			}

			// Core is up (it answers): intake must resume.
			answer(func(*bhiv.Event) error { return nil })
			later := e.publish(10, 30)
			waitFor(t, 10*time.Second, "intake resumed", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 0 })
			switch s := core.(type) {
			case *tripSink:
				waitFor(t, 10*time.Second, "later events at core", hasAll(s.recordSink, later))
			case *recordSink:
				waitFor(t, 10*time.Second, "later events at core", hasAll(s, later))
			}
			e.waitSettled(DefaultDurable, 10*time.Second)
			checkExactlyOnce(t, "bucket", bucket.taken(), append(first, later...))
		})
	}
}
