// Package sinks holds the destinations of the HackaVerse → BHIV pipeline and
// the place where events go when a destination finally cannot take them.
// Nothing here knows about NATS: the consumer hands each sink a decoded
// *bhiv.Event through the one-method Deliver interface, and every sink
// either takes the event or returns a *bhiv.SinkError saying why not and of
// which class (retryable_exhausted or permanent).
//
// Core POSTs each event envelope as JSON to BHIV Core, with the event id as
// Idempotency-Key and a byte-identical body on every attempt. Every attempt
// goes through failsafe-go policies: a retry policy (exponential backoff
// with jitter, Retry-After honoured) around a circuit breaker around a
// per-attempt timeout. One table (classifyCore) decides every answer: 2xx
// is success; network errors, timeouts, 408, 425, 429, 500, 502, 503 and
// 504 are retried; every other status is permanent and keeps the first KiB
// of the response body. While the breaker is open, Deliver fails at once
// with an error wrapping bhiv.ErrUnavailable and Available reports false, so
// that the consumer holds events in JetStream instead of writing them off.
// With BatchMax above 1, concurrent deliveries are sent together as a JSON
// array. Tokens and URL user-info never appear in logs or errors.
//
// Bucket writes each event to <dir>/<kind>/<YYYY-MM-DD>/<id>.json, crash
// safe (temp file under <dir>/.tmp, data made durable, rename into place,
// rename made durable, each on the file system the file is on), with the
// syncs of concurrent writes grouped in pipelined rounds (one sync makes
// one generation's data and the previous one's renames durable) so that
// durability costs little throughput. The first event written under an id
// wins: the same event again (numbers compared exactly) is a success, a
// different one a permanent error wrapping ErrConflict. When the bucket
// directory cannot take any file (a probe file fails too), Deliver's error
// wraps bhiv.ErrUnavailable and Available reports false until a probe
// succeeds, so that the consumer holds events as during a Core outage.
//
// FailureLog is the dead-letter file: append-only JSON Lines of
// bhiv.FailureRecord, durable before Append returns, rotated by size. Replay
// re-sends its records to their sinks with the same policies, removing the
// ones that go through (the `bhiv replay` command).
package sinks
