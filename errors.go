package bhiv

import (
	"errors"
	"fmt"
)

// Sentinel reasons of a *DecodeError; test them with errors.Is.
var (
	ErrNotJSON         = errors.New("not json")
	ErrNotObject       = errors.New("not a json object")
	ErrTooLarge        = errors.New("too large")
	ErrUnknownSubject  = errors.New("unknown subject")
	ErrUnknownKind     = errors.New("unknown kind")
	ErrInvalidID       = errors.New("invalid id")
	ErrMissingTeam     = errors.New("missing team id")
	ErrInvalidEnvelope = errors.New("invalid envelope")
	ErrInvalidData     = errors.New("invalid data")
)

// ErrUnavailable marks a sink failure caused by an outage the sink knows
// about (its circuit breaker is open). The consumer holds such events in
// JetStream and retries them when the sink is available again, instead of
// writing them to the failure log. Sinks wrap it in SinkError.Err.
var ErrUnavailable = errors.New("sink unavailable")

// DecodeError says why a message is not a valid event. Reason is one of the
// Err* sentinels; Detail says exactly what was found.
type DecodeError struct {
	Reason error
	Detail string
}

func (e *DecodeError) Error() string {
	if e.Detail == "" {
		return "invalid event: " + e.Reason.Error()
	}
	return fmt.Sprintf("invalid event: %s: %s", e.Reason, e.Detail)
}

// Unwrap returns the sentinel reason.
func (e *DecodeError) Unwrap() error { return e.Reason }

// ErrorClass says how a sink finally failed to take an event.
type ErrorClass string

// The error classes recorded in the failure log.
const (
	// ClassRetryableExhausted: a retryable failure (network, timeout, 5xx,
	// 429, disk) that outlasted the sink's retry policy.
	ClassRetryableExhausted ErrorClass = "retryable_exhausted"
	// ClassPermanent: a failure no retry can fix (4xx, 501, 3xx, a bad path,
	// a panic).
	ClassPermanent ErrorClass = "permanent"
	// ClassInvalidInput: the message is not a valid event.
	ClassInvalidInput ErrorClass = "invalid_input"
)

// SinkError is the error a sink returns when it finally cannot take an event.
// Sinks classify their failures here, in one place; the consumer reads the
// class with errors.As and writes it to the failure log.
type SinkError struct {
	Sink     string     // the sink's name, such as "core" or "bucket"
	Class    ErrorClass // retryable_exhausted or permanent
	Status   int        // the HTTP status, when there was one
	Attempts int        // how many attempts were made
	Body     string     // the first 1 KiB of the response body, when there was one
	Err      error      // the last underlying error
}

func (e *SinkError) Error() string {
	msg := fmt.Sprintf("%s: %s after %d attempt(s)", e.Sink, e.Class, e.Attempts)
	if e.Status != 0 {
		msg += fmt.Sprintf(": status %d", e.Status)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *SinkError) Unwrap() error { return e.Err }

// Permanent reports whether err is a *SinkError of class permanent.
func Permanent(err error) bool {
	var se *SinkError
	return errors.As(err, &se) && se.Class == ClassPermanent
}
