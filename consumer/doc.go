// Package consumer reads events from a durable JetStream pull consumer and
// fans each one out to every sink concurrently. Its one rule:
//
//	An event is acked only when every sink has taken it or its failure is
//	durably in the failure log. Anything else leaves it in JetStream, to be
//	delivered again.
//
// # Consuming
//
// New creates (or updates) the durable pull consumer on the events stream:
// explicit ack, AckWait, MaxAckPending and a filter on the stream's
// subjects; unlimited MaxDeliver (see Max deliveries); never
// InactiveThreshold. Run consumes it with
// jetstream's Consume, pre-buffering at most Concurrency messages, and hands
// every message to a pool of Concurrency workers through a small queue of at
// most Concurrency more. Every message the consumer has been handed, queued or
// being worked on, gets an InProgress heartbeat every AckWait/3, so nothing is
// redelivered while it is held here; what the library pre-buffers waits at
// most about two event handling times.
//
// The nats.Conn behind the JetStream context must reconnect forever
// (nats.MaxReconnects(-1)): the consumer relies on the client library to
// reconnect and resume pulling after a server restart. A durable deleted from
// under a running consumer is recreated (Consume reports ErrConsumerDeleted,
// or the periodic consumer info poll finds it missing), and consuming
// resumes. The same poll (every 5s) reads the stream for the retention
// gauges: the age of the oldest event the durable has not acked, the
// stream's MaxAge, size and MaxBytes. Several processes may run on the same
// durable; each event is then handled by one of them, barring redelivery.
// Ordering across events is not guaranteed.
//
// # Fan-out and ack decisions
//
// Each message is decoded with bhiv.Decode. A message that is not a valid
// event is written to the failure log (sink "decode", class invalid_input,
// with its raw bytes and headers) and terminated. A valid event goes to every
// sink at once; a sink that takes it is remembered, in bounded memory, as
// having taken that event id, so a redelivery in this process does not send
// it there again. A sink that finally fails (a *bhiv.SinkError of class
// permanent or retryable_exhausted, any other error, or a panic, recorded as
// permanent) gets a failure record. When every sink has settled, the records
// are appended to the failure log and the event is acked; if the failure log
// cannot be written the event is Nak'ed with a delay and stays in JetStream.
//
// # Sink outages
//
// A sink that reports an outage (an error wrapping bhiv.ErrUnavailable, or
// Available() false when it implements Availability) gets no failure record:
// the event is held (with heartbeats) and retried once the sink is available
// again, and intake pauses: the Consume is drained, so that no new messages
// are pulled and nothing sits unheartbeated in the client's buffer.
//
// Intake resumes as soon as no sink is unavailable, whatever became of the
// held events. A sink that implements Availability is unavailable exactly
// while Available reports false: its breaker or probe decides, and once an
// open breaker may be probed (half-open) intake resumes and new events probe
// it too. A sink without Availability is unavailable while some event is
// held for it and its latest answer was an outage; any other answer (it
// took an event, or failed one for another reason) or the end of the last
// hold, however it ended, makes it available again.
//
// # Hold limits
//
// No event is held for ever; two limits give it up, with a failure record
// of class retryable_exhausted for that sink carrying the reason and the
// sink's last answer, after which the event is acked as soon as every sink
// has settled:
//
//   - MaxHold (default 1h): the event has been held for that sink for
//     longer than MaxHold, counted from the first time the sink was
//     unavailable for it in this process. A sink down for good thus sends
//     to the failure log only the events this process had taken in (at
//     most about 3 × Concurrency per MaxHold while its breaker keeps
//     letting probes through); the backlog stays in JetStream.
//   - MaxFailedHolds (default 3): the event is a poison event, one the
//     sink fails while it takes others. Its own failed attempts open the
//     sink's breaker, so each of its deliveries ends as an outage, its
//     retries never run out and NumDelivered never grows. A hold counts as
//     failed when the call that ended in the outage made attempts of the
//     event's own (SinkError.Attempts, one for another error) and the sink
//     took other events since the event's previous call. In a real outage
//     nothing is taken, so only the hold at its onset can count; an event
//     that found the breaker already open made no attempt of its own.
//
// The hold clock and the failed holds belong to one delivery in one
// process. A redelivery starts them again; every redelivery counts a
// delivery, so across restarts an event is held at most about
// MaxDeliver × MaxHold before it is given up. The message's stream
// timestamp is not used as the start: it includes the time the event
// waited in the stream while intake was paused, and would turn the backlog
// of a long outage into failure records.
//
// JetStream deletes events older than the stream's MaxAge whether or not
// they were acked: keep MaxHold well under it (Run warns at start when it
// is not), and watch bhiv_consumer_oldest_unacked_age_seconds against
// bhiv_stream_max_age_seconds.
//
// # Shutdown
//
// When Run's context ends the consumer stops pulling (drains the Consume),
// Naks what it has queued but not started, gives the events being worked on
// ShutdownTimeout to finish (and acks them), Naks whatever is still
// unfinished so that another replica gets it at once, and returns. The caller
// then drains the connection.
//
// # Max deliveries
//
// An event delivered MaxDeliver times without an ack (a crash loop: every
// process that took it died before settling it) is given up on its next
// delivery: it is not handed to the sinks again; every sink this process
// does not know to have taken it gets a failure record (an invalid message
// gets its invalid-input record), then the message is terminated. The
// durable itself has no MaxDeliver limit, so JetStream never drops such an
// event on its own, even when no process runs at the moment its last
// AckWait expires. A durable that still has a server-side limit (set by an
// older bhiv during a rolling upgrade) emits MAX_DELIVERIES advisories: the
// consumer listens to them (in a queue group, so one replica handles each),
// fetches the message by its stream sequence and records it the same way.
package consumer
