package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded server's and client's background goroutines that
		// outlive a test by a moment after shutdown.
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// recordSink is a real in-memory sink: it records every id it takes. Fail,
// when set, may refuse an event; Delay makes each delivery take a while.
type recordSink struct {
	name  string
	delay time.Duration
	fail  func(ev *bhiv.Event) error // nil: take everything

	mu    sync.Mutex
	got   map[string]int
	calls map[string]int
	busy  atomic.Int64
}

func newRecordSink(name string) *recordSink {
	return &recordSink{name: name, got: map[string]int{}, calls: map[string]int{}}
}

func (s *recordSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	s.mu.Lock()
	s.calls[ev.ID]++
	s.mu.Unlock()
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.fail != nil {
		if err := s.fail(ev); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.got[ev.ID]++
	s.mu.Unlock()
	return nil
}

// ids returns the ids taken, with how many times each was taken.
func (s *recordSink) taken() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.got))
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

func (s *recordSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *recordSink) callsFor(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

// breakerSink is a sink with a circuit breaker that the test opens and
// closes: while open, Available is false and Deliver returns ErrUnavailable.
type breakerSink struct {
	*recordSink
	open     atomic.Bool
	rejected atomic.Int64
}

func (s *breakerSink) Available() bool { return !s.open.Load() }

func (s *breakerSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	if s.open.Load() {
		s.rejected.Add(1)
		return &bhiv.SinkError{Sink: s.name, Class: bhiv.ClassRetryableExhausted, Attempts: 1, Err: fmt.Errorf("breaker open: %w", bhiv.ErrUnavailable)}
	}
	return s.recordSink.Deliver(ctx, ev)
}

// memLog is a failure log in memory that can be made to fail.
type memLog struct {
	mu     sync.Mutex
	recs   []bhiv.FailureRecord
	fail   func(recs []bhiv.FailureRecord) bool // nil: never fail
	failed atomic.Int64
}

func (l *memLog) Append(_ context.Context, recs ...bhiv.FailureRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil && l.fail(recs) {
		l.failed.Add(1)
		return errors.New("write failure log: no space left on device")
	}
	// Records go through JSON, as in the real log.
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		var back bhiv.FailureRecord
		if err := json.Unmarshal(b, &back); err != nil {
			return err
		}
		l.recs = append(l.recs, back)
	}
	return nil
}

func (l *memLog) setFail(f func([]bhiv.FailureRecord) bool) {
	l.mu.Lock()
	l.fail = f
	l.mu.Unlock()
}

func (l *memLog) records() []bhiv.FailureRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bhiv.FailureRecord(nil), l.recs...)
}

// env is one embedded server with the events stream.
type env struct {
	t   *testing.T
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	e := &env{t: t, srv: srv}
	e.nc, e.js = e.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := jsstream.Ensure(ctx, e.js, bhiv.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// connect opens a connection as the cmd does: reconnecting forever.
func (e *env) connect() (*nats.Conn, jetstream.JetStream) {
	return e.srv.Connect(nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// baseConfig is a test configuration: short timings, the given sinks.
func baseConfig(t *testing.T, log FailureLog, sinks map[string]Sink) Config {
	return Config{
		ManageStream:    true,
		AckWait:         5 * time.Second,
		Concurrency:     16,
		ShutdownTimeout: 5 * time.Second,
		NakDelay:        100 * time.Millisecond,
		Sinks:           sinks,
		FailureLog:      log,
		Logger:          testLogger(t),
		Registerer:      prometheus.NewRegistry(),
		infoEvery:       200 * time.Millisecond,
		retryHold:       500 * time.Millisecond,
	}
}

// testLogger logs warnings and errors to the test log when BHIV_TEST_LOG is
// set, and discards otherwise.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("BHIV_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// running is a consumer running in the background.
type running struct {
	c      *Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a consumer with cfg on js until stop or the end of the test.
func start(t *testing.T, js jetstream.JetStream, cfg Config) *running {
	t.Helper()
	c, err := New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the consumer and waits for Run to return nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return 30s after its context ended")
		}
	})
}

// event returns a valid event of the given index, alternating kinds.
func event(t testing.TB, i int) bhiv.Event {
	t.Helper()
	id := fmt.Sprintf("ev-%06d", i)
	var ev bhiv.Event
	var err error
	if i%2 == 0 {
		ev, err = bhiv.New(bhiv.KindExecution, "test", id, bhiv.Execution{TeamID: fmt.Sprintf("team-%d", i%5), Action: "run", DurationMS: int64(i)})
	} else {
		ev, err = bhiv.New(bhiv.KindReward, "test", id, bhiv.Reward{TeamID: fmt.Sprintf("team-%d", i%5), Reward: float64(i)})
	}
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// publish publishes events from..to-1 asynchronously, waits for the acks
// and republishes (same message id) whatever failed; it returns their ids.
func (e *env) publish(from, to int) []string {
	e.t.Helper()
	var ids []string
	type sent struct {
		subject string
		data    []byte
		id      string
		f       jetstream.PubAckFuture
	}
	var batch []sent
	check := func() {
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			e.t.Fatal("publish acks not received")
		}
		for _, s := range batch {
			select {
			case <-s.f.Ok():
				continue
			case <-s.f.Err():
			}
			e.publishSync(s.subject, s.data, s.id) // e.g. JetStream not ready after a restart
		}
		batch = batch[:0]
	}
	for i := from; i < to; i++ {
		ev := event(e.t, i)
		b, err := json.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		subject := bhiv.Subject("", ev.Kind())
		f, err := e.js.PublishAsync(subject, b, jetstream.WithMsgID(ev.ID))
		if err != nil {
			e.t.Fatal(err)
		}
		batch = append(batch, sent{subject, b, ev.ID, f})
		ids = append(ids, ev.ID)
		if len(batch) == 1000 {
			check()
		}
	}
	check()
	return ids
}

// publishSync publishes one event, retrying for a while.
func (e *env) publishSync(subject string, data []byte, id string) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := e.js.Publish(ctx, subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("publish %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishRaw publishes data on subject with optional headers, synchronously.
func (e *env) publishRaw(subject string, data []byte, hdr nats.Header) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: hdr})
	if err != nil {
		e.t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// info returns the durable's info.
func (e *env) info(durable string) *jetstream.ConsumerInfo {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := e.js.Consumer(ctx, bhiv.DefaultStreamName, durable)
	if err != nil {
		e.t.Fatalf("consumer %s: %v", durable, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		e.t.Fatalf("consumer %s info: %v", durable, err)
	}
	return info
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSettled waits until the durable has nothing pending or unacked.
func (e *env) waitSettled(durable string, timeout time.Duration) {
	e.t.Helper()
	var last *jetstream.ConsumerInfo
	deadline := time.Now().Add(timeout)
	for {
		last = e.info(durable)
		if last.NumPending == 0 && last.NumAckPending == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("durable %s not settled after %s: pending %d, ack pending %d", durable, timeout, last.NumPending, last.NumAckPending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkExactlyOnce fails the test unless sink took every id exactly once and
// nothing else.
func checkExactlyOnce(t *testing.T, name string, taken map[string]int, ids []string) {
	t.Helper()
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
		if n := taken[id]; n != 1 {
			t.Errorf("%s took %s %d times, want once", name, id, n)
		}
	}
	var extra []string
	for id := range taken {
		if !want[id] {
			extra = append(extra, id)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("%s took unexpected ids %v", name, extra)
	}
}

// checkAtLeastOnce fails the test unless sink took every id.
func checkAtLeastOnce(t *testing.T, name string, taken map[string]int, ids []string) {
	t.Helper()
	missing := 0
	for _, id := range ids {
		if taken[id] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("%s never took %s", name, id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%s missed %d of %d events", name, missing, len(ids))
	}
}

func hasAll(s *recordSink, ids []string) func() bool {
	return func() bool {
		taken := s.taken()
		for _, id := range ids {
			if taken[id] == 0 {
				return false
			}
		}
		return true
	}
}
