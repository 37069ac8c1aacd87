package sinks

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/lmittmann/tint"
)

// backoffJitter is the share by which a backoff delay is varied at random
// (±), so that callers that failed together do not retry together.
const backoffJitter = 0.2

// newRetry returns Core's retry policy: retryable attempts (classifyCore)
// are retried MaxRetries times with backoff and Retry-After; an open
// breaker or a refusal ends the retries at once.
func (c *Core) newRetry() retrypolicy.RetryPolicy[*http.Response] {
	return retrypolicy.NewBuilder[*http.Response]().
		HandleIf(func(resp *http.Response, err error) bool { return classifyCore(false, resp, err) == coreRetry }).
		AbortIf(func(resp *http.Response, err error) bool {
			o := classifyCore(false, resp, err)
			return o == coreUnavailable || o == coreRefused
		}).
		WithMaxRetries(max(c.cfg.MaxRetries, 0)).
		WithDelayFunc(c.retryDelay).
		ReturnLastFailure().
		OnRetryScheduled(c.retryScheduled).
		Build()
}

// retryDelay is the wait before the next attempt: the response's Retry-After
// when it has one, else the exponential backoff with jitter; never more
// than BackoffMax.
func (c *Core) retryDelay(exec failsafe.ExecutionAttempt[*http.Response]) time.Duration {
	if d, ok := retryAfter(exec.LastResult(), time.Now()); ok {
		return min(d, c.cfg.BackoffMax)
	}
	d := c.cfg.Backoff
	for i := 1; i < exec.Attempts() && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (1 - backoffJitter + 2*backoffJitter*rand.Float64()))
	return min(d, c.cfg.BackoffMax)
}

// retryAfter reads the Retry-After header of resp, in delta-seconds or
// HTTP-date form.
func retryAfter(resp *http.Response, now time.Time) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// retryScheduled releases the failed attempt's response and logs the retry.
func (c *Core) retryScheduled(e failsafe.ExecutionScheduledEvent[*http.Response]) {
	resp, err := e.LastResult(), e.LastError()
	if resp != nil {
		_ = resp.Body.Close()
	}
	if !c.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	key := ""
	if call, ok := e.Context().Value(callKey{}).(*coreCall); ok {
		key = call.key
	}
	attrs := []any{"key", key, "attempt", e.Attempts(), "delay", e.Delay}
	if resp != nil {
		attrs = append(attrs, "status", resp.StatusCode)
	}
	if err != nil {
		attrs = append(attrs, tint.Err(c.sanitize(err)))
	}
	c.log.Debug("core attempt failed; retrying", attrs...)
}
