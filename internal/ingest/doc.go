// Package ingest takes events over HTTP, for services without a NATS
// client, and publishes them to the events stream (`bhiv ingest`, also run
// by `bhiv dev`). Its one rule:
//
//	A request is answered 202 only once JetStream has acked every event it
//	carries; any other answer says exactly which events were stored.
//
// # Endpoints
//
// POST /events/{kind}, kind execution or reward, takes, by Content-Type as
// the CloudEvents HTTP binding (1.0.2, §3) says:
//
//   - a bare JSON data object, as the Python connectors bhiv replaces POSTed
//     it (requests.post(url, json=payload)): application/json, or no
//     Content-Type;
//   - a CloudEvent in binary mode (§3.1): the attributes as ce-* headers,
//     their values unquoted and percent-decoded as §3.1.3.2 says (invalid
//     UTF-8 is refused), the data as the body and its media type as
//     Content-Type (a ce-datacontenttype header is refused, §3.1.1);
//   - a CloudEvent in structured mode (§3.2): application/cloudevents+json;
//   - a batch (§3.3): application/cloudevents-batch+json, a JSON array of
//     structured CloudEvents, possibly empty.
//
// POST /bhiv/core is the path of the old Core, so that a service still
// calling the old send_to_core only points BHIV_CORE_URL at bhiv. It takes
// the same forms; each event's kind is its CloudEvents type (ce-type, or the
// envelope's type) when it has one, else reward when the data has a numeric
// "reward" field, else execution.
//
// GET /healthz answers 200 while the process runs; GET /readyz 200 when NATS
// is connected and the stream answers, else 503 with the reason; GET
// /metrics serves Config.Metrics when set. These need no token.
//
// # One model
//
// Every event is decoded by bhiv.Decode from the message the consumer would
// receive for it (its subject, its ce-* attributes as the NATS binding's
// headers, its body), so ingest takes and refuses exactly what the consumer
// would; the envelope Decode returns is what is published (structured, with
// Content-Type application/cloudevents+json and Nats-Msg-Id = the event id).
// The envelope must also fit the consumer's size limit (MaxEventBytes) and
// the NATS server's max payload. A bare data object gets the source
// Config.Source, and a binary event without ce-source too.
//
// # Ids and retries
//
// JetStream de-duplicates publishes by Nats-Msg-Id within the stream's
// Duplicates window (2 minutes by default), so a request retried with the
// same ids is stored once, and the answer flags the ids the stream already
// held as duplicates. An event's id is, in order: its own (the envelope's
// id, ce-id), the Idempotency-Key header (a bare object or a binary event
// without ce-id; quoted or not), or a new ULID. A bare POST without
// Idempotency-Key therefore gets a new id each time: retrying it may store
// it twice. An Idempotency-Key that differs from the event's own id is
// refused, and a batch, whose events carry their own ids, takes none.
//
// # Answers
//
// Every answer to a POST is a JSON Answer: {"ids": [...]} lists the ids
// stored, in request order.
//
//	202  every event acked by JetStream (duplicates listed in "duplicates")
//	400  invalid input (with "reason" and "error"; for a batch, "invalid"
//	     lists every invalid event): nothing stored — a batch is checked
//	     whole before any of it is published
//	401  no or wrong bearer token, when Config.Token is set (compared in
//	     constant time)
//	404  no such path or kind
//	405  not a POST (Allow: POST)
//	408  the body did not arrive within ReadTimeout
//	413  body above MaxBodyBytes, or an event above MaxEventBytes or the
//	     server's max payload: nothing stored
//	415  a Content-Type that is not JSON or a JSON CloudEvents format, or a
//	     Content-Encoding
//	503  JetStream did not take it (NATS disconnected, no stream responding,
//	     no ack within PublishTimeout, the stream full): Retry-After says
//	     when to retry; "ids" lists what was stored anyway (a batch whose
//	     later publishes failed) and "not_stored" the rest. Retrying the
//	     whole request is safe: the stored ids come back as duplicates
//	500  JetStream refused it for another reason (such as the subject
//	     belonging to another stream), listed the same way
//
// A 503 after a timeout cannot rule out that the event was stored after all
// (the ack may have been lost): retry with the same ids — for a bare object
// with Idempotency-Key set to the id in "not_stored" — within the
// Duplicates window and it is stored once.
//
// # Server
//
// Serve runs the handler with ReadHeaderTimeout, ReadTimeout, WriteTimeout
// and IdleTimeout, reads bodies through http.MaxBytesReader, and shuts down
// gracefully when its context ends. Without a token it warns at start when
// it listens on an address other hosts can reach. Metrics:
// bhiv_ingest_requests_total{path,code},
// bhiv_ingest_request_duration_seconds{path},
// bhiv_ingest_events_total{kind,outcome} and bhiv_ingest_invalid_total.
package ingest
