package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/hackaverse/bhiv"
)

// callKey holds a *coreCall in a delivery's context.
type callKey struct{}

// coreCall is the state of one delivery (one POST and its retries).
type coreCall struct {
	ctx      context.Context // the caller's
	key      string          // the Idempotency-Key
	attempts atomic.Int32
}

// callOf returns the delivery that ctx belongs to, or nil.
func callOf(ctx context.Context) *coreCall {
	call, _ := ctx.Value(callKey{}).(*coreCall)
	return call
}

// post sends m through the policies and turns the outcome into the error
// Deliver returns.
func (c *Core) post(ctx context.Context, m coreMsg) error {
	if ctx.Err() != nil {
		return cancelledErr(ctx, m.key, 0)
	}
	call := &coreCall{ctx: ctx, key: m.key}
	cctx := context.WithValue(ctx, callKey{}, call)
	req, err := c.request(m)
	if err != nil {
		return &bhiv.SinkError{Sink: CoreName, Class: bhiv.ClassPermanent, Err: c.sanitize(err)}
	}
	c.m.observeBatch(m.events)
	c.posts.Add(1)
	defer c.posts.Add(-1)
	resp, err := failsafehttp.NewRequestWithExecutor(req, c.client, c.executor.WithContext(cctx)).Do()
	if resp != nil {
		defer resp.Body.Close()
	}
	attempts := int(call.attempts.Load())
	outcome := classifyCore(ctx.Err() != nil, resp, err)
	if outcome == coreOK {
		return nil
	}
	if ctx.Err() != nil {
		return cancelledErr(ctx, m.key, attempts)
	}
	return c.failure(outcome, resp, err, attempts)
}

// request returns the POST that carries m, with its headers. Its own
// context stays Background: failsafehttp then uses the execution's context
// (with the per-attempt timeout) as is, without merging two contexts on
// every attempt.
func (c *Core) request(m coreMsg) (*http.Request, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, c.url, bytes.NewReader(m.body))
	if err != nil {
		return nil, err
	}
	h := req.Header
	h["Content-Type"] = []string{m.ctype}
	for i := 0; i+1 < len(m.attrs); i += 2 {
		h[m.attrs[i]] = []string{m.attrs[i+1]}
	}
	h["Idempotency-Key"] = []string{m.key}
	h["User-Agent"] = []string{c.cfg.UserAgent}
	if c.auth != "" {
		h["Authorization"] = []string{c.auth}
	}
	return req, nil
}

// failure is the *bhiv.SinkError of a delivery that ended with outcome
// (not a success, not the caller's cancellation) after attempts attempts.
func (c *Core) failure(outcome coreOutcome, resp *http.Response, err error, attempts int) *bhiv.SinkError {
	se := &bhiv.SinkError{Sink: CoreName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts}
	switch outcome {
	case coreUnavailable:
		se.Err = fmt.Errorf("%w: circuit breaker open (%s)", bhiv.ErrUnavailable, c.BreakerState())
		if st := c.refusedStatus.Load(); st != 0 {
			se.Err = fmt.Errorf("%w: circuit breaker open (%s) since Core answered %d %s: %s", bhiv.ErrUnavailable,
				c.BreakerState(), st, http.StatusText(int(st)), refusedHint(int(st)))
		}
	case coreRefused:
		c.fillStatus(se, resp)
		se.Err = fmt.Errorf("%w: %w: %s", bhiv.ErrUnavailable, se.Err, refusedHint(resp.StatusCode))
	case coreCancelled, coreRetry:
		if err != nil {
			if errors.Is(err, timeout.ErrExceeded) {
				err = fmt.Errorf("attempt timed out after %s: %w", c.cfg.Timeout, err)
			}
			se.Err = c.sanitize(err)
			break
		}
		c.fillStatus(se, resp)
	case corePermanent:
		se.Class = bhiv.ClassPermanent
		c.fillStatus(se, resp)
	}
	return se
}

// fillStatus records the status and body excerpt of resp in se.
func (c *Core) fillStatus(se *bhiv.SinkError, resp *http.Response) {
	se.Status = resp.StatusCode
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyExcerpt))
	se.Body = c.redact(printable(excerpt))
	text := http.StatusText(resp.StatusCode)
	if text == "" {
		text = "unknown status"
	}
	se.Err = fmt.Errorf("core answered %s", strings.ToLower(text))
}

// cancelledErr is the error of a delivery whose context ended. It wraps
// ctx.Err() and the context's cause when that differs (such as ErrClosed).
func cancelledErr(ctx context.Context, key string, attempts int) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause != nil && cause != err {
		return fmt.Errorf("core: delivery of %s stopped after %d attempt(s): %w: %w", key, attempts, cause, err)
	}
	return fmt.Errorf("core: delivery of %s stopped after %d attempt(s): %w", key, attempts, err)
}

// coreTransport counts attempts and reads each response's body (the first
// KiB of an error, the rest discarded) before returning it, so that the
// connection goes back to the pool at once, whatever the policies do with
// the response.
type coreTransport struct {
	next http.RoundTripper
	core *Core
}

func (t *coreTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if call, ok := req.Context().Value(callKey{}).(*coreCall); ok {
		call.attempts.Add(1)
	}
	t.core.m.attempt()
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	var excerpt []byte
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ = io.ReadAll(io.LimitReader(resp.Body, maxBodyExcerpt))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	if len(excerpt) > 0 {
		resp.Body = io.NopCloser(bytes.NewReader(excerpt))
	} else {
		resp.Body = http.NoBody
	}
	return resp, nil
}
