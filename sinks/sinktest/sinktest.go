package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// EventTime is the time of the test events: late in the evening of
// 2026-11-27 in New York, already the 28th in UTC.
var EventTime = time.Date(2026, 11, 27, 21, 30, 0, 0, time.FixedZone("EST", -5*3600))

// Event returns a valid event of kind with the given id and time
// EventTime, whose data is padded to about pad bytes. The same arguments
// always give the same event.
func Event(tb testing.TB, kind bhiv.Kind, id string, pad int) *bhiv.Event {
	tb.Helper()
	data := map[string]any{"team_id": "team-" + id[:min(len(id), 3)]}
	switch kind {
	case bhiv.KindExecution:
		data["action"] = "deploy"
		data["duration_ms"] = 42
	case bhiv.KindReward:
		data["reward"] = 1.5
	}
	if pad > 0 {
		data["pad"] = strings.Repeat("x", pad)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		tb.Fatal(err)
	}
	ev, err := bhiv.New(kind, "test", id, json.RawMessage(raw))
	if err != nil {
		tb.Fatal(err)
	}
	ev.Time = EventTime.UTC()
	return &ev
}

// Harness is a sink under the conformance test, as a constructor builds it
// fresh for one subtest, with what the test needs to see and disturb its
// backend.
type Harness struct {
	Sink bhiv.Sink
	Name string // the name its SinkErrors carry
	// Stored returns the bodies the backend holds or received for the
	// event id, one per distinct stored copy (a sink that stores one copy
	// per event returns one, a sink that receives requests returns the
	// distinct bodies of its requests).
	Stored func(id string) [][]byte
	// Hang makes the backend slow or failing so that a delivery would take
	// far longer than the test (until release is called).
	Hang func() (release func())
	// Fail makes the backend fail every delivery quickly (until release).
	Fail func() (release func())
	// Close releases the sink.
	Close func()
}

// Run runs the conformance test against the sinks newSink builds: every
// sink must pass it. A sink is idempotent (the same event, or a copy of it,
// delivered again leaves one stored copy, the envelope), returns promptly
// with an error wrapping context.Canceled when its context ends however
// slow its backend, is safe for concurrent callers (also on one event),
// and answers a failing backend with a *bhiv.SinkError of a final class
// naming the sink, then takes the event once the backend is back.
func Run(t *testing.T, newSink func(t *testing.T) *Harness) {
	t.Run("idempotent", func(t *testing.T) { testIdempotent(t, newSink(t)) })
	t.Run("cancel", func(t *testing.T) { testCancel(t, newSink(t)) })
	t.Run("concurrent", func(t *testing.T) { testConcurrent(t, newSink(t)) })
	t.Run("classifies", func(t *testing.T) { testClassifies(t, newSink(t)) })
}

// testIdempotent checks that the same event, or a copy of it as a
// redelivery would decode it, delivered again leaves one stored copy: the
// envelope.
func testIdempotent(t *testing.T, c *Harness) {
	defer c.Close()
	ev := Event(t, bhiv.KindReward, "01IDEMPOTENT", 100)
	for i := range 3 {
		if err := c.Sink.Deliver(context.Background(), ev); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	// A copy of the event, as a redelivery would decode it.
	again := *ev
	if err := c.Sink.Deliver(context.Background(), &again); err != nil {
		t.Fatalf("delivery of a copy: %v", err)
	}
	got := c.Stored(ev.ID)
	if len(got) != 1 {
		t.Fatalf("the backend holds %d distinct copies of the event, want 1", len(got))
	}
	var back bhiv.Event
	if err := json.Unmarshal(got[0], &back); err != nil {
		t.Fatalf("stored body is not an envelope: %v\n%s", err, got[0])
	}
	if back.ID != ev.ID || !back.Time.Equal(ev.Time) || back.Type != ev.Type {
		t.Errorf("stored event %+v, want %+v", back, ev)
	}
}

// testCancel checks that a delivery returns promptly, with an error wrapping
// context.Canceled, once its context ends, however long the backend would
// hold it, and at once when the context has ended already.
func testCancel(t *testing.T, c *Harness) {
	defer c.Close()
	release := c.Hang()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Sink.Deliver(ctx, Event(t, bhiv.KindExecution, "01CANCEL", 0)) }()
	time.Sleep(100 * time.Millisecond) // let it start
	cancel()
	// The backend would hold the delivery for minutes; a cancelled
	// delivery must return long before that.
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Deliver returned nil on a hung backend with a cancelled context")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Deliver error %v does not wrap context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Deliver did not return within 5s of its context being cancelled")
	}
	// An already-cancelled context.
	if err := c.Sink.Deliver(ctx, Event(t, bhiv.KindExecution, "01CANCEL2", 0)); !errors.Is(err, context.Canceled) {
		t.Errorf("Deliver with a cancelled context: %v, want context.Canceled", err)
	}
}

// testConcurrent checks that concurrent callers, pairs of them on one event, each
// get their event stored once.
func testConcurrent(t *testing.T, c *Harness) {
	defer c.Close()
	const callers, each = 64, 8
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for g := range callers {
		wg.Go(func() {
			for i := range each {
				// Callers pair up on the same events: concurrent
				// deliveries of one event must be safe too.
				id := fmt.Sprintf("01CONC-%02d-%d", g/2, i)
				ev := Event(t, bhiv.Kinds[(g/2)%2], id, 200)
				if err := c.Sink.Deliver(context.Background(), ev); err != nil {
					errs <- fmt.Errorf("caller %d event %s: %w", g, id, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for g := 0; g < callers; g += 2 {
		for i := range each {
			id := fmt.Sprintf("01CONC-%02d-%d", g/2, i)
			if got := c.Stored(id); len(got) != 1 {
				t.Errorf("event %s: %d distinct copies stored, want 1", id, len(got))
			}
		}
	}
}

// testClassifies checks that a failing backend earns a *bhiv.SinkError of
// a final class naming the sink and keeping its cause, and that the event
// goes through once the backend is back.
func testClassifies(t *testing.T, c *Harness) {
	defer c.Close()
	release := c.Fail()
	err := c.Sink.Deliver(context.Background(), Event(t, bhiv.KindReward, "01FAIL", 0))
	release()
	if err == nil {
		t.Fatal("Deliver on a failing backend returned nil")
	}
	var se *bhiv.SinkError
	if !errors.As(err, &se) {
		t.Fatalf("Deliver error %T %v is not a *bhiv.SinkError", err, err)
	}
	switch se.Class {
	case bhiv.ClassRetryableExhausted, bhiv.ClassPermanent:
	default:
		t.Errorf("class %q, want retryable_exhausted or permanent", se.Class)
	}
	if se.Sink != c.Name {
		t.Errorf("SinkError.Sink %q, want %q", se.Sink, c.Name)
	}
	if se.Err == nil {
		t.Error("SinkError.Err is nil: the cause is lost")
	}
	// Once the backend is back, the same event goes through.
	if err := c.Sink.Deliver(context.Background(), Event(t, bhiv.KindReward, "01FAIL", 0)); err != nil {
		t.Errorf("Deliver after the backend recovered: %v", err)
	}
}
