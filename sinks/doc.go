// Package sinks holds the destinations of the HackaVerse → BHIV pipeline and
// the place where events go when a destination finally cannot take them.
// Nothing here knows about NATS: the consumer hands each sink a decoded
// *bhiv.Event through the one-method Deliver interface, and every sink
// either takes the event or returns a *bhiv.SinkError saying why not and of
// which class (retryable_exhausted or permanent).
//
// Core POSTs each event to BHIV Core following the CloudEvents 1.0 HTTP
// Protocol Binding (http-protocol-binding.md; the section numbers below are
// its own), with the event id as Idempotency-Key and a byte-identical
// request on every attempt. CoreConfig.Mode picks the content mode (§1.3)
// of a request that carries one event:
//
//   - binary, the default (§3.1): the body is the event's data exactly as
//     published, which is what the Python connectors bhiv replaces POSTed;
//     Content-Type is its datacontenttype (application/json when it has
//     none), and no ce-datacontenttype header is sent (§3.1.1); every other
//     attribute, extensions included, is a header named "ce-" and the
//     attribute name (§3.1.3.1) whose value is the attribute's canonical
//     string, percent-encoded as §3.1.3.2 says (space, '"', '%' and every
//     byte outside printable ASCII as %XY). An extension whose name is not
//     a CloudEvents attribute name cannot be a header: such an event is a
//     permanent failure in binary mode;
//   - structured (§3.2): the envelope in the JSON event format, as encoded
//     once at decode, with Content-Type "application/cloudevents+json;
//     charset=UTF-8".
//
// With BatchMax above 1 (the opt-in that §3 asks of batching), concurrent
// deliveries go in one request in the batched mode (§3.3), whatever Mode
// says since the binding has no binary batch: a JSON array of envelopes
// with Content-Type "application/cloudevents-batch+json". A batch that ends
// up with one event is sent as a single event, in Mode.
//
// Every attempt goes through failsafe-go policies: a retry policy
// (exponential backoff with jitter, Retry-After honoured) around an
// adaptive concurrency limiter around a circuit breaker around a
// per-attempt timeout. The limiter (core_limit.go) holds the requests in
// flight to Core at its limit, which follows Core's latency between
// ConcurrencyMin and ConcurrencyMax (or is fixed, Concurrency): each
// attempt waits for a permit, in order, until one is free or the caller's
// context ends, never rejected and never counted by the breaker; a
// retry's backoff holds none. Core is a consumer.Pacer: MaxInFlight keeps
// the consumer's deliveries to about the permits, so that waiting events
// stay in the consumer's queue. One table (classifyCore) decides
// every answer: 2xx is success; network errors (a dial timeout too),
// timeouts, 408, 425, 429, 500, 502, 503 and 504 are retried; 401, 403, 407
// and 404 are refusals of bhiv itself (a rotated token, proxy credentials,
// a wrong URL), which no retry fixes and no event causes, so they are an
// outage: the breaker opens at once, the error wraps bhiv.ErrUnavailable so
// that the consumer holds events in JetStream, an error line says once per
// outage which status came from which URL (redacted), and
// bhiv_core_refused_total counts them; after BreakerDelay the next delivery
// probes. Every other status is permanent and keeps the first KiB of the
// response body. Whether a delivery was cancelled is read from the caller's
// context alone, never from the error, and an attempt it cut short counts
// for the breaker neither as a failure nor as a success. While the breaker
// is open, Deliver fails at once with an error wrapping bhiv.ErrUnavailable
// and Available reports false, so that the consumer holds events in
// JetStream instead of writing them off. Tokens and URL user-info never
// appear in logs or errors. The failure log, replay (which sends through
// Core, so in its mode) and the Bucket keep whole envelopes whatever the
// mode.
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
// S3Bucket is the Bucket on S3-compatible object storage (minio-go), for
// replicas on several machines: the same key (EventKey) below a prefix and
// the same bytes, one PUT with Content-MD5 per event, the first event under
// an id kept by If-None-Match: * (or, on a store without conditional
// writes, a read before the write, racy between replicas), and the same
// outage rule: a store down or refusing access makes Deliver wrap
// bhiv.ErrUnavailable and Available report false until a probe succeeds.
// Both buckets are read through BucketReader (DirReader, S3Reader), which
// the audit uses.
//
// FailureLog is the dead-letter file: append-only JSON Lines of
// bhiv.FailureRecord, durable before Append returns, rotated by size. Replay
// re-sends its records to their sinks with the same policies, removing the
// ones that go through (the `bhiv replay` command).
package sinks
