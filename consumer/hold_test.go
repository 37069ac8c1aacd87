package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/nats-io/nats.go/jetstream"
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

// TestHoldLimit: a sink that stays unavailable holds the events being worked
// on for MaxHold, then they get retryable_exhausted records and are acked;
// the events not pulled yet stay in JetStream, not in the failure log.
func TestHoldLimit(t *testing.T) {
	e := newEnv(t)
	core := &breakerSink{recordSink: newRecordSink("core")}
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.MaxInFlight = 12
	cfg.MaxHold = 1500 * time.Millisecond
	r := start(t, e.js, cfg)

	core.open.Store(true)
	ids := e.publish(0, 100)
	waitFor(t, 10*time.Second, "intake paused", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 1 })
	began := time.Now()
	waitFor(t, 10*time.Second, "held events in the failure log", func() bool { return len(log.records()) > 0 })
	if held := time.Since(began); held < cfg.MaxHold-500*time.Millisecond {
		t.Errorf("the first record came %s after intake paused, before the hold limit %s", held, cfg.MaxHold)
	}
	// Every event this process had taken in is given up: MaxInFlight, and
	// what the client had pulled when intake paused (its buffer of
	// PullMaxMessages = MaxInFlight, and the refill it asks for once half of
	// that is used: 26 in one run). The rest is not pulled while Core is
	// unavailable.
	waitFor(t, 20*time.Second, "every event in flight given up", func() bool { return r.c.inFlight() == 0 })
	time.Sleep(cfg.MaxHold)
	recs := log.records()
	if most := 3 * cfg.MaxInFlight; len(recs) == 0 || len(recs) > most {
		t.Fatalf("%d records, want the events taken in (1 to %d of %d): the backlog must stay in JetStream", len(recs), most, len(ids))
	}
	for _, rec := range recs {
		if rec.Sink != "core" || rec.ErrorClass != bhiv.ClassRetryableExhausted ||
			!strings.Contains(rec.Error, "past the hold limit of 1.5s") || !strings.Contains(rec.Error, "breaker open") {
			t.Errorf("record of %s: sink %s class %s error %q, want core / retryable_exhausted / past the hold limit, with the last answer",
				rec.EventID, rec.Sink, rec.ErrorClass, rec.Error)
		}
	}
	if info := e.info(DefaultDurable); info.NumPending == 0 {
		t.Error("nothing pending in JetStream: the backlog was pulled while Core was unavailable")
	}

	// Core is back: the rest arrives, and the given-up events are not
	// sent again.
	core.open.Store(false)
	e.waitSettled(DefaultDurable, 20*time.Second)
	given := map[string]bool{}
	for _, rec := range log.records() {
		given[rec.EventID] = true
	}
	var rest []string
	for _, id := range ids {
		if !given[id] {
			rest = append(rest, id)
		}
	}
	checkExactlyOnce(t, "core", core.taken(), rest)
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
	if n := len(log.records()); n != len(recs) {
		t.Errorf("%d records after Core came back, want %d", n, len(recs))
	}
}

// TestPoisonEventIsGivenUp: Core fails one event only, and its own failed
// attempts open the breaker, so each delivery of it ends as an outage. It
// must not be held until the hold limit while reopening the breaker for
// everyone: once its holds have failed MaxFailedHolds times while Core took
// other events, it gets a retryable_exhausted record. The other events
// keep flowing meanwhile.
func TestPoisonEventIsGivenUp(t *testing.T) {
	e := newEnv(t)
	const poison = "ev-000000"
	core := newTripSink("core", 100*time.Millisecond)
	core.setAnswer(func(ev *bhiv.Event) error {
		if ev.ID == poison {
			return outageErr("core", 2)
		}
		return nil
	})
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.Concurrency = 8
	r := start(t, e.js, cfg)

	ids := e.publish(0, 1)
	stop := e.steadyTraffic(1)
	waitFor(t, 30*time.Second, "the poison event in the failure log", func() bool { return len(log.records()) > 0 })
	ackedWhileHeld := testutil.ToFloat64(r.c.m.acked)
	ids = append(ids, stop()...)
	e.waitSettled(DefaultDurable, 20*time.Second)

	recs := log.records()
	if len(recs) != 1 {
		t.Fatalf("%d records, want one for %s", len(recs), poison)
	}
	if rec := recs[0]; rec.EventID != poison || rec.ErrorClass != bhiv.ClassRetryableExhausted ||
		!strings.Contains(rec.Error, "failed in 3 holds") || rec.Attempts < 6 {
		t.Fatalf("record of %s: class %s attempts %d error %q, want %s: retryable_exhausted, failed in 3 holds, at least 6 attempts",
			rec.EventID, rec.ErrorClass, rec.Attempts, rec.Error, poison)
	}
	if ackedWhileHeld < 10 {
		t.Errorf("%v events acked while the poison event was held: the others did not flow", ackedWhileHeld)
	}
	checkExactlyOnce(t, "core", core.taken(), ids[1:])
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
}

// TestPoisonEventAloneProbesLast: a poison event alone in Core's queue
// when it trips the breaker must not be the probe every time the breaker
// lets one through, or it trips it again before intake (paused, resuming
// only once the sink is available) brings in anything else, and the events
// published meanwhile wait until its hold limit. Once Core is available
// again, intake resumes and a fresh event is the probe: the first event
// Core is asked to take after the breaker opened is not the poison event.
func TestPoisonEventAloneProbesLast(t *testing.T) {
	e := newEnv(t)
	const poison = "ev-000000"
	core := newTripSink("core", 300*time.Millisecond)
	var asked sync.Mutex
	var order []string // events Core was asked to take while available
	core.setAnswer(func(ev *bhiv.Event) error {
		asked.Lock()
		order = append(order, ev.ID)
		asked.Unlock()
		if ev.ID == poison {
			return outageErr("core", 1)
		}
		return nil
	})
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.MaxHold, cfg.MaxFailedHolds = time.Minute, 1_000_000
	cfg.probeGrace = 5 * time.Second // ample for intake to resume on a loaded machine
	r := start(t, e.js, cfg)

	e.publish(0, 1)
	waitFor(t, 10*time.Second, "intake paused", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 1 })
	others := e.publish(1, 21)
	waitFor(t, 20*time.Second, "the others at core", hasAll(core.recordSink, others))
	asked.Lock()
	defer asked.Unlock()
	if len(order) < 2 || order[0] != poison {
		t.Fatalf("Core was asked for %v, want the poison event first", order)
	}
	if order[1] == poison {
		t.Errorf("Core was asked for %v: after the breaker opened, the poison event was the probe again, want a fresh event", order)
	}
}

// steadyTraffic publishes an event every 20ms, from index from on, until
// the returned stop is called (or the test ends); stop returns the ids of
// the events published.
func (e *env) steadyTraffic(from int) (stop func() []string) {
	done := make(chan struct{})
	published := make(chan []string, 1)
	go func() {
		var ids []string
		defer func() { published <- ids }()
		for i := from; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ev := event(e.t, i)
			b, err := json.Marshal(ev)
			if err != nil {
				e.t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = e.js.Publish(ctx, bhiv.Subject("", ev.Kind()), b, jetstream.WithMsgID(ev.ID))
			cancel()
			if err == nil {
				ids = append(ids, ev.ID)
			}
		}
	}()
	var once sync.Once
	var ids []string
	stop = func() []string {
		once.Do(func() {
			close(done)
			ids = <-published
		})
		return ids
	}
	e.t.Cleanup(func() { stop() })
	return stop
}
