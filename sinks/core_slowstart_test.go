package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
)

// The slow start's decisions, answer by answer: a row feeds rounds of
// answers to a slow start from 4 (min 2, max 32) and expects the step and
// limit after each round.
func TestSlowStart(t *testing.T) {
	const ms = time.Millisecond
	// round is one round's answers: n of them at rtt (a failure when rtt
	// is 0), after waiting for a permit (or not).
	type round struct {
		n      int
		rtt    time.Duration
		waited bool
	}
	type want struct {
		step  ssStep
		limit int
	}
	tests := []struct {
		name   string
		rounds []round
		want   []want
	}{
		{"grows while the latency holds and callers wait",
			[]round{{4, 10 * ms, true}, {8, 10 * ms, true}, {16, 14 * ms, true}},
			[]want{{ssGrow, 8}, {ssGrow, 16}, {ssGrow, 32}}},
		{"holds while no caller waits (an idle limit is not grown)",
			[]round{{4, 10 * ms, false}, {4, 10 * ms, false}, {4, 10 * ms, true}},
			[]want{{ssHold, 4}, {ssHold, 4}, {ssGrow, 8}}},
		{"ends at half the limit when the p90 rises past 1.5x the baseline",
			[]round{{4, 10 * ms, true}, {8, 10 * ms, true}, {16, 16 * ms, true}},
			[]want{{ssGrow, 8}, {ssGrow, 16}, {ssEnd, 8}}},
		{"a lower round p90 is the new baseline",
			[]round{{4, 20 * ms, true}, {8, 10 * ms, true}, {16, 16 * ms, true}},
			[]want{{ssGrow, 8}, {ssGrow, 16}, {ssEnd, 8}}},
		{"a failed answer ends it at half the limit at once",
			[]round{{4, 10 * ms, true}, {1, 0, true}},
			[]want{{ssGrow, 8}, {ssEnd, 4}}},
		{"the end is not below the minimum",
			[]round{{1, 0, true}},
			[]want{{ssEnd, 2}}},
		{"the maximum ends it",
			[]round{{4, 10 * ms, true}, {8, 10 * ms, true}, {16, 10 * ms, true}, {32, 10 * ms, true}},
			[]want{{ssGrow, 8}, {ssGrow, 16}, {ssGrow, 32}, {ssEnd, 32}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSlowStart(4, 2, 32)
			for i, r := range tt.rounds {
				if r.waited {
					s.wait()
				}
				var step ssStep
				var limit int
				for j := range r.n {
					step, limit = s.answer(r.rtt, r.rtt > 0)
					if j < r.n-1 && step != ssHold {
						t.Fatalf("round %d: step %d after %d of %d answers, want none before the round ends", i, step, j+1, r.n)
					}
				}
				if got := (want{step, limit}); got != tt.want[i] {
					t.Fatalf("round %d: got step %d limit %d, want step %d limit %d", i, got.step, got.limit, tt.want[i].step, tt.want[i].limit)
				}
			}
		})
	}
}

// Against a simulated Core that serves k requests at once in d each and
// queues the rest first in, first out, with callers always waiting, the
// slow start from 8 ends between k/2 and k (for k of 8 and more; up to
// k/0.9: a round's p90 shows a queue only once more than a tenth of its
// requests wait), never having had more than twice that in flight, after
// about log2(k/8)+2 round trips. The simulation has its own clock: no
// timing here. (Above 1024, the maximum, it ends at the maximum.)
func TestSlowStartAgainstCapacity(t *testing.T) {
	for _, k := range []int{8, 16, 50, 64, 100, 256, 700, 1000} {
		for _, d := range []time.Duration{20 * time.Millisecond, time.Second} {
			t.Run(fmt.Sprintf("k=%d,d=%s", k, d), func(t *testing.T) {
				end, peak, took := simulateSlowStart(k, d, DefaultCoreConcurrencyInitial, DefaultCoreConcurrencyMax)
				t.Logf("ended at %d after %s (%.1f round trips), peak in flight %d", end, took, float64(took)/float64(d), peak)
				lo, hi := max(k/2, 8), min(k+k/9, DefaultCoreConcurrencyMax)
				if end < lo || end > hi {
					t.Errorf("ended at %d, want %d to %d", end, lo, hi)
				}
				if peak > 2*hi {
					t.Errorf("peak in flight %d, want at most %d", peak, 2*hi)
				}
				if rounds := float64(took) / float64(d); rounds > 12 {
					t.Errorf("took %.1f round trips", rounds)
				}
			})
		}
	}
}

// simulateSlowStart runs a slow start from initial against a simulated
// Core serving k at once in d, and returns the limit it ends at, the most
// requests in flight and the simulated time it took.
func simulateSlowStart(k int, d time.Duration, initial, hi int) (end, peak int, took time.Duration) {
	s := newSlowStart(initial, 1, hi)
	free := make([]time.Duration, k) // when each of Core's k servers is free
	type req struct{ sent, done time.Duration }
	var inflight []req // by done
	var now time.Duration
	for {
		for len(inflight) < s.limit {
			i := slices.Index(free, slices.Min(free))
			free[i] = max(now, free[i]) + d
			r := req{now, free[i]}
			// After those answered at the same time (first in, first out).
			at, _ := slices.BinarySearchFunc(inflight, r.done+1, func(a req, done time.Duration) int { return int(a.done - done) })
			inflight = slices.Insert(inflight, at, r)
		}
		peak = max(peak, len(inflight))
		s.wait() // more callers than permits
		r := inflight[0]
		inflight = inflight[1:]
		now = r.done
		if step, limit := s.answer(r.done-r.sent, true); step == ssEnd {
			return limit, peak, now
		}
	}
}

// A request waiting for a slow-start permit and cancelled returns at once
// with its context's error and leaves no waiter behind; the permits all
// come back; when the slow start ends, the waiters go on to failsafe-go's
// limiter, which counts the requests still in flight on slow-start
// permits until they end.
func TestCoreLimitSlowStartPermits(t *testing.T) {
	build := func(initial int, rtt time.Duration) adaptivelimiter.AdaptiveLimiter[*http.Response] {
		return adaptivelimiter.NewBuilder[*http.Response]().WithLimits(1, 8, uint(initial)).Build()
	}
	l := newCoreLimit(build, newSlowStart(2, 1, 8), 2, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	p1, err := l.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := l.acquire(ctx)

	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() {
		_, err := l.acquire(cctx)
		cancelled <- err
	}()
	waitFor(t, "a waiter", func() bool { return l.Queued() == 1 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	if q, in := l.Queued(), l.Inflight(); q != 0 || in != 2 {
		t.Fatalf("after the cancel: %d waiting, %d in flight, want 0 and 2", q, in)
	}

	third := make(chan corePermit, 1)
	go func() {
		p, _ := l.acquire(ctx)
		third <- p
	}()
	waitFor(t, "a waiter", func() bool { return l.Queued() == 1 })
	p1.done(false, true) // a failure: the slow start ends at 1
	if got := l.Limit(); got != 1 {
		t.Errorf("limit %d after a failure at 2, want 1", got)
	}
	// The limiter's one permit is held for the request still in flight
	// on a slow-start permit: the waiter waits on.
	waitFor(t, "the waiter at the limiter", func() bool { return l.Queued() == 1 })
	if in := l.Inflight(); in != 1 {
		t.Errorf("%d in flight, want 1", in)
	}
	p2.done(true, false)
	p3 := <-third
	if p3.fs == nil {
		t.Fatal("the waiter got a slow-start permit after the slow start ended")
	}
	if in := l.Inflight(); in != 1 {
		t.Errorf("%d in flight, want 1", in)
	}
	p3.done(true, false)
	if in, q := l.Inflight(), l.Queued(); in != 0 || q != 0 {
		t.Errorf("at the end: %d in flight, %d waiting, want 0 and 0", in, q)
	}
}
