package sinks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/sinks/sinktest"
)

// coreReq is a request a fakeCore received.
type coreReq struct {
	header http.Header
	body   []byte
	at     time.Time
}

// fakeCore is an httptest server standing in for BHIV Core. It records
// every request and answers with fn, which gets the request's number
// (1-based).
type fakeCore struct {
	*httptest.Server
	fn   func(n int, w http.ResponseWriter, r *http.Request)
	mu   sync.Mutex
	reqs []coreReq

	index   map[string][][]byte // event id → distinct bodies, for stored
	indexed int                 // the requests index covers
}

func newFakeCore(t testing.TB, fn func(n int, w http.ResponseWriter, r *http.Request)) *fakeCore {
	t.Helper()
	f := &fakeCore{fn: fn}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeCore) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, coreReq{header: r.Header.Clone(), body: body, at: time.Now()})
	n := len(f.reqs)
	f.mu.Unlock()
	if f.fn == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	f.fn(n, w, r)
}

// requests returns the requests received so far.
func (f *fakeCore) requests() []coreReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]coreReq(nil), f.reqs...)
}

// events returns the envelopes of the events received so far, whatever
// the content mode, read as the core stub reads them and encoded by
// bhiv.Event.MarshalJSON. Requests that are not CloudEvents are skipped.
func (f *fakeCore) events() []json.RawMessage {
	var out []json.RawMessage
	for _, r := range f.requests() {
		_, evs, err := corestub.Parse(r.header, r.body)
		if err != nil {
			continue
		}
		for _, ev := range evs {
			b, err := ev.MarshalJSON()
			if err != nil {
				continue
			}
			out = append(out, b)
		}
	}
	return out
}

// stored returns the distinct bodies of the event id received so far.
func (f *fakeCore) stored(id string) [][]byte {
	f.mu.Lock()
	n := len(f.reqs)
	f.mu.Unlock()
	if f.index == nil || f.indexed != n {
		f.index = map[string][][]byte{}
		seen := map[string]bool{}
		for _, raw := range f.events() {
			var ev struct{ ID string }
			if json.Unmarshal(raw, &ev) == nil && !seen[string(raw)] {
				seen[string(raw)] = true
				f.index[ev.ID] = append(f.index[ev.ID], raw)
			}
		}
		f.indexed = n
	}
	return f.index[id]
}

// statuses answers the nth request with codes[n-1], and later ones with the
// last code.
func statuses(codes ...int) func(int, http.ResponseWriter, *http.Request) {
	return func(n int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(codes[min(n, len(codes))-1])
	}
}

// fastCore is a config for tests: millisecond backoffs.
func fastCore(url string) CoreConfig {
	return CoreConfig{
		URL:          url + "/bhiv/core",
		Backoff:      time.Millisecond,
		BackoffMax:   5 * time.Millisecond,
		BreakerDelay: 100 * time.Millisecond,
		Timeout:      5 * time.Second,
	}
}

func newTestCore(t testing.TB, cfg CoreConfig) *Core {
	t.Helper()
	c, err := NewCore(cfg)
	if err != nil {
		t.Fatalf("NewCore: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sinkErr returns err as a *bhiv.SinkError or fails the test.
func sinkErr(t *testing.T, err error) *bhiv.SinkError {
	t.Helper()
	var se *bhiv.SinkError
	if !errors.As(err, &se) {
		t.Fatalf("error %T %v is not a *bhiv.SinkError", err, err)
	}
	if se.Sink != CoreName {
		t.Errorf("SinkError.Sink %q, want %q", se.Sink, CoreName)
	}
	if se.Err == nil {
		t.Error("SinkError.Err is nil")
	}
	return se
}

// dialTimeoutErr returns the error of a real TCP dial that timed out: it
// wraps context.DeadlineExceeded although no caller's context ended.
func dialTimeoutErr(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", ln.Addr().String())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial with a 1ns timeout: %v, want a timeout", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial timeout %v does not wrap context.DeadlineExceeded: the classify rows below prove nothing", err)
	}
	return err
}

func TestCoreClassify(t *testing.T) {
	dialTimeout := dialTimeoutErr(t)
	tests := []struct {
		done   bool // the caller's context has ended
		status int
		err    error
		want   coreOutcome
	}{
		{false, 200, nil, coreOK}, {false, 201, nil, coreOK}, {false, 202, nil, coreOK}, {false, 204, nil, coreOK},
		{false, 408, nil, coreRetry}, {false, 425, nil, coreRetry}, {false, 429, nil, coreRetry},
		{false, 500, nil, coreRetry}, {false, 502, nil, coreRetry}, {false, 503, nil, coreRetry}, {false, 504, nil, coreRetry},
		{false, 401, nil, coreRefused}, {false, 403, nil, coreRefused}, {false, 404, nil, coreRefused}, {false, 407, nil, coreRefused},
		{false, 400, nil, corePermanent}, {false, 405, nil, corePermanent}, {false, 409, nil, corePermanent},
		{false, 410, nil, corePermanent}, {false, 413, nil, corePermanent}, {false, 415, nil, corePermanent},
		{false, 422, nil, corePermanent}, {false, 501, nil, corePermanent}, {false, 505, nil, corePermanent},
		{false, 301, nil, corePermanent}, {false, 302, nil, corePermanent}, {false, 304, nil, corePermanent},
		{false, 0, syscall.ECONNREFUSED, coreRetry},
		{false, 0, timeout.ErrExceeded, coreRetry},
		{false, 0, errors.New("unexpected EOF"), coreRetry},
		{false, 0, circuitbreaker.ErrOpen, coreUnavailable},
		// Cancellation comes from the caller's context, not from the error.
		{false, 0, dialTimeout, coreRetry},
		{false, 0, fmt.Errorf("post: %w", context.Canceled), coreRetry},
		{false, 0, context.DeadlineExceeded, coreRetry},
		{true, 0, fmt.Errorf("post: %w", context.Canceled), coreCancelled},
		{true, 0, dialTimeout, coreCancelled},
		{true, 0, circuitbreaker.ErrOpen, coreUnavailable},
		// An answer counts as an answer, even once the caller has gone.
		{true, 200, nil, coreOK}, {true, 503, nil, coreRetry}, {true, 401, nil, coreRefused}, {true, 400, nil, corePermanent},
	}
	for _, tt := range tests {
		var resp *http.Response
		if tt.err == nil {
			resp = &http.Response{StatusCode: tt.status}
		}
		if got := classifyCore(tt.done, resp, tt.err); got != tt.want {
			t.Errorf("classifyCore(done=%v, %d, %v) = %d, want %d", tt.done, tt.status, tt.err, got, tt.want)
		}
	}
}

func TestCoreResponses(t *testing.T) {
	longBody := "bad event: data.team_id is missing " + strings.Repeat("é", 1500)
	tests := []struct {
		name      string
		fn        func(int, http.ResponseWriter, *http.Request)
		wantReqs  int
		wantClass bhiv.ErrorClass // "" for success
		wantStat  int
		wantBody  string // a prefix of SinkError.Body
		wantUnav  bool   // the error wraps bhiv.ErrUnavailable
	}{
		{name: "200", fn: statuses(200), wantReqs: 1},
		{name: "204", fn: statuses(204), wantReqs: 1},
		{name: "503 503 200", fn: statuses(503, 503, 200), wantReqs: 3},
		{name: "408 425 429 200", fn: statuses(408, 425, 429, 200), wantReqs: 4},
		{name: "500 502 504 200", fn: statuses(500, 502, 504, 200), wantReqs: 4},
		{name: "500 forever", fn: statuses(500), wantReqs: 4, wantClass: bhiv.ClassRetryableExhausted, wantStat: 500},
		{name: "400", fn: func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, longBody)
		}, wantReqs: 1, wantClass: bhiv.ClassPermanent, wantStat: 400, wantBody: "bad event: data.team_id is missing é"},
		{name: "401", fn: statuses(401), wantReqs: 1, wantClass: bhiv.ClassRetryableExhausted, wantStat: 401, wantUnav: true},
		{name: "403", fn: statuses(403), wantReqs: 1, wantClass: bhiv.ClassRetryableExhausted, wantStat: 403, wantUnav: true},
		{name: "404", fn: statuses(404), wantReqs: 1, wantClass: bhiv.ClassRetryableExhausted, wantStat: 404, wantUnav: true},
		{name: "407", fn: statuses(407), wantReqs: 1, wantClass: bhiv.ClassRetryableExhausted, wantStat: 407, wantUnav: true},
		{name: "503 then 401", fn: statuses(503, 401), wantReqs: 2, wantClass: bhiv.ClassRetryableExhausted, wantStat: 401, wantUnav: true},
		{name: "410", fn: statuses(410), wantReqs: 1, wantClass: bhiv.ClassPermanent, wantStat: 410},
		{name: "501", fn: statuses(501), wantReqs: 1, wantClass: bhiv.ClassPermanent, wantStat: 501},
		{name: "503 then 400", fn: statuses(503, 400), wantReqs: 2, wantClass: bhiv.ClassPermanent, wantStat: 400},
		{name: "301 not followed", fn: func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(301)
		}, wantReqs: 1, wantClass: bhiv.ClassPermanent, wantStat: 301},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeCore(t, tt.fn)
			c := newTestCore(t, fastCore(srv.URL))
			ev := testEvent(t, bhiv.KindExecution, "01RESP", 50)
			err := c.Deliver(context.Background(), ev)
			reqs := srv.requests()
			if len(reqs) != tt.wantReqs {
				t.Errorf("%d requests, want %d", len(reqs), tt.wantReqs)
			}
			for i, r := range reqs {
				// Binary mode, the default: the body is the data.
				if !bytes.Equal(r.body, ev.Data) {
					t.Errorf("request %d body %s, want the data %s", i+1, r.body, ev.Data)
				}
				for name, v := range map[string]string{
					"Idempotency-Key": ev.ID, "Content-Type": "application/json", "Ce-Id": ev.ID,
					"User-Agent": DefaultCoreUserAgent, "Authorization": "",
				} {
					if got := r.header.Get(name); got != v {
						t.Errorf("request %d %s %q, want %q", i+1, name, got, v)
					}
				}
			}
			if tt.wantClass == "" {
				if err != nil {
					t.Fatalf("Deliver: %v", err)
				}
				return
			}
			se := sinkErr(t, err)
			if se.Class != tt.wantClass || se.Status != tt.wantStat || se.Attempts != tt.wantReqs {
				t.Errorf("got class %s status %d attempts %d, want %s %d %d", se.Class, se.Status, se.Attempts, tt.wantClass, tt.wantStat, tt.wantReqs)
			}
			if errors.Is(err, bhiv.ErrUnavailable) != tt.wantUnav {
				t.Errorf("error %v: wraps ErrUnavailable %v, want %v", err, !tt.wantUnav, tt.wantUnav)
			}
			if !strings.HasPrefix(se.Body, tt.wantBody) {
				t.Errorf("body %q, want it to start with %q", se.Body, tt.wantBody)
			}
			if len(se.Body) > maxBodyExcerpt {
				t.Errorf("body excerpt is %d bytes, want at most %d", len(se.Body), maxBodyExcerpt)
			}
			if tt.wantBody != "" && len(se.Body) < maxBodyExcerpt-3 {
				t.Errorf("body excerpt is %d bytes, want about %d", len(se.Body), maxBodyExcerpt)
			}
		})
	}
}

func TestCoreRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter func() string
		backoffMax time.Duration
		minGap     time.Duration
		maxGap     time.Duration
	}{
		{"429 seconds", 429, func() string { return "1" }, 5 * time.Second, time.Second, 4 * time.Second},
		// An HTTP date has one-second resolution: two seconds ahead is a
		// wait of more than one.
		{"429 http date", 429, func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, 5 * time.Second, time.Second, 4 * time.Second},
		{"503 seconds", 503, func() string { return "1" }, 5 * time.Second, time.Second, 4 * time.Second},
		{"capped at backoff max", 503, func() string { return "3600" }, 20 * time.Millisecond, 0, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeCore(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.retryAfter())
					w.WriteHeader(tt.status)
					return
				}
				w.WriteHeader(200)
			})
			cfg := fastCore(srv.URL)
			cfg.BackoffMax = tt.backoffMax
			c := newTestCore(t, cfg)
			if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01RETRYAFTER", 0)); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			reqs := srv.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d requests, want 2", len(reqs))
			}
			gap := reqs[1].at.Sub(reqs[0].at)
			if gap < tt.minGap || gap > tt.maxGap {
				t.Errorf("retried after %s, want between %s and %s", gap, tt.minGap, tt.maxGap)
			}
		})
	}
}

func TestCoreRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"Sat, 28 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sat, 28 Nov 2026 11:00:00 GMT", 0, true}, // in the past
		{"Saturday, 28-Nov-26 12:01:00 GMT", time.Minute, true},
	}
	for _, tt := range tests {
		resp := &http.Response{Header: http.Header{}}
		if tt.header != "" {
			resp.Header.Set("Retry-After", tt.header)
		}
		got, ok := retryAfter(resp, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCoreBackoff(t *testing.T) {
	c := newTestCore(t, CoreConfig{Backoff: 100 * time.Millisecond, BackoffMax: time.Second})
	for attempts, base := range map[int]time.Duration{1: 100, 2: 200, 3: 400, 4: 800, 5: 1000, 30: 1000} {
		base *= time.Millisecond
		for range 20 {
			d := c.retryDelay(fakeAttempt{attempts: attempts})
			lo := time.Duration(float64(base) * (1 - backoffJitter))
			hi := min(time.Duration(float64(base)*(1+backoffJitter)), time.Second)
			if d < lo || d > hi {
				t.Errorf("delay after %d attempts %s, want within [%s, %s]", attempts, d, lo, hi)
			}
		}
	}
}

func TestCoreTimeout(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		w.WriteHeader(200)
	}
	t.Run("retried", func(t *testing.T) {
		srv := newFakeCore(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				slow(w, r)
				return
			}
			w.WriteHeader(200)
		})
		cfg := fastCore(srv.URL)
		cfg.Timeout = 100 * time.Millisecond
		c := newTestCore(t, cfg)
		if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01SLOW", 0)); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
		if n := len(srv.requests()); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		srv := newFakeCore(t, func(_ int, w http.ResponseWriter, r *http.Request) { slow(w, r) })
		cfg := fastCore(srv.URL)
		cfg.Timeout = 50 * time.Millisecond
		cfg.MaxRetries = 2
		c := newTestCore(t, cfg)
		err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01SLOWER", 0))
		se := sinkErr(t, err)
		if se.Class != bhiv.ClassRetryableExhausted || se.Attempts != 3 {
			t.Errorf("class %s after %d attempts, want retryable_exhausted after 3", se.Class, se.Attempts)
		}
		if !errors.Is(err, timeout.ErrExceeded) || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("error %v does not say the attempt timed out", err)
		}
		if n := len(srv.requests()); n != 3 {
			t.Errorf("%d requests, want 3", n)
		}
	})
}

// refusedURL returns the URL of a port nothing listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestCoreConnectionRefused(t *testing.T) {
	cfg := fastCore(refusedURL(t))
	cfg.MaxRetries = 2
	c := newTestCore(t, cfg)
	ev := testEvent(t, bhiv.KindExecution, "01REFUSED", 0)
	err := c.Deliver(context.Background(), ev)
	se := sinkErr(t, err)
	if se.Class != bhiv.ClassRetryableExhausted || se.Attempts != 3 || se.Status != 0 {
		t.Errorf("class %s, %d attempts, status %d; want retryable_exhausted, 3, 0", se.Class, se.Attempts, se.Status)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not wrap ECONNREFUSED", err)
	}
	if errors.Is(err, bhiv.ErrUnavailable) || bhiv.Permanent(err) {
		t.Errorf("error %v: want retryable_exhausted without ErrUnavailable", err)
	}
	// The failure record the consumer writes from it.
	rec := bhiv.FailureRecord{Sink: se.Sink, EventID: ev.ID, Attempts: se.Attempts, Status: se.Status, Error: err.Error(), ErrorClass: se.Class}
	line, _ := json.Marshal(rec)
	if !strings.Contains(string(line), `"error_class":"retryable_exhausted"`) || !strings.Contains(string(line), "connection refused") {
		t.Errorf("failure record %s lacks the class or the cause", line)
	}
}

// gather returns the value of the metric name with the given label value
// (or the sample count of a histogram), or -1 when it is absent.
func gather(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

// waitAvailable waits up to 5s for the breaker to let a probe through.
func waitAvailable(t *testing.T, c *Core) time.Duration {
	t.Helper()
	start := time.Now()
	for !c.Available() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("breaker still %s after 5s", c.BreakerState())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func TestCoreBreaker(t *testing.T) {
	var healthy atomic.Bool
	srv := newFakeCore(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if healthy.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(503)
	})
	reg := prometheus.NewRegistry()
	cfg := fastCore(srv.URL)
	cfg.MaxRetries = -1
	cfg.BreakerFailures = 3
	cfg.BreakerDelay = 200 * time.Millisecond
	cfg.Registerer = reg
	c := newTestCore(t, cfg)
	deliver := func(id string) error {
		return c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, id, 0))
	}
	check := func(state string, gauge float64) {
		t.Helper()
		if got := c.BreakerState(); got != state {
			t.Errorf("breaker %s, want %s", got, state)
		}
		if got := c.Available(); got != (state != "open") {
			t.Errorf("Available() = %v in state %s", got, state)
		}
		if got := gather(t, reg, "bhiv_core_breaker_state"); got != gauge {
			t.Errorf("bhiv_core_breaker_state %v, want %v", got, gauge)
		}
	}

	check("closed", 0)
	for i := range 3 {
		err := deliver(fmt.Sprintf("01BRK%d", i))
		if se := sinkErr(t, err); se.Class != bhiv.ClassRetryableExhausted || errors.Is(err, bhiv.ErrUnavailable) {
			t.Errorf("failure %d: %v, want retryable_exhausted without ErrUnavailable", i+1, err)
		}
	}
	check("open", 2)

	// Open: no request, an error wrapping ErrUnavailable.
	err := deliver("01BRKOPEN")
	if se := sinkErr(t, err); !errors.Is(err, bhiv.ErrUnavailable) || se.Class != bhiv.ClassRetryableExhausted || se.Attempts != 0 {
		t.Errorf("with the breaker open: %v (attempts %d), want ErrUnavailable after 0 attempts", err, se.Attempts)
	}
	if n := len(srv.requests()); n != 3 {
		t.Errorf("%d requests, want 3: the open breaker let one through", n)
	}

	// After the delay, one probe; a failed probe reopens it.
	waitAvailable(t, c)
	check("half-open", 1)
	if err := deliver("01BRKPROBE1"); err == nil || errors.Is(err, bhiv.ErrUnavailable) {
		t.Errorf("failed probe: %v, want a retryable failure", err)
	}
	check("open", 2)

	// A good probe closes it.
	healthy.Store(true)
	waitAvailable(t, c)
	if err := deliver("01BRKPROBE2"); err != nil {
		t.Fatalf("good probe: %v", err)
	}
	check("closed", 0)
	if err := deliver("01BRKAFTER"); err != nil {
		t.Fatalf("after the breaker closed: %v", err)
	}
	if got, want := gather(t, reg, "bhiv_sink_attempts_total"), float64(len(srv.requests())); got != want {
		t.Errorf("bhiv_sink_attempts_total %v, want %v (the requests made)", got, want)
	}
	if got := gather(t, reg, "bhiv_core_batch_size"); got != 7 {
		t.Errorf("bhiv_core_batch_size has %v samples, want 7 (one per POST sent or refused)", got)
	}
}

func TestCoreBreakerOpensMidRetry(t *testing.T) {
	srv := newFakeCore(t, statuses(503))
	cfg := fastCore(srv.URL)
	cfg.MaxRetries = 5
	cfg.BreakerFailures = 2
	cfg.BreakerDelay = time.Minute
	c := newTestCore(t, cfg)
	err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01MIDRETRY", 0))
	se := sinkErr(t, err)
	if !errors.Is(err, bhiv.ErrUnavailable) || se.Attempts != 2 {
		t.Errorf("%v after %d attempts; want ErrUnavailable after 2", err, se.Attempts)
	}
	if n := len(srv.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	if c.Available() || c.BreakerState() != "open" {
		t.Errorf("breaker %s, want open", c.BreakerState())
	}
}

func TestCoreBreakerRetryAfter(t *testing.T) {
	srv := newFakeCore(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	})
	cfg := fastCore(srv.URL)
	cfg.MaxRetries = -1
	cfg.BreakerFailures = 1
	cfg.BreakerDelay = 10 * time.Millisecond
	cfg.BackoffMax = 5 * time.Second
	c := newTestCore(t, cfg)
	start := time.Now()
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01BRKRA", 0)); err == nil {
		t.Fatal("Deliver succeeded on a 503")
	}
	waitAvailable(t, c)
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("breaker half-opened after %s, want the server's Retry-After of 1s", waited)
	}
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01BRKRA", 0)); err != nil {
		t.Fatalf("probe: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestCoreSecrets(t *testing.T) {
	const token = "tok-9f8e7d6c5b4a"
	const password = "pw-0a1b2c3d"
	var gotAuth atomic.Value
	srv := newFakeCore(t, func(n int, w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		switch n {
		case 1, 2:
			w.WriteHeader(503)
		case 3:
			w.WriteHeader(200)
		default:
			// A server that echoes what it got.
			w.WriteHeader(401)
			fmt.Fprintf(w, "bad credentials: %s %s", r.Header.Get("Authorization"), password)
		}
	})
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	withUser := strings.Replace(srv.URL, "http://", "http://bhiv:"+password+"@", 1)

	cfg := fastCore(withUser + "?api_key=" + password)
	cfg.Token = token
	cfg.Logger = log
	cfg.MaxRetries = 2
	cfg.BreakerFailures = 2
	c := newTestCore(t, cfg)
	var errs []error
	// 503, 503 (breaker opens), then unavailable; then 200 after the delay;
	// then the echoing 401.
	errs = append(errs, c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01SECRET1", 0)))
	waitAvailable(t, c)
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01SECRET2", 0)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if got := gotAuth.Load(); got != "Bearer "+token {
		t.Errorf("Authorization %q, want the bearer token", got)
	}
	errs = append(errs, c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01SECRET3", 0)))

	// Connection refused: the error names the URL.
	cfg2 := fastCore(strings.Replace(refusedURL(t), "http://", "http://bhiv:"+password+"@", 1))
	cfg2.Token, cfg2.Logger = token, log
	c2 := newTestCore(t, cfg2)
	errs = append(errs, c2.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01SECRET4", 0)))
	// Configuration errors.
	errs = append(errs, CoreConfig{URL: "ftp://bhiv:" + password + "@core/x"}.Validate())
	errs = append(errs, CoreConfig{URL: "http://bhiv:" + password + "@core:port/x"}.Validate())
	_, err := NewCore(CoreConfig{URL: "http://bhiv:" + password + "@core/x", Token: token + "\n"})
	errs = append(errs, err)

	var texts []string
	for i, err := range errs {
		if err == nil {
			t.Fatalf("error %d is nil", i)
		}
		texts = append(texts, err.Error(), fmt.Sprintf("%+v %#v", err, err))
		var se *bhiv.SinkError
		if errors.As(err, &se) {
			texts = append(texts, se.Body)
			line, _ := json.Marshal(bhiv.FailureRecord{Error: err.Error(), ErrorClass: se.Class})
			texts = append(texts, string(line))
		}
	}
	texts = append(texts, logs.String())
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the retries were not logged: the test proves nothing\n%s", logs.String())
	}
	if se := sinkErr(t, errs[1]); se.Status != 401 || !strings.Contains(se.Body, "bad credentials: Bearer [REDACTED]") {
		t.Errorf("401 body %q: want the echoed token redacted", se.Body)
	}
	for _, s := range texts {
		for _, secret := range []string{token, password} {
			if strings.Contains(s, secret) {
				t.Errorf("a secret shows in %q", s)
			}
		}
	}
}

func TestCoreCancel(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeCore(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	for _, batch := range []int{1, 10} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			cfg := fastCore(srv.URL)
			cfg.Timeout = time.Minute
			cfg.BatchMax = batch
			c := newTestCore(t, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			start := time.Now()
			err := c.Deliver(ctx, testEvent(t, bhiv.KindReward, "01CANCELME", 0))
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("Deliver took %s after its context was cancelled", took)
			}
			var se *bhiv.SinkError
			if !errors.Is(err, context.Canceled) || errors.As(err, &se) {
				t.Errorf("error %v: want one wrapping context.Canceled, not a SinkError", err)
			}
			n := len(srv.requests())
			if err := c.Deliver(ctx, testEvent(t, bhiv.KindReward, "01CANCELME", 0)); !errors.Is(err, context.Canceled) {
				t.Errorf("already cancelled: %v", err)
			}
			if len(srv.requests()) != n {
				t.Error("a request was sent with an already cancelled context")
			}
		})
	}
}

func TestCoreClose(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeCore(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	cfg := fastCore(srv.URL)
	cfg.Timeout = time.Minute
	cfg.BatchMax = 100
	cfg.BatchLinger = time.Millisecond
	c, err := NewCore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 3)
	for i := range 3 {
		go func() {
			errc <- c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, fmt.Sprintf("01CLOSE%d", i), 0))
		}()
	}
	for len(srv.requests()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("in-flight delivery at Close: %v, want ErrClosed", err)
		}
	}
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01CLOSED", 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCoreBatch(t *testing.T) {
	t.Run("100 as one array", func(t *testing.T) {
		srv := newFakeCore(t, nil)
		reg := prometheus.NewRegistry()
		cfg := fastCore(srv.URL)
		cfg.BatchMax = 100
		cfg.BatchLinger = 10 * time.Second // the batch must go when full
		cfg.Registerer = reg
		c := newTestCore(t, cfg)
		var wg sync.WaitGroup
		want := map[string]bool{}
		for i := range 100 {
			id := fmt.Sprintf("01BATCH%03d", i)
			want[id] = true
			wg.Go(func() {
				if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindExecution, id, 20)); err != nil {
					t.Errorf("Deliver %s: %v", id, err)
				}
			})
		}
		wg.Wait()
		reqs := srv.requests()
		if len(reqs) != 1 {
			t.Fatalf("%d requests, want 1", len(reqs))
		}
		if ct := reqs[0].header.Get("Content-Type"); ct != "application/cloudevents-batch+json" {
			t.Errorf("Content-Type %q, want application/cloudevents-batch+json", ct)
		}
		var evs []bhiv.Event
		if err := json.Unmarshal(reqs[0].body, &evs); err != nil {
			t.Fatalf("body is not a JSON array of events: %v", err)
		}
		var ids []string
		for _, ev := range evs {
			if err := ev.Validate(); err != nil {
				t.Errorf("event %s: %v", ev.ID, err)
			}
			if !want[ev.ID] {
				t.Errorf("unexpected or repeated event %s", ev.ID)
			}
			delete(want, ev.ID)
			ids = append(ids, ev.ID)
		}
		if len(want) != 0 {
			t.Errorf("%d events missing from the batch", len(want))
		}
		if key := reqs[0].header.Get("Idempotency-Key"); key != batchKey(ids) || !strings.HasPrefix(key, "batch-") {
			t.Errorf("Idempotency-Key %q, want %q", key, batchKey(ids))
		}
		if got := gather(t, reg, "bhiv_core_batch_size"); got != 1 {
			t.Errorf("bhiv_core_batch_size has %v samples, want 1", got)
		}
	})

	t.Run("linger", func(t *testing.T) {
		srv := newFakeCore(t, nil)
		cfg := fastCore(srv.URL)
		cfg.BatchMax = 100
		cfg.BatchLinger = 50 * time.Millisecond
		c := newTestCore(t, cfg)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() {
				if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, fmt.Sprintf("01LINGER%d", i), 0)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		reqs := srv.requests()
		if len(reqs) != 1 {
			t.Fatalf("%d requests, want 1", len(reqs))
		}
		var evs []json.RawMessage
		if err := json.Unmarshal(reqs[0].body, &evs); err != nil || len(evs) != 3 {
			t.Errorf("body %s: want an array of 3 (%v)", reqs[0].body, err)
		}
		// A batch of one is sent as a single event (binary mode, the
		// default), keyed by its id.
		ev := testEvent(t, bhiv.KindReward, "01ALONE", 0)
		if err := c.Deliver(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		reqs = srv.requests()
		if last := reqs[len(reqs)-1]; !bytes.Equal(last.body, ev.Data) || last.header.Get("Idempotency-Key") != ev.ID ||
			last.header.Get("Ce-Id") != ev.ID || last.header.Get("Content-Type") != "application/json" {
			t.Errorf("single event sent as %s with headers %v", last.body, last.header)
		}
	})

	t.Run("retried whole", func(t *testing.T) {
		srv := newFakeCore(t, statuses(503, 200))
		cfg := fastCore(srv.URL)
		cfg.BatchMax = 10
		cfg.BatchLinger = 10 * time.Second
		c := newTestCore(t, cfg)
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, fmt.Sprintf("01WHOLE%d", i), 0)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		reqs := srv.requests()
		if len(reqs) != 2 {
			t.Fatalf("%d requests, want 2", len(reqs))
		}
		if !bytes.Equal(reqs[0].body, reqs[1].body) || reqs[0].header.Get("Idempotency-Key") != reqs[1].header.Get("Idempotency-Key") {
			t.Error("the retry of a batch differs from the first attempt")
		}
	})

	t.Run("each caller gets the failure", func(t *testing.T) {
		srv := newFakeCore(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(422)
			io.WriteString(w, "unprocessable batch")
		})
		cfg := fastCore(srv.URL)
		cfg.BatchMax = 5
		cfg.BatchLinger = 10 * time.Second
		c := newTestCore(t, cfg)
		errs := make([]error, 5)
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				errs[i] = c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, fmt.Sprintf("01BADBATCH%d", i), 0))
			})
		}
		wg.Wait()
		seen := map[*bhiv.SinkError]bool{}
		for _, err := range errs {
			se := sinkErr(t, err)
			if se.Class != bhiv.ClassPermanent || se.Status != 422 || se.Body != "unprocessable batch" || se.Attempts != 1 {
				t.Errorf("got %+v, want permanent 422 with the body after 1 attempt", se)
			}
			if seen[se] {
				t.Error("two callers share one *SinkError")
			}
			seen[se] = true
		}
		if n := len(srv.requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

func TestCoreConfig(t *testing.T) {
	d := CoreConfig{}.WithDefaults()
	if d.URL != DefaultCoreURL || d.MaxRetries != 3 || d.Backoff != time.Second || d.BackoffMax != 30*time.Second ||
		d.BreakerFailures != 5 || d.BreakerDelay != 10*time.Second || d.Timeout != 10*time.Second ||
		d.BatchMax != 1 || d.BatchLinger != 5*time.Millisecond || d.Concurrency != 0 || d.ConcurrencyMin != 4 || d.ConcurrencyMax != 1024 || d.UserAgent != "bhiv/dev" || d.Logger == nil ||
		d.Mode != CoreBinary {
		t.Errorf("defaults %+v", d)
	}
	if got := (CoreConfig{ConcurrencyMin: 2000}).WithDefaults().ConcurrencyMax; got != 2000 {
		t.Errorf("ConcurrencyMin 2000 gives ConcurrencyMax %d, want 2000", got)
	}
	if got := (CoreConfig{ConcurrencyMax: 2}).WithDefaults().ConcurrencyMin; got != 2 {
		t.Errorf("ConcurrencyMax 2 gives ConcurrencyMin %d, want 2 (the default floor lowered with it)", got)
	}
	if got := (CoreConfig{ConcurrencyMax: 64}).WithDefaults().ConcurrencyMin; got != DefaultCoreConcurrencyMin {
		t.Errorf("ConcurrencyMax 64 gives ConcurrencyMin %d, want %d", got, DefaultCoreConcurrencyMin)
	}
	// A negative MaxRetries (none) survives the defaults, applied once or
	// twice: it is not the zero value that means the default.
	if got := (CoreConfig{MaxRetries: -1}).WithDefaults().WithDefaults().MaxRetries; got >= 0 {
		t.Errorf("MaxRetries -1 gives %d after the defaults twice, want it negative (no retries)", got)
	}
	tests := []struct {
		name string
		cfg  CoreConfig
		want string // part of the error; "" for valid
	}{
		{"zero", CoreConfig{}, ""},
		{"https", CoreConfig{URL: "https://core.example/bhiv"}, ""},
		{"scheme", CoreConfig{URL: "ftp://core/x"}, "scheme"},
		{"no host", CoreConfig{URL: "http:///x"}, "no host"},
		{"bad url", CoreConfig{URL: "http://core:port/x"}, "not a URL"},
		{"negative backoff", CoreConfig{Backoff: -time.Second}, "backoff"},
		{"max below backoff", CoreConfig{Backoff: time.Minute, BackoffMax: time.Second}, "below"},
		{"negative timeout", CoreConfig{Timeout: -1}, "timeout"},
		{"breaker", CoreConfig{BreakerFailures: -1}, "breaker failures"},
		{"batch", CoreConfig{BatchMax: -2}, "batch max"},
		{"concurrency", CoreConfig{Concurrency: -1}, "concurrency"},
		{"fixed concurrency", CoreConfig{Concurrency: 10_000}, ""},
		{"concurrency too high", CoreConfig{Concurrency: 10_001}, "concurrency 10001"},
		{"concurrency bounds", CoreConfig{ConcurrencyMin: 4, ConcurrencyMax: 64}, ""},
		{"concurrency min only", CoreConfig{ConcurrencyMin: 2000}, ""},
		{"concurrency min above max", CoreConfig{ConcurrencyMin: 65, ConcurrencyMax: 64}, "min <= max"},
		{"concurrency min negative", CoreConfig{ConcurrencyMin: -1}, "concurrency min"},
		{"concurrency max too high", CoreConfig{ConcurrencyMax: 10_001}, "concurrency min"},
		{"cert without key", CoreConfig{CertFile: "c.pem"}, "go together"},
		{"token with newline", CoreConfig{Token: "a\nb"}, "token"},
		{"structured", CoreConfig{Mode: CoreStructured}, ""},
		{"mode", CoreConfig{Mode: "batched"}, "core mode"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
	}
	if _, err := NewCore(CoreConfig{CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("NewCore with a missing CA file succeeded")
	}
}

// writeCert writes cert (DER) and key as PEM files in dir.
func writeCert(t *testing.T, dir, name string, der []byte, key *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if key != nil {
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func TestCoreTLS(t *testing.T) {
	dir := t.TempDir()
	// A self-signed client certificate, trusted by the server.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bhiv"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := writeCert(t, dir, "client", der, key)
	clientParsed, _ := x509.ParseCertificate(der)
	clients := x509.NewCertPool()
	clients.AddCert(clientParsed)

	var got atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) == 1 {
			got.Add(1)
		}
	}))
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // handshake failures are expected
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.StartTLS()
	defer srv.Close()
	caFile, _ := writeCert(t, dir, "ca", srv.Certificate().Raw, nil)

	tests := []struct {
		name string
		ca   string
		cert string
		key  string
		ok   bool
	}{
		{"mtls", caFile, clientCert, clientKey, true},
		{"unknown authority", "", clientCert, clientKey, false},
		{"no client certificate", caFile, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastCore(srv.URL)
			cfg.MaxRetries = -1
			cfg.CAFile, cfg.CertFile, cfg.KeyFile = tt.ca, tt.cert, tt.key
			c := newTestCore(t, cfg)
			if c.transport.TLSClientConfig.MinVersion != tls.VersionTLS12 {
				t.Error("TLS minimum is not 1.2")
			}
			before := got.Load()
			err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01TLS", 0))
			if tt.ok != (err == nil) {
				t.Fatalf("Deliver: %v", err)
			}
			if tt.ok && got.Load() != before+1 {
				t.Error("the server did not see the client certificate")
			}
			if !tt.ok {
				sinkErr(t, err)
			}
		})
	}
}

func TestCoreConformance(t *testing.T) {
	for _, batch := range []int{1, 50} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			sinktest.Run(t, func(t *testing.T) *sinktest.Harness {
				var mode atomic.Int32 // 0 ok, 1 hang, 2 fail
				release := make(chan struct{})
				var once sync.Once
				srv := newFakeCore(t, func(_ int, w http.ResponseWriter, r *http.Request) {
					switch mode.Load() {
					case 1:
						select {
						case <-r.Context().Done():
						case <-release:
						}
					case 2:
						w.WriteHeader(503)
					}
				})
				cfg := fastCore(srv.URL)
				cfg.BatchMax = batch
				cfg.MaxRetries = 2
				c := newTestCore(t, cfg)
				return &sinktest.Harness{
					Sink:   c,
					Name:   CoreName,
					Stored: srv.stored,
					Hang: func() func() {
						mode.Store(1)
						return func() { mode.Store(0); once.Do(func() { close(release) }) }
					},
					Fail: func() func() {
						mode.Store(2)
						return func() { mode.Store(0) }
					},
					Close: func() { once.Do(func() { close(release) }); _ = c.Close() },
				}
			})
		})
	}
}

// fakeAttempt is a failsafe.ExecutionAttempt for testing delays.
type fakeAttempt struct {
	attempts int
	resp     *http.Response
}

func (f fakeAttempt) Context() context.Context          { return context.Background() }
func (f fakeAttempt) Attempts() int                     { return f.attempts }
func (f fakeAttempt) Executions() int                   { return f.attempts }
func (f fakeAttempt) Retries() int                      { return f.attempts - 1 }
func (f fakeAttempt) Hedges() int                       { return 0 }
func (f fakeAttempt) StartTime() time.Time              { return time.Time{} }
func (f fakeAttempt) ElapsedTime() time.Duration        { return 0 }
func (f fakeAttempt) LastResult() *http.Response        { return f.resp }
func (f fakeAttempt) LastError() error                  { return nil }
func (f fakeAttempt) IsFirstAttempt() bool              { return f.attempts == 1 }
func (f fakeAttempt) IsRetry() bool                     { return f.attempts > 1 }
func (f fakeAttempt) IsHedge() bool                     { return false }
func (f fakeAttempt) AttemptStartTime() time.Time       { return time.Time{} }
func (f fakeAttempt) ElapsedAttemptTime() time.Duration { return 0 }
