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
	t.Cleanup(func() {
		if !r.isStopped() {
			r.stop(t)
		}
	})

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
	if info.Config.AckWait != cfg.AckWait || info.Config.MaxDeliver != DefaultMaxDeliver ||
		info.Config.FilterSubject != "bhiv.events.>" || info.Config.InactiveThreshold != 0 ||
		info.Config.MaxAckPending != 3*64*DefaultExpectedReplicas {
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
	cfg.AckWait = time.Second
	cfg.Concurrency = 8
	r := start(t, e.js, cfg)

	ids := e.publish(0, 50)
	waitFor(t, 10*time.Second, "first events at core", hasAll(core.recordSink, ids))
	core.open.Store(true)
	ids = append(ids, e.publish(50, 200)...)
	waitFor(t, 5*time.Second, "intake paused", func() bool { return testutil.ToFloat64(r.c.m.intakePaused) == 1 })
	held := r.c.inFlight()
	time.Sleep(2500 * time.Millisecond) // more than twice the ack wait
	if got := r.c.inFlight(); got > 3*cfg.Concurrency {
		t.Errorf("%d events held while paused, want at most %d", got, 3*cfg.Concurrency)
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
