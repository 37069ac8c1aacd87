package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestManyEventsReachEverySinkOnce(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 2_000
	}
	e := newEnv(t)
	core, bucket := newRecordSink("core"), newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.Concurrency = 64
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg

	c, err := New(e.js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(context.Background()); err == nil {
		t.Error("Ready before Run: got nil, want an error (the durable does not exist yet)")
	}
	ids := e.publish(0, n)
	r := &running{c: c, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })

	waitFor(t, 60*time.Second, "every event at both sinks", func() bool { return core.count() == n && bucket.count() == n })
	e.waitSettled(DefaultDurable, 10*time.Second)
	if err := c.Ready(context.Background()); err != nil {
		t.Errorf("Ready while running: %v", err)
	}
	r.stop(t)

	checkExactlyOnce(t, "core", core.taken(), ids)
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
	if recs := log.records(); len(recs) != 0 {
		t.Errorf("failure log has %d records, want none; first: %+v", len(recs), recs[0])
	}
	info := e.info(DefaultDurable)
	if info.AckFloor.Stream != uint64(n) || info.NumRedelivered != 0 {
		t.Errorf("ack floor %d (want %d), redelivered %d (want 0)", info.AckFloor.Stream, n, info.NumRedelivered)
	}
	if info.Config.AckWait != cfg.AckWait || info.Config.MaxDeliver != -1 ||
		info.Config.FilterSubject != "bhiv.events.>" || info.Config.InactiveThreshold != 0 ||
		info.Config.MaxAckPending != DefaultMaxAckPending {
		t.Errorf("durable config %+v", info.Config)
	}

	for _, m := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"acked", c.m.acked, float64(n)},
		{"naked", c.m.naked, 0},
		{"terminated", c.m.terminated, 0},
		{"received execution", c.m.received.WithLabelValues("execution"), float64(n / 2)},
		{"received reward", c.m.received.WithLabelValues("reward"), float64(n / 2)},
		{"core success", c.m.deliveries.WithLabelValues("core", OutcomeSuccess), float64(n)},
		{"bucket success", c.m.deliveries.WithLabelValues("bucket", OutcomeSuccess), float64(n)},
		{"in flight", c.m.inFlight, 0},
		{"paused", c.m.intakePaused, 0},
	} {
		if got := testutil.ToFloat64(m.c); got != m.want {
			t.Errorf("metric %s = %v, want %v", m.name, got, m.want)
		}
	}
	if got := testutil.CollectAndCount(reg, "bhiv_sink_delivery_duration_seconds", "bhiv_consumer_pending", "bhiv_consumer_ack_pending"); got != 4 {
		t.Errorf("registered series of duration, pending, ack pending: %d, want 4", got)
	}
}

func TestBadInputsGoToTheFailureLog(t *testing.T) {
	e := newEnv(t)
	core, bucket := newRecordSink("core"), newRecordSink("bucket")
	log := &memLog{}

	envelope := func(id string, data string) []byte {
		return []byte(`{"specversion":"1.0","id":"` + id + `","source":"test","type":"bhiv.execution","time":"2026-01-01T00:00:00Z","data":` + data + `}`)
	}
	big := append([]byte(`{"team_id":"t1","pad":"`), bytes.Repeat([]byte("x"), 2<<20)...)
	big = append(big, `"}`...)
	bad := []struct {
		name    string
		subject string
		data    []byte
		hdr     nats.Header
		reason  error
	}{
		{"not json", "bhiv.events.execution", []byte("hello, world"), nil, bhiv.ErrNotJSON},
		{"json array", "bhiv.events.reward", []byte(`[1,2,3]`), nil, bhiv.ErrNotObject},
		{"2 MiB", "bhiv.events.execution", big, nil, bhiv.ErrTooLarge},
		{"unknown subject", "bhiv.events.foo", envelope("ok-1", `{"team_id":"t1"}`), nil, bhiv.ErrUnknownSubject},
		{"traversal id", "bhiv.events.execution", envelope("../../etc/passwd", `{"team_id":"t1"}`), nil, bhiv.ErrInvalidID},
		{"traversal msg id", "bhiv.events.execution", []byte(`{"team_id":"t1"}`), nats.Header{"Nats-Msg-Id": {"../x"}}, bhiv.ErrInvalidID},
		{"missing team", "bhiv.events.reward", []byte(`{"reward":1}`), nats.Header{"X-Trace": {"abc"}}, bhiv.ErrMissingTeam},
	}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	start(t, e.js, cfg)

	var ids []string
	seqs := map[uint64]int{}
	for i, b := range bad {
		ids = append(ids, e.publish(2*i, 2*i+1)...)
		seqs[e.publishRaw(b.subject, b.data, b.hdr)] = i
	}
	ids = append(ids, e.publish(100, 110)...)

	waitFor(t, 20*time.Second, "good events at both sinks and bad ones in the log", func() bool {
		return hasAll(core, ids)() && hasAll(bucket, ids)() && len(log.records()) >= len(bad)
	})
	e.waitSettled(DefaultDurable, 10*time.Second)
	checkExactlyOnce(t, "core", core.taken(), ids)
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)

	recs := log.records()
	if len(recs) != len(bad) {
		t.Fatalf("%d failure records, want %d: %+v", len(recs), len(bad), recs)
	}
	for _, r := range recs {
		i, ok := seqs[r.StreamSeq]
		if !ok {
			t.Errorf("record for unexpected stream seq %d: %+v", r.StreamSeq, r)
			continue
		}
		b := bad[i]
		delete(seqs, r.StreamSeq)
		if r.Sink != bhiv.SinkDecode || r.ErrorClass != bhiv.ClassInvalidInput {
			t.Errorf("%s: sink %q class %q, want decode / invalid_input", b.name, r.Sink, r.ErrorClass)
		}
		if !bytes.Equal(r.Raw, b.data) {
			t.Errorf("%s: raw bytes differ from what was published (%d vs %d bytes)", b.name, len(r.Raw), len(b.data))
		}
		if r.Subject != b.subject || r.Error == "" || len(r.Event) != 0 {
			t.Errorf("%s: record subject %q error %q event %q", b.name, r.Subject, r.Error, r.Event)
		}
		want := (&bhiv.DecodeError{Reason: b.reason}).Reason.Error()
		if !strings.Contains(r.Error, want) {
			t.Errorf("%s: error %q does not say %q", b.name, r.Error, want)
		}
		for k, v := range b.hdr {
			if got := r.Headers[k]; len(got) != 1 || got[0] != v[0] {
				t.Errorf("%s: header %s = %v, want %v", b.name, k, got, v)
			}
		}
		if strings.Contains(r.EventID, "/") {
			t.Errorf("%s: event id %q recorded", b.name, r.EventID)
		}
	}
	// Terminated: not redelivered, nothing pending, each recorded once.
	time.Sleep(300 * time.Millisecond)
	if n := len(log.records()); n != len(bad) {
		t.Errorf("after a pause the log has %d records, want %d (a bad message was redelivered)", n, len(bad))
	}
}

func TestPermanentFailuresAreRecordedExactly(t *testing.T) {
	e := newEnv(t)
	rejected := map[string]bool{}
	for i := 0; i < 300; i += 7 {
		rejected[fmt.Sprintf("ev-%06d", i)] = true
	}
	core := newRecordSink("core")
	core.fail = func(ev *bhiv.Event) error {
		if rejected[ev.ID] {
			return &bhiv.SinkError{Sink: "core", Class: bhiv.ClassPermanent, Status: 400, Attempts: 1, Body: `{"error":"bad reward"}`, Err: errors.New("core answered 400 Bad Request")}
		}
		return nil
	}
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	r := start(t, e.js, cfg)
	ids := e.publish(0, 300)
	waitFor(t, 20*time.Second, "all events settled", func() bool { return bucket.count() == 300 && len(log.records()) >= len(rejected) })
	e.waitSettled(DefaultDurable, 10*time.Second)

	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
	var accepted []string
	for _, id := range ids {
		if !rejected[id] {
			accepted = append(accepted, id)
		}
	}
	checkExactlyOnce(t, "core", core.taken(), accepted)
	recs := log.records()
	if len(recs) != len(rejected) {
		t.Errorf("%d records, want %d", len(recs), len(rejected))
	}
	for _, rec := range recs {
		if !rejected[rec.EventID] || rec.Sink != "core" || rec.ErrorClass != bhiv.ClassPermanent || rec.Status != 400 {
			t.Errorf("unexpected record %+v", rec)
			continue
		}
		delete(rejected, rec.EventID)
		ev, err := rec.DecodeEvent()
		if err != nil || ev.ID != rec.EventID {
			t.Errorf("record event: %v (id %q)", err, ev.ID)
		}
		if !strings.Contains(rec.Error, "400") || !strings.Contains(rec.Error, "bad reward") || rec.StreamSeq == 0 || rec.Kind == "" {
			t.Errorf("record lacks details: %+v", rec)
		}
	}
	if len(rejected) > 0 {
		t.Errorf("not recorded: %v", rejected)
	}
	if got := testutil.ToFloat64(r.c.m.failureRecords.WithLabelValues("core", "permanent")); got != 43 {
		t.Errorf("failure records metric %v, want 43", got)
	}
	if got := testutil.ToFloat64(r.c.m.deliveries.WithLabelValues("core", OutcomePermanent)); got != 43 {
		t.Errorf("permanent deliveries metric %v, want 43", got)
	}
}

// TestUnavailableSinkHoldsEvents opens Core's breaker for longer than the
// ack wait: events are held (not redelivered, not in the log), intake
// pauses, and everything arrives once Core is back.
func TestUnavailableSinkHoldsEvents(t *testing.T) {
	e := newEnv(t)
	core := &breakerSink{recordSink: newRecordSink("core")}
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	// Heartbeats go every AckWait/3: 2s leaves them room on a loaded
	// machine (with 1s, a starved -race run saw redeliveries).
	cfg.AckWait = 2 * time.Second
	cfg.MaxInFlight = 24
	r := start(t, e.js, cfg)

	ids := e.publish(0, 50)
	waitFor(t, 10*time.Second, "first events at core", hasAll(core.recordSink, ids))
	core.open.Store(true)
	ids = append(ids, e.publish(50, 200)...)
	waitFor(t, 5*time.Second, "intake paused", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 1 })
	held := r.c.inFlight()
	time.Sleep(5 * time.Second) // more than twice the ack wait
	// MaxInFlight taken in, and what the client had pre-buffered, handed
	// over when intake paused.
	if got := r.c.inFlight(); got > 2*cfg.MaxInFlight {
		t.Errorf("%d events held while paused, want at most %d (twice MaxInFlight)", got, 2*cfg.MaxInFlight)
	}
	if info := e.info(DefaultDurable); info.NumPending == 0 {
		t.Errorf("nothing left pending in JetStream while paused (held %d): intake did not pause", held)
	}
	if core.rejected.Load() == 0 {
		t.Error("core was never probed while unavailable")
	}
	// Pull from the same durable: without heartbeats the held events,
	// older than the ack wait, would be redelivered here.
	cons, err := e.js.Consumer(context.Background(), bhiv.DefaultStreamName, DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var fetched []jetstream.Msg
	for msg := range batch.Messages() {
		fetched = append(fetched, msg)
		if md, err := msg.Metadata(); err != nil || md.NumDelivered != 1 {
			t.Errorf("a held event was redelivered to another puller (%v): %+v", err, md)
		}
	}
	for _, msg := range fetched { // after the fetch, or they come back to it
		if err := msg.Nak(); err != nil {
			t.Error(err)
		}
	}
	if len(fetched) == 0 {
		t.Error("fetched nothing while paused")
	}
	core.open.Store(false)

	waitFor(t, 20*time.Second, "every event at core", hasAll(core.recordSink, ids))
	waitFor(t, 5*time.Second, "intake resumed", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 0 })
	e.waitSettled(DefaultDurable, 10*time.Second)
	checkExactlyOnce(t, "core", core.taken(), ids)
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
	if recs := log.records(); len(recs) != 0 {
		t.Errorf("failure log has %d records, want none: %+v", len(recs), recs[0])
	}
	if info := e.info(DefaultDurable); info.NumRedelivered != 0 {
		t.Errorf("%d events were redelivered: held events were not kept in progress", info.NumRedelivered)
	}
	if got := r.c.m.nReceived.Load(); got != uint64(len(ids)) {
		t.Errorf("received %d messages for %d events: held events were redelivered", got, len(ids))
	}
}

// TestUnavailableWithoutBreaker: a sink without Availability that returns
// ErrUnavailable for a while loses nothing either.
func TestUnavailableWithoutBreaker(t *testing.T) {
	e := newEnv(t)
	var down = make(chan struct{})
	core := newRecordSink("core")
	core.fail = func(ev *bhiv.Event) error {
		select {
		case <-down:
			return nil
		default:
			return fmt.Errorf("core: %w", bhiv.ErrUnavailable)
		}
	}
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core})
	r := start(t, e.js, cfg)
	ids := e.publish(0, 100)
	waitFor(t, 5*time.Second, "intake paused", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 1 })
	time.Sleep(500 * time.Millisecond)
	close(down)
	waitFor(t, 20*time.Second, "every event at core", hasAll(core, ids))
	e.waitSettled(DefaultDurable, 10*time.Second)
	checkExactlyOnce(t, "core", core.taken(), ids)
	if recs := log.records(); len(recs) != 0 {
		t.Errorf("failure log has %d records, want none", len(recs))
	}
}

func TestServerRestartMidStream(t *testing.T) {
	e := newEnv(t)
	core, bucket := newRecordSink("core"), newRecordSink("bucket")
	core.delay = time.Millisecond
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.AckWait = 2 * time.Second
	start(t, e.js, cfg)

	ids := e.publish(0, 1000)
	waitFor(t, 20*time.Second, "consuming under way", func() bool { return core.count() >= 100 })
	e.srv.Restart()
	waitFor(t, 10*time.Second, "publisher reconnected", e.nc.IsConnected)
	ids = append(ids, e.publish(1000, 1500)...)

	waitFor(t, 30*time.Second, "every event at both sinks", func() bool { return hasAll(core, ids)() && hasAll(bucket, ids)() })
	e.waitSettled(DefaultDurable, 10*time.Second)
	checkAtLeastOnce(t, "core", core.taken(), ids)
	checkAtLeastOnce(t, "bucket", bucket.taken(), ids)
	if recs := log.records(); len(recs) != 0 {
		t.Errorf("failure log has %d records, want none", len(recs))
	}
}

func TestTwoConsumersShareTheWork(t *testing.T) {
	e := newEnv(t)
	log := &memLog{}
	var sinks [2]*recordSink
	for i := range sinks {
		sinks[i] = newRecordSink("core")
		sinks[i].delay = time.Millisecond // so that neither takes it all
		_, js := e.connect()
		start(t, js, baseConfig(t, log, map[string]Sink{"core": sinks[i]}))
	}
	ids := e.publish(0, 2000)
	waitFor(t, 30*time.Second, "every event taken", func() bool { return sinks[0].count()+sinks[1].count() >= len(ids) })
	e.waitSettled(DefaultDurable, 10*time.Second)
	all := map[string]int{}
	for i, s := range sinks {
		if s.count() == 0 {
			t.Errorf("consumer %d took no work", i)
		}
		for id, n := range s.taken() {
			all[id] += n
		}
	}
	checkExactlyOnce(t, "core (both consumers)", all, ids)
	if recs := log.records(); len(recs) != 0 {
		t.Errorf("failure log has %d records, want none", len(recs))
	}
}

func TestDurableDeletedIsRecreated(t *testing.T) {
	e := newEnv(t)
	core := newRecordSink("core")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core})
	start(t, e.js, cfg)
	ids := e.publish(0, 300)
	waitFor(t, 10*time.Second, "first events", hasAll(core, ids))
	time.Sleep(3 * cfg.infoEvery) // let the consumer see the ack floor

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, bhiv.DefaultStreamName, DefaultDurable); err != nil {
		t.Fatal(err)
	}
	more := e.publish(300, 600)
	ids = append(ids, more...)
	waitFor(t, 20*time.Second, "events after the deletion", hasAll(core, ids))
	e.waitSettled(DefaultDurable, 10*time.Second)
	checkExactlyOnce(t, "core", core.taken(), ids)
	info := e.info(DefaultDurable)
	if info.Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || info.Config.OptStartSeq != 301 {
		t.Errorf("recreated durable starts with policy %v at %d, want by start sequence at 301", info.Config.DeliverPolicy, info.Config.OptStartSeq)
	}
	// A consumer starting now (as after a restart) accepts the recreated
	// durable as it is.
	core2 := newRecordSink("core")
	_, js2 := e.connect()
	r2 := start(t, js2, baseConfig(t, log, map[string]Sink{"core": core2}))
	waitFor(t, 5*time.Second, "second consumer ready", func() bool { return r2.c.Ready(context.Background()) == nil })
}

func TestPanickingSinkIsRecorded(t *testing.T) {
	e := newEnv(t)
	core := newRecordSink("core")
	core.fail = func(ev *bhiv.Event) error {
		if strings.HasSuffix(ev.ID, "3") {
			panic("core sink bug: " + ev.ID)
		}
		return nil
	}
	bucket := newRecordSink("bucket")
	log := &memLog{}
	r := start(t, e.js, baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket}))
	ids := e.publish(0, 100)
	waitFor(t, 10*time.Second, "every event settled", func() bool { return bucket.count() == 100 && len(log.records()) >= 10 })
	more := e.publish(100, 110) // still running
	waitFor(t, 10*time.Second, "events after the panics", hasAll(bucket, more))
	e.waitSettled(DefaultDurable, 10*time.Second)
	recs := log.records()
	if len(recs) != 11 {
		t.Fatalf("%d records, want 11 (ids ending in 3)", len(recs))
	}
	for _, rec := range recs {
		if rec.Sink != "core" || rec.ErrorClass != bhiv.ClassPermanent || !strings.HasSuffix(rec.EventID, "3") ||
			!strings.Contains(rec.Error, "panic") || len(rec.Event) == 0 {
			t.Errorf("unexpected record %+v", rec)
		}
	}
	checkExactlyOnce(t, "bucket", bucket.taken(), append(ids, more...))
	if got := testutil.ToFloat64(r.c.m.acked); got != 110 {
		t.Errorf("acked %v, want 110", got)
	}
}

// TestFailureLogDownNaksAndRedelivers: while the failure log cannot be
// written the event is Nak'ed and redelivered; the sink that took it is not
// sent it again; once the log works the record is written and the event
// acked.
func TestFailureLogDownNaksAndRedelivers(t *testing.T) {
	e := newEnv(t)
	core := newRecordSink("core")
	core.fail = func(ev *bhiv.Event) error {
		if ev.ID == "ev-000005" {
			return &bhiv.SinkError{Sink: "core", Class: bhiv.ClassPermanent, Status: 422, Attempts: 1, Err: errors.New("unprocessable")}
		}
		return nil
	}
	bucket := newRecordSink("bucket")
	log := &memLog{}
	log.setFail(func([]bhiv.FailureRecord) bool { return true })
	r := start(t, e.js, baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket}))
	ids := e.publish(0, 20)
	waitFor(t, 10*time.Second, "several redeliveries", func() bool { return core.callsFor("ev-000005") >= 3 })
	if got := bucket.callsFor("ev-000005"); got != 1 {
		t.Errorf("bucket was sent the redelivered event %d times, want once", got)
	}
	if n := testutil.ToFloat64(r.c.m.naked); n < 2 {
		t.Errorf("naked %v, want at least 2", n)
	}
	if info := e.info(DefaultDurable); info.NumAckPending != 1 {
		t.Errorf("ack pending %d while the log is down, want 1 (the event stays in JetStream)", info.NumAckPending)
	}
	log.setFail(nil)
	waitFor(t, 10*time.Second, "the record", func() bool { return len(log.records()) == 1 })
	e.waitSettled(DefaultDurable, 10*time.Second)
	if rec := log.records()[0]; rec.EventID != "ev-000005" || rec.Sink != "core" || rec.Status != 422 {
		t.Errorf("record %+v", rec)
	}
	checkExactlyOnce(t, "bucket", bucket.taken(), ids)
}

// TestShutdownWithEventsInFlight cancels Run while a slow sink holds events:
// those that finish within the shutdown timeout are acked, the rest Nak'ed,
// and nothing waits for the ack wait.
func TestShutdownWithEventsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name     string
		delay    time.Duration
		shutdown time.Duration
	}{
		{"in-flight finish", 300 * time.Millisecond, 3 * time.Second},
		{"in-flight cut short", 10 * time.Second, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			slow := newRecordSink("core")
			slow.delay = tc.delay
			log := &memLog{}
			cfg := baseConfig(t, log, map[string]Sink{"core": slow})
			cfg.AckWait = time.Minute // nothing may wait for it
			cfg.Concurrency = 4
			cfg.ShutdownTimeout = tc.shutdown
			r := start(t, e.js, cfg)
			ids := e.publish(0, 40)
			waitFor(t, 5*time.Second, "workers busy", func() bool { return slow.busy.Load() == 4 })

			r.stop(t)
			if got := slow.busy.Load(); got != 0 {
				t.Errorf("%d deliveries still running after Run returned", got)
			}
			// Acks and Naks are flushed when Run returns; the server applies
			// them a moment later. Every message Run was handed is acked or
			// Nak'ed (Nak'ed messages count as ack pending until they are
			// redelivered, which happens at once: see below).
			naked := int(testutil.ToFloat64(r.c.m.naked))
			acked := int(testutil.ToFloat64(r.c.m.acked))
			if received := int(r.c.handled.Load()); naked+acked != received {
				t.Errorf("received %d, acked %d, naked %d: some message was neither acked nor Nak'ed", received, acked, naked)
			}
			var info *jetstream.ConsumerInfo
			deadline := time.Now().Add(time.Second)
			for {
				info = e.info(DefaultDurable)
				if info.NumAckPending == naked && info.AckFloor.Stream == uint64(acked) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("right after Run returned: ack pending %d (naked %d), ack floor %d (acked %d), delivered %d, redelivered %d",
						info.NumAckPending, naked, info.AckFloor.Stream, acked, info.Delivered.Stream, info.NumRedelivered)
				}
				time.Sleep(20 * time.Millisecond)
			}
			took := slow.taken()
			if tc.delay < tc.shutdown && len(took) < 4 {
				t.Errorf("%d events finished during shutdown, want the 4 in flight", len(took))
			}
			if tc.delay > tc.shutdown && len(took) != 0 {
				t.Errorf("%d events taken, want none", len(took))
			}
			if acked != len(took) {
				t.Errorf("acked %d, sink took %d", acked, len(took))
			}

			// Another consumer gets the rest at once, not after the minute.
			fast := newRecordSink("core")
			cfg2 := baseConfig(t, log, map[string]Sink{"core": fast})
			cfg2.AckWait = time.Minute
			_, js2 := e.connect()
			start(t, js2, cfg2)
			var rest []string
			for _, id := range ids {
				if took[id] == 0 {
					rest = append(rest, id)
				}
			}
			waitFor(t, 5*time.Second, "the rest at a new consumer", hasAll(fast, rest))
			if len(log.records()) != 0 {
				t.Errorf("failure records at shutdown: %+v", log.records())
			}
		})
	}
}

// An event Nak'ed MaxDeliver times (here: the failure log refuses its
// records) is given up: on its next delivery it gets a failure record for
// every sink that has not taken it, and is terminated.
func TestMaxDeliveries(t *testing.T) {
	e := newEnv(t)
	core := newRecordSink("core")
	core.fail = func(ev *bhiv.Event) error {
		if ev.ID == "ev-000002" {
			return &bhiv.SinkError{Sink: "core", Class: bhiv.ClassRetryableExhausted, Status: 503, Attempts: 3, Err: errors.New("core answered 503")}
		}
		return nil
	}
	log := &memLog{}
	// Only the give-up records can be written: the event is Nak'ed
	// until it reaches max deliveries.
	log.setFail(func(recs []bhiv.FailureRecord) bool { return !strings.Contains(recs[0].Error, "max deliveries") })
	cfg := baseConfig(t, log, map[string]Sink{"core": core})
	cfg.MaxDeliver = 3
	r := start(t, e.js, cfg)
	ids := e.publish(0, 5)
	waitFor(t, 10*time.Second, "the give-up record", func() bool { return len(log.records()) == 1 })
	rec := log.records()[0]
	if rec.EventID != "ev-000002" || rec.Sink != "core" || rec.ErrorClass != bhiv.ClassRetryableExhausted ||
		rec.Attempts != 3 || rec.StreamSeq != 3 || len(rec.Event) == 0 || !strings.Contains(rec.Error, "max deliveries reached") {
		t.Errorf("record %+v", rec)
	}
	if got := core.callsFor("ev-000002"); got != 3 {
		t.Errorf("core was tried %d times, want 3 (max deliver)", got)
	}
	checkExactlyOnce(t, "core", core.taken(), append(ids[:2:2], ids[3:]...))
	if got := testutil.ToFloat64(r.c.m.failureRecords.WithLabelValues("core", "retryable_exhausted")); got != 1 {
		t.Errorf("failure records metric %v, want 1", got)
	}

	// An invalid message that reaches max deliveries is recorded raw.
	log.setFail(func(recs []bhiv.FailureRecord) bool {
		return !strings.Contains(recs[0].Error, "max deliveries") && recs[0].Sink == bhiv.SinkDecode
	})
	seq := e.publishRaw("bhiv.events.reward", []byte("not json"), nil)
	waitFor(t, 10*time.Second, "the invalid message's record", func() bool { return len(log.records()) == 2 })
	rec = log.records()[1]
	if rec.StreamSeq != seq || rec.Sink != bhiv.SinkDecode || string(rec.Raw) != "not json" || rec.ErrorClass != bhiv.ClassInvalidInput {
		t.Errorf("record %+v", rec)
	}
}

// The crash loop nobody sees: every process that took the event died
// before settling it, and none runs when the last delivery's AckWait ends.
// JetStream keeps the event (the durable's MaxDeliver is unlimited); the
// next process to run gives it up into the failure log without handing it
// to the sinks again.
func TestMaxDeliveriesWhileNoConsumerRuns(t *testing.T) {
	e := newEnv(t)
	core := newRecordSink("core")
	bucket := newRecordSink("bucket")
	log := &memLog{}
	cfg := baseConfig(t, log, map[string]Sink{"core": core, "bucket": bucket})
	cfg.MaxDeliver = 3
	cfg.AckWait = 500 * time.Millisecond
	r := start(t, e.js, cfg)
	ids := e.publish(0, 2)
	waitFor(t, 10*time.Second, "both events at the sinks", func() bool { return core.count() == 2 && bucket.count() == 2 })
	r.stop(t)

	// Three deliveries that end without an ack, as by processes killed
	// while they held the event: each ends when AckWait expires, the last
	// one while no consumer runs.
	poison := e.publish(2, 3)[0]
	cons, err := e.js.Consumer(context.Background(), bhiv.DefaultStreamName, DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for range batch.Messages() {
			got++
		}
		if got != 1 {
			t.Fatalf("delivery %d: got %d messages (%v)", i+1, got, batch.Error())
		}
	}
	time.Sleep(2 * cfg.AckWait)
	info := e.info(DefaultDurable)
	if info.NumPending+uint64(info.NumAckPending) != 1 {
		t.Fatalf("after 3 deliveries JetStream no longer holds the event: %+v", info)
	}

	core2, bucket2 := newRecordSink("core"), newRecordSink("bucket")
	cfg.Sinks = map[string]Sink{"core": core2, "bucket": bucket2}
	cfg.Registerer = prometheus.NewRegistry()
	r = start(t, e.js, cfg)
	waitFor(t, 10*time.Second, "the give-up records", func() bool { return len(log.records()) == 2 })
	e.waitSettled(DefaultDurable, 10*time.Second)
	sinksSeen := map[string]bool{}
	for _, rec := range log.records() {
		sinksSeen[rec.Sink] = true
		if rec.EventID != poison || rec.Attempts != 3 || rec.ErrorClass != bhiv.ClassRetryableExhausted ||
			!strings.Contains(rec.Error, "max deliveries reached: delivered 3 times") || len(rec.Event) == 0 {
			t.Errorf("record %+v", rec)
		}
	}
	if !sinksSeen["core"] || !sinksSeen["bucket"] {
		t.Errorf("records for sinks %v, want core and bucket", sinksSeen)
	}
	if core2.count()+bucket2.count() != 0 {
		t.Errorf("the given-up event was handed to the sinks again: core %d, bucket %d", core2.count(), bucket2.count())
	}
	if got := testutil.ToFloat64(r.c.m.terminated); got != 1 {
		t.Errorf("terminated %v, want 1", got)
	}
	checkExactlyOnce(t, "core", core.taken(), ids)
}

func TestConfigValidate(t *testing.T) {
	sinks := map[string]Sink{"core": newRecordSink("core")}
	log := &memLog{}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"defaults", Config{Sinks: sinks, FailureLog: log}, ""},
		{"no sinks", Config{FailureLog: log}, "no sinks"},
		{"no failure log", Config{Sinks: sinks}, "no failure log"},
		{"nil sink", Config{Sinks: map[string]Sink{"core": nil}, FailureLog: log}, `sink "core" is nil`},
		{"reserved name", Config{Sinks: map[string]Sink{"decode": newRecordSink("x")}, FailureLog: log}, "reserved"},
		{"bad durable", Config{Durable: "a.b", Sinks: sinks, FailureLog: log}, "durable name"},
		{"bad stream", Config{Stream: bhiv.StreamConfig{Name: "a b"}, Sinks: sinks, FailureLog: log}, "stream name"},
		{"negative concurrency", Config{Concurrency: -1, Sinks: sinks, FailureLog: log}, "concurrency"},
		{"max deliver 1", Config{MaxDeliver: 1, Sinks: sinks, FailureLog: log}, "max deliver"},
		{"tiny ack wait", Config{AckWait: time.Millisecond, Sinks: sinks, FailureLog: log}, "ack wait"},
		{"negative shutdown", Config{ShutdownTimeout: -time.Second, Sinks: sinks, FailureLog: log}, "shutdown timeout"},
		{"negative max hold", Config{MaxHold: -time.Second, Sinks: sinks, FailureLog: log}, "max hold"},
		{"negative failed holds", Config{MaxFailedHolds: -1, Sinks: sinks, FailureLog: log}, "max failed holds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.Durable != "bhiv-sinks" || d.AckWait != 30*time.Second || d.Concurrency != 256 || d.MaxDeliver != 20 ||
		d.MaxAckPending != 5000 || d.MaxInFlight != 5000 || d.ShutdownTimeout != 30*time.Second || d.MaxEventBytes != bhiv.DefaultMaxEventBytes ||
		d.RememberIDs != 100_000 || d.MaxHold != time.Hour || d.MaxFailedHolds != 3 || d.Logger == nil {
		t.Errorf("defaults %+v", d)
	}
}

func TestMemoryIsBounded(t *testing.T) {
	m := newMemory(3)
	m.add("a", 7, 0)
	m.add("a", 7, 2)
	m.add("b", 7, 1)
	m.add("c", 7, 0)
	if !m.has("a", 7, 0) || !m.has("a", 7, 2) || m.has("a", 7, 1) || !m.has("b", 7, 1) {
		t.Fatal("memory lost or invented a sink")
	}
	m.add("d", 7, 0) // evicts the least recently touched: c
	if m.len() != 3 || m.has("c", 7, 0) || !m.has("a", 7, 0) || !m.has("d", 7, 0) {
		t.Fatalf("after eviction: len %d, c %v, a %v, d %v", m.len(), m.has("c", 7, 0), m.has("a", 7, 0), m.has("d", 7, 0))
	}
}

// Another message under a remembered id is not the same event: none of its
// sinks count as settled, and it does not change what the first settled.
func TestMemoryFingerprint(t *testing.T) {
	m := newMemory(10)
	m.add("a", 1, 0)
	if m.conflict("a", 1) || !m.conflict("a", 2) || m.conflict("b", 2) {
		t.Fatal("conflict reported wrongly")
	}
	if m.has("a", 2, 0) {
		t.Fatal("a different message under id a counts as settled")
	}
	m.add("a", 2, 1)
	if m.has("a", 2, 1) || m.has("a", 1, 1) || !m.has("a", 1, 0) {
		t.Fatal("the second message changed what the first settled")
	}

	msg := func(data string, hdr map[string][]string) bhiv.Message {
		return bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(data), Header: hdr, Sequence: 1}
	}
	base := fingerprint(msg(`{"a":1}`, map[string][]string{"Nats-Msg-Id": {"x"}, "ce-type": {"bhiv.execution"}}))
	redelivered := msg(`{"a":1}`, map[string][]string{"ce-type": {"bhiv.execution"}, "Nats-Msg-Id": {"x"}})
	redelivered.Sequence = 9
	if fingerprint(redelivered) != base {
		t.Error("the same message has another fingerprint")
	}
	for name, other := range map[string]bhiv.Message{
		"data":    msg(`{"a":2}`, map[string][]string{"Nats-Msg-Id": {"x"}, "ce-type": {"bhiv.execution"}}),
		"header":  msg(`{"a":1}`, map[string][]string{"Nats-Msg-Id": {"x"}, "ce-type": {"bhiv.reward"}}),
		"subject": {Subject: "bhiv.events.reward", Data: []byte(`{"a":1}`), Header: map[string][]string{"Nats-Msg-Id": {"x"}, "ce-type": {"bhiv.execution"}}},
	} {
		if fingerprint(other) == base {
			t.Errorf("another %s, same fingerprint", name)
		}
	}
}

func TestRunFailsClearlyWithoutJetStream(t *testing.T) {
	srv := natstest.Start(t, func(o *server.Options) { o.JetStream = false })
	_, js := srv.Connect()
	c, err := New(js, Config{Logger: testLogger(t), ManageStream: true, Sinks: map[string]Sink{"core": newRecordSink("core")},
		FailureLog: &memLog{}, setupPatience: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("Run: %v (context %v), want an error at once", err, ctx.Err())
	}
	if !strings.Contains(err.Error(), "JetStream enabled") {
		t.Errorf("Run: %v, want a hint about JetStream", err)
	}
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("second Run: %v", err)
	}
	if err := c.Ready(ctx); err == nil {
		t.Error("Ready without JetStream: nil")
	}
}

// A different event under an id this process already handled is handed to
// the sinks (which keep the first and report the conflict), not acked as a
// redelivery; the same event published again is not.
func TestConflictingIDReachesTheSinks(t *testing.T) {
	e := newEnv(t)
	core := newRecordSink("core")
	log := &memLog{}
	r := start(t, e.js, baseConfig(t, log, map[string]Sink{"core": core}))
	env := func(action string) []byte {
		return []byte(`{"specversion":"1.0","id":"same-id","source":"t","type":"bhiv.execution","time":"2026-11-28T10:00:00Z","data":{"team_id":"t","action":"` + action + `"}}`)
	}
	e.publishRaw("bhiv.events.execution", env("first"), nil)
	waitFor(t, 10*time.Second, "the first event", func() bool { return core.callsFor("same-id") == 1 })
	e.publishRaw("bhiv.events.execution", env("first"), nil) // the same again
	e.publishRaw("bhiv.events.execution", env("second"), nil)
	waitFor(t, 10*time.Second, "the second event", func() bool { return core.callsFor("same-id") == 2 })
	e.waitSettled(DefaultDurable, 10*time.Second)
	if got := core.callsFor("same-id"); got != 2 {
		t.Errorf("core called %d times for same-id, want 2 (first, then the different second)", got)
	}
	if got := testutil.ToFloat64(r.c.m.acked); got != 3 {
		t.Errorf("acked %v, want 3", got)
	}
}
