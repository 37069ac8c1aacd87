package sinks

import (
	"container/list"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
)

// The slow start of Core's adaptive limit. failsafe-go's limiter adds to
// its limit once per update, and an update needs a window of answers, so
// it climbs by about one request per round trip: against a Core answering
// in 1 s and serving 256 at once it took over two minutes to get from 8
// to 174 (docs/benchmarks.md), and Core got 0.30 of what it could take.
// So, as TCP does before congestion avoidance, the limit starts with a
// slow start that doubles it every round trip while Core's latency holds,
// and hands over to failsafe-go's limiter at the first sign of a queue in
// Core (TCP Vegas's slow start: RFC 5681 section 3.1 for the doubling,
// Brakmo and Peterson, "TCP Vegas", 1995, section 3.3 for stopping on a
// rising round-trip time instead of on a loss):
//
//   - a round is as many answers as the limit at its start (one round
//     trip with every permit taken); its latency is the p90 of its answers
//     (2xx only, as the limiter records them), its baseline the lowest
//     round p90 so far;
//   - a round whose p90 is within slowStartRise of the baseline doubles
//     the limit, when a request had to wait for a permit during it (Core
//     was not offered fewer than the limit: an idle limit is not grown);
//   - a round whose p90 passes it, or any retryable or refused answer
//     (Core shedding load, or failing), ends the slow start at half the
//     limit: the last limit whose round showed no queue (TCP halves on a
//     loss too); ConcurrencyMax ends it at the maximum;
//   - failsafe-go's limiter takes over from there, its first latencies
//     those of a Core without a queue, so its baseline is not poisoned by
//     one (the trap of starting high: see DefaultCoreConcurrencyInitial).
//
// Against a Core serving K at once, the last round without a queue is at
// most K, so the hand-over is at K/2 to K and the slow start never keeps
// more than 2K requests in flight, for one round trip. At the hand-over
// the requests in flight keep their slow-start permits; the new limiter
// counts them (a permit of its own held for each, as far as its limit
// allows) until they end, so that together they stay within its limit.

// slowStartRise is how far a round's p90 latency may rise over the
// baseline before the slow start takes it for a queue in Core: 1.5, a
// round of requests of which a half waited a whole service time would
// show 2; the jitter of a loaded machine a few percent.
const slowStartRise = 1.5

// ssStep is what an answer makes the slow start do.
type ssStep int

const (
	ssHold ssStep = iota // the limit stays
	ssGrow               // the limit doubled
	ssEnd                // the slow start is over, at the limit returned
)

// slowStart decides the limit during the slow start, from the answers
// fed to it one by one. It is not safe for concurrent use.
type slowStart struct {
	limit, min, max int
	base            time.Duration   // the lowest round p90 so far; 0 before the first round ends
	left            int             // answers until the round ends
	rtts            []time.Duration // the round's latencies
	waited          bool            // a request waited for a permit during the round
}

// newSlowStart returns a slow start from limit initial, within min and
// max.
func newSlowStart(initial, lo, hi int) *slowStart {
	return &slowStart{limit: initial, min: lo, max: hi, left: initial}
}

// wait records that a request had to wait for a permit.
func (s *slowStart) wait() { s.waited = true }

// answer feeds one answer: ok with its latency rtt (a 2xx), or !ok (a
// retryable or refused answer). It returns the step and the limit after
// it.
func (s *slowStart) answer(rtt time.Duration, ok bool) (ssStep, int) {
	if !ok {
		return ssEnd, max(s.limit/2, s.min)
	}
	s.rtts = append(s.rtts, rtt)
	if s.left--; s.left > 0 {
		return ssHold, s.limit
	}
	p90 := quantile(s.rtts, 0.9)
	if s.base == 0 || p90 < s.base {
		s.base = p90
	}
	step := ssHold
	switch {
	case float64(p90) > slowStartRise*float64(s.base):
		return ssEnd, max(s.limit/2, s.min)
	case s.limit >= s.max:
		return ssEnd, s.max
	case s.waited:
		s.limit, step = min(2*s.limit, s.max), ssGrow
	}
	s.left, s.rtts, s.waited = s.limit, s.rtts[:0], false
	return step, s.limit
}

// quantile returns the q quantile of ds (nearest rank), reordering ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// coreLimit is the concurrency limit of Core's requests: failsafe-go's
// limiter, fixed or adaptive, and before an adaptive one the slow start,
// which has its own permits, awaited in first-in, first-out order.
type coreLimit struct {
	build func(initial int, rtt time.Duration) adaptivelimiter.AdaptiveLimiter[*http.Response]
	log   *slog.Logger
	// after is failsafe-go's limiter once the slow start is over (at once
	// without one): set once, read without mu by acquire and Limit, the
	// hot path.
	after atomic.Pointer[fsLimiter]

	mu       sync.Mutex
	fs       adaptivelimiter.AdaptiveLimiter[*http.Response] // nil during the slow start, then set for good
	ss       *slowStart                                      // nil once the slow start is over
	inflight int                                             // slow-start permits held
	waiters  list.List                                       // of chan bool: true, a slow-start permit; false, ask fs
	spare    []adaptivelimiter.Permit                        // fs permits held for slow-start requests in flight
}

// fsLimiter holds failsafe-go's limiter for coreLimit.after.
type fsLimiter struct {
	adaptivelimiter.AdaptiveLimiter[*http.Response]
}

// newCoreLimit returns the limit: with ss nil, fs built at once from
// initial; else the slow start first, then fs built from where it ends.
func newCoreLimit(build func(initial int, rtt time.Duration) adaptivelimiter.AdaptiveLimiter[*http.Response], ss *slowStart, initial int, log *slog.Logger) *coreLimit {
	l := &coreLimit{build: build, ss: ss, log: log}
	if ss == nil {
		l.fs = build(initial, 0)
		l.after.Store(&fsLimiter{l.fs})
	}
	return l
}

// corePermit is a permit of the limit: of failsafe-go's limiter (fs) or of
// the slow start (l, since start).
type corePermit struct {
	fs    adaptivelimiter.Permit
	l     *coreLimit
	start time.Time
}

// acquire waits for a permit, first in, first out, until ctx ends.
func (l *coreLimit) acquire(ctx context.Context) (corePermit, error) {
	if fs := l.after.Load(); fs != nil {
		p, err := fs.AcquirePermit(ctx)
		return corePermit{fs: p}, err
	}
	l.mu.Lock()
	if l.ss == nil {
		l.mu.Unlock()
		return l.acquire(ctx) // the slow start ended meanwhile
	}
	if l.inflight < l.ss.limit && l.waiters.Len() == 0 {
		l.inflight++
		l.mu.Unlock()
		return corePermit{l: l, start: time.Now()}, nil
	}
	l.ss.wait()
	w := make(chan bool, 1)
	e := l.waiters.PushBack(w)
	l.mu.Unlock()
	select {
	case granted := <-w:
		if !granted {
			return l.acquire(ctx) // the slow start ended meanwhile
		}
		return corePermit{l: l, start: time.Now()}, nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		select {
		case granted := <-w: // just now: pass the permit on
			if granted {
				l.releaseLocked()
			}
		default:
			l.waiters.Remove(e)
		}
		return corePermit{}, ctx.Err()
	}
}

// done releases the permit; ok says Core took the request (a 2xx: its
// latency is recorded), failed that it was a retryable or refused answer.
// Neither (a permanent answer, a cancellation) only releases it.
func (p corePermit) done(ok, failed bool) {
	if p.fs != nil {
		if ok {
			p.fs.Record()
		} else {
			p.fs.Drop()
		}
		return
	}
	l := p.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ss != nil && (ok || failed) {
		switch step, limit := l.ss.answer(time.Since(p.start), ok); step {
		case ssGrow:
			l.log.Debug("core concurrency limit changed", "to", limit, "phase", "slow start")
		case ssEnd:
			l.endLocked(limit)
		}
	}
	l.releaseLocked()
}

// releaseLocked returns a slow-start permit: to the next waiter during the
// slow start; after it, with one of the spare permits of fs.
func (l *coreLimit) releaseLocked() {
	l.inflight--
	if l.ss == nil {
		for len(l.spare) > l.inflight {
			l.spare[len(l.spare)-1].Drop()
			l.spare = l.spare[:len(l.spare)-1]
		}
		return
	}
	for l.inflight < l.ss.limit && l.waiters.Len() > 0 {
		l.inflight++
		l.waiters.Remove(l.waiters.Front()).(chan bool) <- true
	}
}

// endLocked ends the slow start at limit: failsafe-go's limiter takes
// over, holding a permit for each request still in flight (as many as its
// limit allows), and the waiters go to it.
func (l *coreLimit) endLocked(limit int) {
	l.fs = l.build(limit, l.ss.base)
	for range l.inflight {
		p, ok := l.fs.TryAcquirePermit()
		if !ok {
			break
		}
		l.spare = append(l.spare, p)
	}
	l.log.Debug("core concurrency slow start over", "limit", limit, "baseline", l.ss.base)
	l.after.Store(&fsLimiter{l.fs})
	l.ss = nil
	for l.waiters.Len() > 0 {
		l.waiters.Remove(l.waiters.Front()).(chan bool) <- false
	}
}

// Limit returns the current limit.
func (l *coreLimit) Limit() int {
	if fs := l.after.Load(); fs != nil {
		return fs.Limit()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ss != nil {
		return l.ss.limit
	}
	return l.fs.Limit()
}

// Inflight returns the requests holding a permit.
func (l *coreLimit) Inflight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ss != nil {
		return l.inflight
	}
	return l.fs.Inflight() - len(l.spare) + l.inflight
}

// Queued returns the requests waiting for a permit.
func (l *coreLimit) Queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ss != nil {
		return l.waiters.Len()
	}
	return l.fs.Queued()
}
