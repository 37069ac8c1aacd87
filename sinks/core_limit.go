package sinks

import (
	"net/http"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/failsafe-go/failsafe-go/common"
	"github.com/failsafe-go/failsafe-go/policy"
)

// Concurrency to Core. Every attempt (one POST, of one event or of a
// batch) holds a permit of failsafe-go's adaptive concurrency limiter
// while it runs. With CoreConfig.Concurrency 0 (auto) the limit starts
// with a slow start (core_slowstart.go: doubling every round trip until
// Core's latency rises), then failsafe-go's limiter moves it
// between ConcurrencyMin and ConcurrencyMax as Core's latency moves:
// up while latency holds, down when latency rises with the requests in
// flight (requests queueing in Core). Against a Core that serves K
// requests at once it stays around K, with Core's own queue short: it
// climbs to a few above K and holds; now and then the library's
// throughput rule (throughput flat while latency follows the requests in
// flight) takes it down, at times far below K, and it climbs back.
// Against a Core without a bound it grows until something else (the
// Bucket, the CPU, ConcurrencyMax) is the bound. With a fixed Concurrency
// the limit is that number.
//
// The limiter sits between the retry policy and the circuit breaker
// (retry → limiter → breaker → timeout), so that:
//
//   - a retry's backoff holds no permit and is not latency: only the
//     attempt is timed;
//   - waiting for a permit is not a breaker execution: it can neither fail
//     nor count as one, and the per-attempt timeout starts with the
//     attempt, not with the wait;
//   - the wait cannot be rejected: a permit is awaited in first-in,
//     first-out order until one is free or the caller's context ends (the
//     limiter is built without WithQueueing, whose queue rejects with
//     ErrExceeded at random once it is long, and waits with AcquirePermit,
//     which has no maximum wait). A rejection would otherwise be an error
//     that the retry policy and the breaker take for Core's. Instead the
//     wait is kept short by the consumer: Core is a consumer.Pacer, and
//     MaxInFlight lets it start only about as many deliveries as there are
//     permits;
//   - a batch (BatchMax above 1) takes one permit per POST.
//
// What an attempt teaches the limiter (the rows of classifyCore):
//
//	2xx                                 recorded: its duration is Core's latency
//	retryable (network error, timeout,
//	408/425/429/5xx), refused, permanent dropped: the permit is returned, the
//	                                    duration forgotten (a fast 503 or a refused
//	                                    connection would make Core look fast, a
//	                                    timeout measures the timeout, not Core)
//	breaker open                        no permit taken: the breaker fails it at once
//	                                    (no request is made), without waiting behind
//	                                    the requests in flight
//	cancelled while waiting             no permit was taken; the wait ends at once
//	cancelled during the attempt        dropped
//
// An overloaded Core that sheds load with 429 or 503 is therefore met by
// the retry policy's backoff (and Retry-After) and the breaker, not by a
// lower limit.

// Defaults of the concurrency settings of CoreConfig.
const (
	// DefaultCoreConcurrencyMin and DefaultCoreConcurrencyMax bound the
	// adaptive limit. The floor is 4, not 1: against a Core that answers in
	// a millisecond on a busy machine, more requests in flight add latency
	// without adding throughput (the client's CPU is the bound), so the
	// limiter's signals are noise and its limit can walk down to the floor
	// and stay there; at 1 the pipeline then runs at one request per round
	// trip (bench instant, a fixed limit: 2,000 events/s at 1, 3,150 at 2,
	// 3,500 at 4, 4,500 at 8). At 4 a Core that serves one request at a
	// time still answers within the default attempt timeout (10s) if it
	// takes up to 2.5s a request; one that must never see two at once is
	// set with BHIV_CORE_CONCURRENCY=1.
	DefaultCoreConcurrencyMin = 4
	DefaultCoreConcurrencyMax = 1024
	// DefaultCoreConcurrencyInitial is where the adaptive limit's slow
	// start begins (raised to ConcurrencyMin, lowered to ConcurrencyMax).
	// It is low on purpose: the slow start takes the latency it sees first
	// as its baseline, and a start above what Core serves at once would
	// teach it a latency that already includes queueing in Core; from 8,
	// doubling every round trip, it passes 256 in five.
	DefaultCoreConcurrencyInitial = 8
	// MaxCoreConcurrency is the largest limit or fixed concurrency
	// accepted.
	MaxCoreConcurrency = 10_000
)

// limiterTuning is how the adaptive limiter reads latency. The limit is
// updated every windowMin to windowMax, once at least windowSamples
// attempts have ended: up by 1 (2 from 100, 3 from 1,000) while the recent
// p90 latency holds against the baseline; down as much when the library's
// estimate of the requests queued in Core, limit × (1 − baseline/recent),
// passes 6 (12 from 100, 18 from 1,000), or when, with every permit taken,
// more requests in flight stop bringing more throughput. The baseline is a
// moving average of the recent latencies over baselineAge updates: far
// longer than the library's default of 10, which forgets within a second or
// two what Core's latency is without a queue and then lets the limit climb
// with Core's queue. The window is short (the library's default is 1 s to
// 30 s and 50 samples) so that the limit climbs against a slow Core too:
// the library adds to the limit once per update, and an update needs
// samples, so against a Core answering in 500 ms the default climbed 8 → 21
// in 30 s, this one 8 → 87 in 40 s (a step per round trip, as answers come
// back in waves: hence the slow start before it). Against a core stub
// serving 16 at once in 20 ms, 200 callers, load 15 on 2 cores: mean limit
// 13 to 15.5, 0.8 to 2.2 requests queued in the stub. After a slow start
// the window is at least the round trip it measured (newLimiter).
var limiterTuning = struct {
	windowMin, windowMax time.Duration
	windowSamples        uint
	baselineAge          uint
}{100 * time.Millisecond, 100 * time.Millisecond, 5, 100}

// newLimiter builds the concurrency limit for the config (defaults
// applied): a fixed Concurrency is failsafe-go's limiter with that limit;
// an adaptive one starts with the slow start (core_slowstart.go) from
// DefaultCoreConcurrencyInitial (raised to ConcurrencyMin, lowered to
// ConcurrencyMax), which hands over to failsafe-go's adaptive limiter with
// a window of at least the round trip the slow start measured (its
// baseline): one update per round trip at most, so that the limiter does
// not move the limit again and again on latencies that cannot yet show
// its last move (against a 1 s Core, a 100 ms window took ten steps per
// round trip: up past Core's capacity, then down far below it).
func (c *Core) newLimiter() *coreLimit {
	lo, hi := c.cfg.ConcurrencyMin, c.cfg.ConcurrencyMax
	if c.cfg.Concurrency > 0 {
		lo, hi = c.cfg.Concurrency, c.cfg.Concurrency
	}
	t := limiterTuning
	build := func(initial int, rtt time.Duration) adaptivelimiter.AdaptiveLimiter[*http.Response] {
		return adaptivelimiter.NewBuilder[*http.Response]().
			WithLimits(uint(lo), uint(hi), uint(min(max(initial, lo), hi))).
			WithRecentWindow(max(t.windowMin, rtt), max(t.windowMax, rtt), t.windowSamples).
			WithBaselineWindow(t.baselineAge).
			OnLimitChanged(func(e adaptivelimiter.LimitChangedEvent) {
				c.log.Debug("core concurrency limit changed", "from", e.OldLimit, "to", e.NewLimit)
			}).
			Build()
	}
	initial := min(max(DefaultCoreConcurrencyInitial, lo), hi)
	var ss *slowStart
	if lo < hi {
		ss = newSlowStart(initial, lo, hi)
	}
	return newCoreLimit(build, ss, initial, c.log)
}

// MaxInFlight implements consumer.Pacer: how many deliveries the consumer
// may have running on Core now. It is BatchMax events for each permit of
// the limiter, each request between two attempts (waiting out a retry's
// backoff, holding no permit) and, with an adaptive limit, each of a small
// headroom (limit/8 + 2) that waits for a permit: a limit that rises is
// then filled at once, and a permit freed goes to a waiting request
// without a round trip through the consumer. The rest of the events wait
// in the consumer's queue, not here.
func (c *Core) MaxInFlight() int {
	limit := c.limiter.Limit()
	n := limit + max(0, int(c.posts.Load()-c.atLimiter.Load()))
	if c.cfg.Concurrency == 0 {
		n += limit/8 + 2
	}
	return n * c.cfg.BatchMax
}

// ConcurrencyLimit returns the limiter's current limit: the most requests
// in flight to Core at once.
func (c *Core) ConcurrencyLimit() int { return c.limiter.Limit() }

// limiterPolicy is the concurrency limiter as a failsafe-go policy, between
// the retry policy and the breaker (see the top of this file): each
// attempt waits for a permit, and returns it when done, recording its
// duration only when Core took the request.
type limiterPolicy struct{ c *Core }

// ToExecutor returns the policy itself: it is its own executor.
func (p limiterPolicy) ToExecutor(_ *http.Response) any { return p }

// Apply wraps one attempt (inner) in the limiter.
func (p limiterPolicy) Apply(inner func(failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response]) func(failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response] {
	return func(exec failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response] {
		c := p.c
		if !c.Available() {
			// The breaker is open: it fails the attempt at once without a
			// request, so the attempt needs no permit and must not wait
			// for one behind requests that may be hanging until their
			// timeout.
			return inner(exec)
		}
		c.atLimiter.Add(1)
		defer c.atLimiter.Add(-1)
		permit, err := c.limiter.acquire(exec.Context())
		if err != nil {
			// Only the end of the caller's context stops the wait.
			if canceled, r := exec.(policy.ExecutionInternal[*http.Response]).IsCanceledWithResult(); canceled {
				return r
			}
			return &common.PolicyResult[*http.Response]{Error: err, Done: true}
		}
		r := inner(exec)
		switch classifyCore(false, r.Result, r.Error) {
		case coreOK:
			permit.done(true, false)
		case coreRetry, coreRefused:
			// A cancelled attempt reads as coreRetry here (done false):
			// tell it apart by the context.
			permit.done(false, exec.Context().Err() == nil)
		default:
			permit.done(false, false)
		}
		return r
	}
}
