package pipeline

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/hackaverse/bhiv/sinks"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		// Idle keep-alive connections of the httptest server.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// coreServer is an httptest BHIV Core whose answer to each request a test
// decides. It records the Idempotency-Key of every request it answered 2xx.
type coreServer struct {
	*httptest.Server
	mu     sync.Mutex
	answer func(key string) int // the status to answer
	took   map[string]int
	asked  map[string]int
}

func newCoreServer(t *testing.T) *coreServer {
	s := &coreServer{took: map[string]int{}, asked: map[string]int{}, answer: func(string) int { return http.StatusOK }}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		s.mu.Lock()
		code := s.answer(key)
		s.asked[key]++
		if code/100 == 2 {
			s.took[key]++
		}
		s.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *coreServer) setAnswer(f func(key string) int) {
	s.mu.Lock()
	s.answer = f
	s.mu.Unlock()
}

// has reports whether Core took every id.
func (s *coreServer) has(ids []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.took[id] == 0 {
			return false
		}
	}
	return true
}

func (s *coreServer) tookCount(ids []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range ids {
		if s.took[id] > 0 {
			n++
		}
	}
	return n
}

// stack is a real pipeline (Core, Bucket, failure log, consumer) on an
// embedded nats-server, running until the test ends.
type stack struct {
	t    *testing.T
	p    *Pipeline
	pub  *publisher.Publisher
	reg  *prometheus.Registry
	log  string // the failure log's path
	cons func() (pending uint64, ackPending int)

	published atomic.Int64 // events steadyTraffic published
}

func startStack(t *testing.T, core *coreServer, adjust func(*Config)) *stack {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(nats.MaxReconnects(-1))
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Consumer: consumer.Config{ManageStream: true, AckWait: 5 * time.Second, Concurrency: 8, ShutdownTimeout: 5 * time.Second},
		Core: sinks.CoreConfig{URL: core.URL + "/bhiv/core", MaxRetries: 2, Backoff: 10 * time.Millisecond,
			BackoffMax: 50 * time.Millisecond, BreakerFailures: 3, BreakerDelay: 300 * time.Millisecond, Timeout: 2 * time.Second},
		Bucket:     sinks.BucketConfig{Dir: filepath.Join(dir, "bucket"), NoFsync: true},
		FailureLog: sinks.FailureLogConfig{Path: filepath.Join(dir, "failed.log")},
		Registerer: reg,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	p, err := New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30s after its context ended")
		}
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		nc.Close()
	})
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	pub, err := publisher.New(pctx, js, publisher.Config{Source: "pipeline-test", EnsureStream: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, p: p, pub: pub, reg: reg, log: cfg.FailureLog.Path}
	s.cons = func() (uint64, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, bhiv.DefaultStreamName, consumer.DefaultDurable)
		if err != nil {
			return 1, 1 // not there yet: not settled
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 1, 1
		}
		return info.NumPending, info.NumAckPending
	}
	return s
}

// publish publishes n execution events of team and returns their ids.
func (s *stack) publish(team string, n int) []string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ids []string
	for i := range n {
		res, err := s.pub.Execution(ctx, bhiv.Execution{TeamID: team, Action: fmt.Sprintf("run-%d", i)})
		if err != nil {
			s.t.Fatalf("publish: %v", err)
		}
		ids = append(ids, res.ID)
	}
	return ids
}

// records returns the failure log's records.
func (s *stack) records() []bhiv.FailureRecord {
	s.t.Helper()
	var recs []bhiv.FailureRecord
	err := sinks.ReadFailureLog(s.log, nil, func(r bhiv.FailureRecord) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return recs
}

// metric returns the sum of every series of the named metric.
func (s *stack) metric(name string) float64 {
	s.t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

// settled waits until the durable has nothing pending or unacked.
func (s *stack) settled(timeout time.Duration) {
	s.t.Helper()
	waitFor(s.t, timeout, "the durable settled", func() bool {
		p, a := s.cons()
		return p == 0 && a == 0
	})
}

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

// TestIntakeResumesAfterAPermanentProbe: Core answers 503 until its circuit
// breaker opens, holding the events in JetStream; then it answers 400, so
// the breaker's half-open probe and every held event end as permanent
// failure records instead of being taken. No sink is unavailable any more:
// intake must resume, and the events published next reach Core and are
// acked.
func TestIntakeResumesAfterAPermanentProbe(t *testing.T) {
	core := newCoreServer(t)
	core.setAnswer(func(string) int { return http.StatusServiceUnavailable })
	s := startStack(t, core, nil)

	held := s.publish("held", 5)
	waitFor(t, 10*time.Second, "Core's breaker open", func() bool { return s.p.Core.BreakerState() == "open" })
	waitFor(t, 10*time.Second, "intake paused", func() bool { return s.metric("bhiv_intake_paused") == 1 })
	if n := len(s.records()); n != 0 {
		t.Fatalf("%d failure records during the outage, want the events held", n)
	}

	core.setAnswer(func(string) int { return http.StatusBadRequest })
	waitFor(t, 10*time.Second, "the held events in the failure log", func() bool { return len(s.records()) == len(held) })
	for _, r := range s.records() {
		if r.Sink != sinks.CoreName || r.ErrorClass != bhiv.ClassPermanent || r.Status != http.StatusBadRequest {
			t.Errorf("record %s: sink %s class %s status %d, want core / permanent / 400", r.EventID, r.Sink, r.ErrorClass, r.Status)
		}
	}

	core.setAnswer(func(string) int { return http.StatusOK })
	later := s.publish("later", 10)
	waitFor(t, 15*time.Second, "the later events at Core", func() bool { return core.has(later) })
	s.settled(10 * time.Second)
	if got := s.metric("bhiv_intake_paused"); got != 0 {
		t.Errorf("bhiv_intake_paused %v after the later events were acked, want 0", got)
	}
	if n := len(s.records()); n != len(held) {
		t.Errorf("%d failure records, want %d", n, len(held))
	}
}

// steadyTraffic publishes an event every 20ms until the returned stop is
// called (or the test ends); stop returns the ids published.
func (s *stack) steadyTraffic() (stop func() []string) {
	s.published.Store(0)
	done := make(chan struct{})
	published := make(chan []string, 1)
	go func() {
		var ids []string
		defer func() { published <- ids }()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := s.pub.Execution(ctx, bhiv.Execution{TeamID: "steady", Action: fmt.Sprintf("run-%d", i)})
			cancel()
			if err == nil {
				ids = append(ids, res.ID)
				s.published.Add(1)
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
	s.t.Cleanup(func() { stop() })
	return stop
}

// TestPoisonEvent: Core answers 500 to one event only and 200 to all
// others. That event's own failed attempts open Core's circuit breaker, so
// each of its deliveries ends as an outage (bhiv.ErrUnavailable) and its
// retries never run out: without a bound it would be held, with
// heartbeats, for ever, reopening the breaker for everyone. It must end in
// the failure log, as retryable_exhausted, while the other events keep
// flowing: after MaxFailedHolds failed holds by default, or at the hold
// limit when that comes first.
func TestPoisonEvent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		adjust  func(*consumer.Config)
		why     string
		within  time.Duration
		minAcks float64 // other events acked while the poison one was held
	}{
		{"failed holds", nil, "failed in 3 holds while the sink took other events", 30 * time.Second, 5},
		{"hold limit", func(c *consumer.Config) { c.MaxHold, c.MaxFailedHolds = 3*time.Second, 1_000_000 },
			"past the hold limit of 3s", 15 * time.Second, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core := newCoreServer(t)
			var poison string
			var poisonMu sync.Mutex
			core.setAnswer(func(key string) int {
				poisonMu.Lock()
				defer poisonMu.Unlock()
				if key == poison {
					return http.StatusInternalServerError
				}
				return http.StatusOK
			})
			s := startStack(t, core, func(c *Config) {
				// One failure opens the breaker, so that the poison event's
				// own retries open it however the other events' successes
				// interleave with them (with the default of 5, a burst of
				// such events, or quiet traffic, does the same).
				c.Core.MaxRetries, c.Core.BreakerFailures = 3, 1
				c.Core.Backoff, c.Core.BackoffMax = 2*time.Millisecond, 5*time.Millisecond
				if tc.adjust != nil {
					tc.adjust(&c.Consumer)
				}
			})
			// The poison event's id is known only once it is published:
			// publish it with Core told first.
			ev, err := bhiv.New(bhiv.KindExecution, "pipeline-test", "", bhiv.Execution{TeamID: "poison", Action: "crash-core"})
			if err != nil {
				t.Fatal(err)
			}
			poisonMu.Lock()
			poison = ev.ID
			poisonMu.Unlock()
			stop := s.steadyTraffic()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := s.pub.Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the poison event at Core", func() bool {
				core.mu.Lock()
				defer core.mu.Unlock()
				return core.asked[ev.ID] > 0
			})
			heldFrom, acked, published := time.Now(), s.metric("bhiv_events_acked_total"), s.published.Load()
			waitFor(t, tc.within, "the poison event in the failure log", func() bool { return len(s.records()) > 0 })
			// Count the traffic over a second at least: given up after
			// three failed holds, the poison event may be held for only
			// three breaker delays, most of which every event waits out.
			time.Sleep(time.Until(heldFrom.Add(time.Second)))
			ackedWhileHeld := s.metric("bhiv_events_acked_total") - acked
			publishedWhileHeld := float64(s.published.Load() - published)
			t.Logf("poison event given up after %s; %v other events acked meanwhile, of %v published", time.Since(heldFrom).Round(time.Millisecond), ackedWhileHeld, publishedWhileHeld)
			others := stop()
			s.settled(20 * time.Second)

			recs := s.records()
			if len(recs) != 1 {
				t.Fatalf("%d failure records, want the poison event's only", len(recs))
			}
			rec := recs[0]
			if rec.EventID != ev.ID || rec.Sink != sinks.CoreName || rec.ErrorClass != bhiv.ClassRetryableExhausted || !strings.Contains(rec.Error, tc.why) {
				t.Errorf("record of %s: sink %s class %s error %q; want %s, core, retryable_exhausted, %q",
					rec.EventID, rec.Sink, rec.ErrorClass, rec.Error, ev.ID, tc.why)
			}
			// Traffic flows: most of what was published while the poison
			// event was held got through (how much was published depends
			// on the machine's load; at least a few events were).
			if ackedWhileHeld < min(tc.minAcks, publishedWhileHeld/2) || publishedWhileHeld < 5 {
				t.Errorf("%v other events acked while the poison event was held, of %v published, want at least %v: traffic did not flow",
					ackedWhileHeld, publishedWhileHeld, min(tc.minAcks, publishedWhileHeld/2))
			}
			if !core.has(others) {
				t.Errorf("Core took %d of the %d other events", core.tookCount(others), len(others))
			}
		})
	}
}

// TestConfigValidate checks that Validate reports the problems of every
// part at once, and that New refuses a bad config before it opens or
// creates anything.
func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	good := func() Config {
		return Config{
			Core:       sinks.CoreConfig{URL: "http://127.0.0.1:1/bhiv/core"},
			Bucket:     sinks.BucketConfig{Dir: filepath.Join(dir, "bucket")},
			FailureLog: sinks.FailureLogConfig{Path: filepath.Join(dir, "failed.log")},
		}
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // substrings of the error; none for valid
	}{
		{"valid", func(*Config) {}, nil},
		{"consumer", func(c *Config) { c.Consumer.AckWait = time.Millisecond }, []string{"ack wait 1ms"}},
		{"core", func(c *Config) { c.Core.URL = "ftp://x" }, []string{"scheme must be http or https"}},
		{"bucket", func(c *Config) { c.Bucket.RetryDelay = -time.Second }, []string{"retry delay"}},
		{"s3 in place of the bucket", func(c *Config) { c.Bucket.RetryDelay = -time.Second; c.S3 = &sinks.S3Config{} }, []string{"s3 bucket name"}},
		{"failure log", func(c *Config) { c.FailureLog.Path = dir + "/" }, []string{"names a directory"}},
		{"every part at once", func(c *Config) {
			c.Consumer.MaxDeliver = 1
			c.Core.BatchMax = -1
			c.FailureLog.Path = "."
		}, []string{"max deliver 1", "core batch max -1", "names a directory"}},
	}
	for _, tt := range tests {
		cfg := good()
		tt.change(&cfg)
		err := cfg.Validate()
		if len(tt.want) == 0 && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want an error containing %q", tt.name, err, w)
			}
		}
	}

	// New checks first: a bad consumer setting leaves no bucket directory
	// and no failure log behind.
	cfg := good()
	cfg.Consumer.AckWait = time.Millisecond
	if _, err := New(nil, cfg); err == nil || !strings.Contains(err.Error(), "ack wait") {
		t.Fatalf("New with a bad ack wait: %v", err)
	}
	for _, p := range []string{cfg.Bucket.Dir, cfg.FailureLog.Path} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("New refused the config but created %s", p)
		}
	}
}
