package sinks

import (
	"errors"
	"net/http"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// coreOutcome is what one attempt's result means.
type coreOutcome int

const (
	coreOK          coreOutcome = iota // 2xx: Core took it
	coreRetry                          // worth another attempt
	corePermanent                      // no retry can change it
	coreRefused                        // Core turns bhiv itself away: held as an outage
	coreUnavailable                    // the breaker is open: no attempt made
	coreCancelled                      // the caller's context ended first
)

// classifyCore is the one table that decides every attempt's result:
//
//	no answer, the caller's context ended       cancelled: no retry, not counted by the breaker
//	2xx                                         success
//	network error (a dial timeout too),
//	attempt timeout                             retryable
//	408, 425, 429, 500, 502, 503, 504           retryable
//	401, 403, 407, 404                          refused: Core turns bhiv itself away (token,
//	                                            proxy credentials, URL), a configuration
//	                                            problem no retry fixes and no event causes:
//	                                            the breaker opens and the caller holds events
//	                                            as in an outage until a probe gets through
//	any other status (other 4xx, 501, 3xx, 1xx) permanent: no retry
//	circuit breaker open                        unavailable: no retry, the caller holds the event
//
// Whether the caller's context ended (done) is read from that context
// alone, never guessed from the error: a dial timeout is a network error
// even though it wraps context.DeadlineExceeded. The circuit breaker counts
// retryable and refused attempts as failures, cancelled ones not at all
// (an attempt cut short says nothing about Core), and the rest as
// successes. The concurrency limiter learns Core's latency from 2xx
// attempts only (core_limit.go has its rows).
func classifyCore(done bool, resp *http.Response, err error) coreOutcome {
	if err != nil {
		switch {
		case errors.Is(err, circuitbreaker.ErrOpen):
			return coreUnavailable
		case done:
			return coreCancelled
		}
		return coreRetry
	}
	if resp == nil {
		return coreRetry
	}
	switch code := resp.StatusCode; {
	case code >= 200 && code <= 299:
		return coreOK
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests,
		code == http.StatusInternalServerError, code == http.StatusBadGateway,
		code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		return coreRetry
	case code == http.StatusUnauthorized, code == http.StatusForbidden,
		code == http.StatusProxyAuthRequired, code == http.StatusNotFound:
		return coreRefused
	}
	return corePermanent
}
