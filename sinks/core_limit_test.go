package sinks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
)

// countingCore is an httptest Core that counts the requests it is serving
// at once (and the most it ever served at once) and answers each after
// latency with the status answer returns for it (200 when answer is
// nil).
type countingCore struct {
	*httptest.Server
	serving, most, total atomic.Int64
}

func newCountingCore(t *testing.T, latency time.Duration, answer func(n int64, r *http.Request) int) *countingCore {
	t.Helper()
	c := &countingCore{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := c.total.Add(1)
		now := c.serving.Add(1)
		defer c.serving.Add(-1)
		for m := c.most.Load(); now > m && !c.most.CompareAndSwap(m, now); m = c.most.Load() {
		}
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
		status := http.StatusOK
		if answer != nil {
			status = answer(n, r)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(c.Close)
	return c
}

// hammer calls c.Deliver from callers goroutines, each delivering events
// one after the other until ctx ends, and returns how many Core took and
// the first error other than ctx's.
func hammer(ctx context.Context, t *testing.T, c *Core, callers int) (taken int64, err error) {
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	var n atomic.Int64
	for g := range callers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				ev := testEvent(t, bhiv.KindExecution, fmt.Sprintf("%03d-%06d", g, i), 10)
				if err := c.Deliver(ctx, ev); err == nil {
					n.Add(1)
				} else if ctx.Err() == nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		err = *p
	}
	return n.Load(), err
}

// With a fixed concurrency N, Core never has more than N requests of this
// sink at once, retries included, and does get N (the limit is what
// bounds them, not something slower); the consumer is told N.
func TestCoreFixedConcurrency(t *testing.T) {
	const n = 4
	// The first attempt of every fifth event fails, so that retries run
	// beside first attempts.
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := newCountingCore(t, 5*time.Millisecond, func(i int64, r *http.Request) int {
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		defer mu.Unlock()
		if !seen[key] && len(seen)%5 == 0 {
			seen[key] = true
			return http.StatusServiceUnavailable
		}
		seen[key] = true
		return http.StatusOK
	})
	cfg := fastCore(srv.URL)
	cfg.Concurrency, cfg.ConcurrencyMax = n, 2 // the bounds of the adaptive limit do not apply
	cfg.BreakerFailures = 1000
	c := newTestCore(t, cfg)
	if got := c.MaxInFlight(); got != n {
		t.Errorf("MaxInFlight %d, want %d", got, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	taken, err := hammer(ctx, t, c, 40)
	if err != nil {
		t.Fatalf("a delivery failed: %v", err)
	}
	t.Logf("%d events taken, %d requests, at most %d at once", taken, srv.total.Load(), srv.most.Load())
	if most := srv.most.Load(); most != n {
		t.Errorf("Core served up to %d requests at once, want %d", most, n)
	}
	if got := c.ConcurrencyLimit(); got != n {
		t.Errorf("limit %d after the run, want %d", got, n)
	}

	cfg.BatchMax, cfg.Concurrency = 10, 3
	if got := newTestCore(t, cfg).MaxInFlight(); got != 30 {
		t.Errorf("MaxInFlight with batches of 10 and 3 requests at once: %d, want 30", got)
	}
}

// A request waiting out a retry's backoff holds no permit, and the
// consumer may start another delivery in its place; with an adaptive limit
// the consumer may also start a few more than the limit (headroom).
func TestCoreMaxInFlightBackoff(t *testing.T) {
	srv := newCountingCore(t, 0, func(i int64, _ *http.Request) int {
		if i == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := fastCore(srv.URL)
	cfg.Concurrency = 2
	cfg.Backoff, cfg.BackoffMax = 500*time.Millisecond, 500*time.Millisecond
	c := newTestCore(t, cfg)
	done := make(chan error, 1)
	go func() { done <- c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01BACKOFF", 0)) }()
	deadline := time.Now().Add(5 * time.Second)
	for c.MaxInFlight() != 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := c.MaxInFlight(); got != 3 {
		t.Errorf("MaxInFlight during the backoff: %d, want 3 (2 permits + 1 request between attempts)", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if got := c.MaxInFlight(); got != 2 {
		t.Errorf("MaxInFlight after the delivery: %d, want 2", got)
	}

	auto := newTestCore(t, fastCore(srv.URL))
	limit := auto.ConcurrencyLimit()
	if limit != DefaultCoreConcurrencyInitial {
		t.Errorf("adaptive limit starts at %d, want %d", limit, DefaultCoreConcurrencyInitial)
	}
	if got, want := auto.MaxInFlight(), limit+limit/8+2; got != want {
		t.Errorf("MaxInFlight with an adaptive limit of %d: %d, want %d", limit, got, want)
	}
}

// Against a Core that serves K requests at once and queues the rest, the
// adaptive limit stays around K however many callers there are, and
// Core's queue stays short. (A fixed limit of 3K would fail both checks.)
func TestCoreAdaptiveCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 10s")
	}
	const k, latency, run = 16, 100 * time.Millisecond, 10 * time.Second
	stub, err := corestub.New(corestub.Config{Capacity: k, Faults: corestub.Faults{Latency: latency}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	c := newTestCore(t, CoreConfig{URL: srv.URL + corestub.Path})
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	type sample struct {
		limit, queued int
		requests      int64
	}
	samples := make(chan []sample, 1)
	go func() {
		// Sample the second half: the first is the limit finding K.
		var out []sample
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for {
			select {
			case <-ctx.Done():
				samples <- out
				return
			case <-tick.C:
			}
			if time.Since(start) > run/2 {
				st := stub.Stats()
				out = append(out, sample{c.ConcurrencyLimit(), int(st.Queued), st.Requests})
			}
		}
	}()
	taken, err := hammer(ctx, t, c, 200)
	if err != nil {
		t.Fatalf("a delivery failed: %v", err)
	}
	got := <-samples
	if len(got) < 10 {
		t.Fatalf("only %d samples", len(got))
	}
	var sumLimit, sumQueued float64
	lo, hi := got[0].limit, got[0].limit
	for _, s := range got {
		sumLimit += float64(s.limit)
		sumQueued += float64(s.queued)
		lo, hi = min(lo, s.limit), max(hi, s.limit)
	}
	meanLimit, meanQueued := sumLimit/float64(len(got)), sumQueued/float64(len(got))
	span := time.Duration(len(got)-1) * 100 * time.Millisecond
	rate := float64(got[len(got)-1].requests-got[0].requests) / span.Seconds()
	// Little's law: the mean wait in Core's queue is the mean queue over
	// the rate.
	wait := time.Duration(meanQueued / max(rate, 1) * float64(time.Second))
	t.Logf("K=%d, latency %s, 200 callers: %d events taken in %s; second half: limit mean %.1f (min %d, max %d), "+
		"Core's queue mean %.1f (max %d over the run), %.0f requests/s (K/latency = %.0f), mean wait in Core's queue %s",
		k, latency, taken, run, meanLimit, lo, hi, meanQueued, stub.Stats().MaxQueued, rate, float64(k)/latency.Seconds(), wait.Round(100*time.Microsecond))
	// The library aims at a few requests queued in Core (3 to 6 at this
	// limit), so K+6 is where it means to be; the band is wide because on a
	// loaded 2-core machine CPU noise is a good part of a 20ms latency
	// (measured 16 to 28 in seven runs).
	if meanLimit < k/2 || meanLimit > 5*k/2 {
		t.Errorf("limit mean %.1f over the second half, want %d to %d (near K=%d)", meanLimit, k/2, 5*k/2, k)
	}
	if meanQueued > k {
		t.Errorf("Core's queue held %.1f requests on average, want at most K=%d (a wait of one service time)", meanQueued, k)
	}
}

// Against a Core with no bound, the adaptive limit grows well above where
// it starts.
func TestCoreAdaptiveGrows(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for up to 20s")
	}
	const latency, want = 50 * time.Millisecond, 4 * DefaultCoreConcurrencyInitial
	stub, err := corestub.New(corestub.Config{Faults: corestub.Faults{Latency: latency}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	c := newTestCore(t, CoreConfig{URL: srv.URL + corestub.Path})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	var reached time.Duration
	go func() {
		defer cancel()
		for ctx.Err() == nil {
			if c.ConcurrencyLimit() >= want {
				reached = time.Since(start)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	taken, err := hammer(ctx, t, c, 200)
	if err != nil {
		t.Fatalf("a delivery failed: %v", err)
	}
	t.Logf("latency %s, no capacity bound, 200 callers: limit %d after %s (%d events taken), from %d",
		latency, c.ConcurrencyLimit(), time.Since(start).Round(time.Millisecond), taken, DefaultCoreConcurrencyInitial)
	if reached == 0 {
		t.Errorf("limit %d after 20s, want it to reach %d", c.ConcurrencyLimit(), want)
	}
}

// A delivery cancelled while it waits for a permit returns at once with
// its context's error, leaves no waiter behind, counts nowhere as a
// failure, and the permits all come back.
func TestCoreLimiterCancel(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	srv := newFakeCore(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	reg := prometheus.NewRegistry()
	cfg := fastCore(srv.URL)
	cfg.Concurrency, cfg.BreakerFailures, cfg.Registerer = 1, 1, reg
	c := newTestCore(t, cfg)

	first := make(chan error, 1)
	go func() { first <- c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01HOLDER", 0)) }()
	waitFor(t, "the first delivery holds the permit", func() bool { return c.limiter.Inflight() == 1 })
	// The permit is taken before the request reaches Core: wait for it
	// there too, so that the count below is not early on a loaded machine.
	waitFor(t, "the first request at Core", func() bool { return len(srv.requests()) == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { second <- c.Deliver(ctx, testEvent(t, bhiv.KindReward, "01WAITER", 0)) }()
	waitFor(t, "the second delivery waits for a permit", func() bool { return c.limiter.Queued() == 1 })
	if got := gather(t, reg, "bhiv_core_requests_queued"); got != 1 {
		t.Errorf("bhiv_core_requests_queued %v, want 1", got)
	}
	if got := gather(t, reg, "bhiv_core_requests_in_flight"); got != 1 {
		t.Errorf("bhiv_core_requests_in_flight %v, want 1", got)
	}
	if got := gather(t, reg, "bhiv_core_concurrency_limit"); got != 1 {
		t.Errorf("bhiv_core_concurrency_limit %v, want 1", got)
	}
	cancel()
	select {
	case err := <-second:
		var se *bhiv.SinkError
		if !errors.Is(err, context.Canceled) || errors.As(err, &se) {
			t.Errorf("cancelled waiter: %v, want an error wrapping context.Canceled that is not a *bhiv.SinkError", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a delivery cancelled while waiting for a permit did not return")
	}
	if q := c.limiter.Queued(); q != 0 {
		t.Errorf("%d waiters left after the cancel", q)
	}
	if got := len(srv.requests()); got != 1 {
		t.Errorf("Core got %d requests, want 1 (the cancelled waiter sent none)", got)
	}
	if st := c.BreakerState(); st != "closed" {
		t.Errorf("breaker %s after a cancelled wait (BreakerFailures 1), want closed", st)
	}

	unblock()
	if err := <-first; err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01AFTER", 0)); err != nil {
		t.Fatalf("delivery after the cancel: %v", err)
	}
	if in, q := c.limiter.Inflight(), c.limiter.Queued(); in != 0 || q != 0 {
		t.Errorf("after the deliveries: %d in flight, %d queued, want 0 and 0", in, q)
	}
}

// waitFor polls cond until it holds, or fails the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// While the breaker is open a delivery fails at once with an outage, even
// when every permit is held by a request that hangs.
func TestCoreLimiterBreakerOpen(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeCore(t, func(n int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	cfg := fastCore(srv.URL)
	cfg.Concurrency, cfg.BreakerDelay = 1, time.Minute
	c := newTestCore(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hung := make(chan error, 1)
	go func() { hung <- c.Deliver(ctx, testEvent(t, bhiv.KindReward, "01HUNG", 0)) }()
	waitFor(t, "the hanging delivery holds the permit", func() bool { return c.limiter.Inflight() == 1 })
	c.breaker.Open()

	done := make(chan error, 1)
	go func() { done <- c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01HELD", 0)) }()
	select {
	case err := <-done:
		if !errors.Is(err, bhiv.ErrUnavailable) {
			t.Errorf("delivery with the breaker open: %v, want an error wrapping bhiv.ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a delivery with the breaker open waited for a permit")
	}
	cancel()
	<-hung
}
