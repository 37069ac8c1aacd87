package sinks

import (
	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/common"
	"github.com/failsafe-go/failsafe-go/policy"
)

// newBreaker returns Core's circuit breaker: it counts retryable and
// refused attempts as failures (classifyCore), opens after BreakerFailures
// in a row, and lets one probe through after BreakerDelay (or the
// Retry-After of the failure that opened it).
func (c *Core) newBreaker() circuitbreaker.CircuitBreaker[*http.Response] {
	return circuitbreaker.NewBuilder[*http.Response]().
		HandleIf(func(resp *http.Response, err error) bool {
			o := classifyCore(false, resp, err)
			return o == coreRetry || o == coreRefused
		}).
		WithFailureThreshold(uint(c.cfg.BreakerFailures)).
		WithSuccessThreshold(1). // one good probe closes it, one bad one reopens it
		WithDelayFunc(c.breakerDelay).
		WithDelay(c.cfg.BreakerDelay). // when opened by hand (a refusal)
		OnStateChanged(c.breakerChanged).
		Build()
}

// refusedHint says what a refusing status means for the operator.
func refusedHint(status int) string {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "a configuration problem: check BHIV_CORE_TOKEN (or the URL's credentials); events are held until Core accepts them"
	case http.StatusProxyAuthRequired:
		return "a configuration problem: check the proxy credentials (HTTPS_PROXY); events are held until Core accepts them"
	}
	return "a configuration problem: check BHIV_CORE_URL; events are held until Core accepts them"
}

// breakerDelay is how long the breaker stays open: the Retry-After of the
// failure that opened it, when it has one, capped at max(BreakerDelay,
// BackoffMax), else BreakerDelay.
func (c *Core) breakerDelay(exec failsafe.ExecutionAttempt[*http.Response]) time.Duration {
	if exec != nil {
		if d, ok := retryAfter(exec.LastResult(), time.Now()); ok {
			return min(d, max(c.cfg.BreakerDelay, c.cfg.BackoffMax))
		}
	}
	return c.cfg.BreakerDelay
}

// breakerChanged logs the breaker's state changes.
func (c *Core) breakerChanged(e circuitbreaker.StateChangedEvent) {
	if c.quiet.Load() {
		return
	}
	switch e.NewState {
	case circuitbreaker.OpenState:
		c.log.Warn("core circuit breaker open: holding events", "url", c.safeURL, "retry_in", c.breaker.RemainingDelay().Round(time.Millisecond))
	case circuitbreaker.HalfOpenState:
		c.log.Info("core circuit breaker half-open: probing", "url", c.safeURL)
	case circuitbreaker.ClosedState:
		if st := c.refusedStatus.Swap(0); st != 0 {
			c.log.Info("core accepts bhiv's requests again", "url", c.safeURL, "refused_with", st)
		}
		c.log.Info("core circuit breaker closed: Core is back", "url", c.safeURL)
	}
}

// breakerPolicy is the circuit breaker as the middle failsafe-go policy. It
// runs each attempt through the breaker's own executor (a permit first,
// then the result recorded as a success or a failure, Retry-After taken
// into the open delay), with two exceptions: an attempt that got no answer
// because the caller's context ended is recorded as neither, and a refusal
// opens the breaker at once.
type breakerPolicy struct{ c *Core }

// ToExecutor returns the policy itself: it is its own executor.
func (p breakerPolicy) ToExecutor(_ *http.Response) any { return p }

// Apply wraps one attempt (inner) in the breaker.
func (p breakerPolicy) Apply(inner func(failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response]) func(failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response] {
	pe := p.c.breaker.ToExecutor(nil).(policy.Executor[*http.Response])
	return func(exec failsafe.Execution[*http.Response]) *common.PolicyResult[*http.Response] {
		ei := exec.(policy.ExecutionInternal[*http.Response])
		if r := pe.PreExecute(ei); r != nil {
			return r
		}
		r := inner(exec)
		call := callOf(exec.Context())
		switch classifyCore(call != nil && call.ctx.Err() != nil, r.Result, r.Error) {
		case coreCancelled:
			p.c.returnPermit()
			return r.WithFailure()
		case coreRefused:
			r = pe.PostExecute(ei, r)
			p.c.refused(r.Result)
			return r
		}
		return pe.PostExecute(ei, r)
	}
}

// returnPermit gives back the permit of an attempt the caller cancelled,
// recording nothing. A closed breaker holds no permits. A half-open one
// gave its probe the only permit, and failsafe-go has no call that returns
// a permit without a result: entering the half-open state anew (through
// open, quietly) restores it, so that the next delivery probes.
func (c *Core) returnPermit() {
	if c.breaker.State() != circuitbreaker.HalfOpenState {
		return
	}
	c.quiet.Store(true)
	defer c.quiet.Store(false)
	c.breaker.Open()
	c.breaker.HalfOpen()
}

// refused handles a refusal (401, 403, 404, 407): Core turns bhiv itself
// away, so every event would get the same answer. The breaker opens at
// once, for BreakerDelay, after which the next delivery probes; the
// refusal is logged at error level once per outage (again if the status
// changes) and counted.
func (c *Core) refused(resp *http.Response) {
	status := resp.StatusCode
	c.m.refused(status)
	if !c.breaker.IsOpen() {
		c.breaker.Open()
	}
	if old := c.refusedStatus.Swap(int32(status)); old == int32(status) {
		return
	}
	excerpt, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(excerpt))
	c.log.Error("core refuses bhiv's requests: configuration problem, holding events in JetStream until it is fixed",
		"status", status, "url", c.safeURL, "body", c.redact(printable(excerpt)),
		"hint", refusedHint(status), "probe_in", c.cfg.BreakerDelay)
}
