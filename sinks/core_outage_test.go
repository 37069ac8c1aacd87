package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hackaverse/bhiv"
)

// A Core that refuses bhiv itself (a rotated token, a wrong URL, proxy
// credentials) is an outage: events are held, not written off one by one
// as permanent failures, and the operator is told once, loudly.
func TestCoreRefused(t *testing.T) {
	for _, status := range []int{401, 403, 404, 407} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			var fixed atomic.Bool
			srv := newFakeCore(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				if fixed.Load() {
					w.WriteHeader(200)
					return
				}
				w.WriteHeader(status)
				fmt.Fprint(w, "token expired")
			})
			var logs lockedBuffer
			reg := prometheus.NewRegistry()
			cfg := fastCore(strings.Replace(srv.URL, "http://", "http://bhiv:pw-hidden-123@", 1))
			cfg.BreakerDelay = 300 * time.Millisecond
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			cfg.Registerer = reg
			c := newTestCore(t, cfg)
			deliver := func(id string) error {
				return c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, id, 0))
			}

			err := deliver("01REFUSED1")
			se := sinkErr(t, err)
			if !errors.Is(err, bhiv.ErrUnavailable) || se.Class != bhiv.ClassRetryableExhausted || bhiv.Permanent(err) {
				t.Fatalf("refusal: %v (class %s), want retryable_exhausted wrapping ErrUnavailable", err, se.Class)
			}
			if se.Status != status || se.Attempts != 1 || se.Body != "token expired" || !strings.Contains(err.Error(), "configuration problem") {
				t.Errorf("refusal: status %d, %d attempts, body %q, error %v", se.Status, se.Attempts, se.Body, err)
			}
			if c.Available() || c.BreakerState() != "open" {
				t.Errorf("after a refusal the breaker is %s, want open", c.BreakerState())
			}
			// Held: no request while the breaker is open.
			if err := deliver("01REFUSED2"); !errors.Is(err, bhiv.ErrUnavailable) || !strings.Contains(err.Error(), fmt.Sprint(status)) {
				t.Errorf("while open: %v, want ErrUnavailable naming %d", err, status)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			// After the probe interval the next delivery probes: refused again,
			// still the same outage.
			if waited := waitAvailable(t, c); waited < 200*time.Millisecond {
				t.Errorf("available again after %s, want the breaker delay", waited)
			}
			if err := deliver("01REFUSED3"); !errors.Is(err, bhiv.ErrUnavailable) {
				t.Errorf("probe refused: %v, want ErrUnavailable", err)
			}
			if n := len(srv.requests()); n != 2 {
				t.Errorf("%d requests, want 2", n)
			}
			if got := gather(t, reg, "bhiv_core_refused_total"); got != 2 {
				t.Errorf("bhiv_core_refused_total %v, want 2", got)
			}
			// Fixed: the next probe goes through.
			fixed.Store(true)
			waitAvailable(t, c)
			if err := deliver("01REFUSED4"); err != nil {
				t.Fatalf("after the fix: %v", err)
			}
			if c.BreakerState() != "closed" {
				t.Errorf("breaker %s after a good probe", c.BreakerState())
			}

			text := logs.String()
			var errLines []string
			for _, l := range strings.Split(text, "\n") {
				if strings.Contains(l, "level=ERROR") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 {
				t.Fatalf("%d error lines, want 1 per outage:\n%s", len(errLines), text)
			}
			for _, want := range []string{"configuration problem", fmt.Sprintf("status=%d", status), "url=http://REDACTED@127.0.0.1", "token expired"} {
				if !strings.Contains(errLines[0], want) {
					t.Errorf("error line lacks %q: %s", want, errLines[0])
				}
			}
			if strings.Contains(text, "pw-hidden-123") {
				t.Error("the URL's password shows in the logs")
			}
			if !strings.Contains(text, "accepts bhiv's requests again") {
				t.Errorf("the end of the outage is not logged:\n%s", text)
			}
		})
	}
}

// A dial timeout is a network failure, retried and counted by the breaker,
// not the caller's cancellation, although its error wraps
// context.DeadlineExceeded.
func TestCoreDialTimeout(t *testing.T) {
	srv := newFakeCore(t, nil)
	cfg := fastCore(srv.URL)
	cfg.MaxRetries = 2
	cfg.BreakerFailures = 3
	cfg.BreakerDelay = time.Minute
	c := newTestCore(t, cfg)
	var dials atomic.Int32
	c.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{Timeout: time.Nanosecond}).DialContext(ctx, network, addr)
	}
	err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01DIALTIMEOUT", 0))
	se := sinkErr(t, err)
	if se.Class != bhiv.ClassRetryableExhausted || se.Attempts != 3 || dials.Load() != 3 {
		t.Errorf("%v: class %s after %d attempts (%d dials), want retryable_exhausted after 3", err, se.Class, se.Attempts, dials.Load())
	}
	if c.BreakerState() != "open" {
		t.Errorf("breaker %s after 3 dial timeouts, want open", c.BreakerState())
	}
}

// An attempt cut short by the caller's context says nothing about Core: the
// breaker counts it neither as a failure nor as a success.
func TestCoreCancelNotCounted(t *testing.T) {
	var mode atomic.Int32 // 0 hang until the client goes, 1 answer 503, 2 answer 200
	srv := newFakeCore(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 0:
			<-r.Context().Done()
		case 1:
			w.WriteHeader(503)
		}
	})
	cfg := fastCore(srv.URL)
	cfg.MaxRetries = -1
	cfg.BreakerFailures = 2
	cfg.BreakerDelay = 200 * time.Millisecond
	cfg.Timeout = time.Minute
	c := newTestCore(t, cfg)
	cancelled := func(id string) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		if err := c.Deliver(ctx, testEvent(t, bhiv.KindReward, id, 0)); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled delivery: %v", err)
		}
	}

	// Closed: cancellations do not open it.
	for i := range 4 {
		cancelled(fmt.Sprintf("01CANCELLED%d", i))
	}
	if c.BreakerState() != "closed" {
		t.Fatalf("breaker %s after 4 cancelled attempts, want closed", c.BreakerState())
	}
	// Nor do they count as successes: one cancelled attempt between two
	// failures does not stop the second failure from opening it.
	mode.Store(1)
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01FAIL1", 0)); err == nil {
		t.Fatal("503 taken as a success")
	}
	mode.Store(0)
	cancelled("01CANCELLEDMID")
	mode.Store(1)
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01FAIL2", 0)); err == nil {
		t.Fatal("503 taken as a success")
	}
	if c.BreakerState() != "open" {
		t.Fatalf("breaker %s after 2 failures around a cancellation, want open", c.BreakerState())
	}

	// Half-open: a cancelled probe leaves it half-open, and the next
	// delivery probes at once.
	waitAvailable(t, c)
	mode.Store(0)
	cancelled("01CANCELLEDPROBE")
	if !c.Available() || c.BreakerState() != "half-open" {
		t.Fatalf("breaker %s after a cancelled probe, want half-open", c.BreakerState())
	}
	mode.Store(2)
	if err := c.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01PROBE", 0)); err != nil {
		t.Fatalf("probe after a cancelled one: %v", err)
	}
	if c.BreakerState() != "closed" {
		t.Errorf("breaker %s after a good probe", c.BreakerState())
	}
}
