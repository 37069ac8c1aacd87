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
// InactiveThreshold. Run consumes it with jetstream's Consume. Each message
// is decoded once, as it comes in, and put in the queue of every sink that
// has not taken it yet; no worker pool stands between the two. What bounds
// the events in flight is the durable's MaxAckPending (a process holds at
// most MaxInFlight, by default as many), so a fast sink can run that far
// ahead of a slow one.
//
// # Each sink at its own pace
//
// Every sink takes events from its own queue, in order, as many at once as
// its pace allows: a sink that sets its own pace (Pacer, such as Core with
// its adaptive concurrency limit) is asked before each delivery; any other
// gets at most Concurrency deliveries at once (the Bucket, whose group
// commit takes every write waiting). A slow Core therefore never slows the
// Bucket: events wait for Core in its queue, already in the bucket. Every
// message held, whatever it waits for, gets an InProgress heartbeat every
// AckWait/3, so nothing is redelivered while it is held here; what the
// client library pre-buffers (at most min(500, MaxInFlight)) waits only for
// the decode of the messages before it.
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
// with its raw bytes and headers) and terminated. A valid event goes to
// every sink's queue at once; a sink that takes it is remembered, in bounded
// memory, as having taken that event id, so a redelivery in this process
// does not send it there again. A sink that finally fails (a *bhiv.SinkError of class
// permanent or retryable_exhausted, any other error, or a panic, recorded as
// permanent) gets a failure record. When every sink has settled, the records
// are appended to the failure log and the event is acked; if the failure log
// cannot be written the event is Nak'ed with a delay and stays in JetStream.
//
// # Sink outages
//
// A sink that reports an outage (an error wrapping bhiv.ErrUnavailable, or
// Available() false when it implements Availability) gets no failure record:
// the event goes back to the sink's queue (at its end, so that an event the
// sink keeps failing does not block the others) and is held there (with
// heartbeats), and the sink's queue is held too: one event at a time
// probes the sink, as soon as it says it is available again and at the
// latest every few seconds (a circuit breaker that goes half-open only when
// called needs a call). Meanwhile intake pauses: the Consume is drained, so
// that no new messages are pulled and nothing sits unheartbeated in the
// client's buffer; the other sinks work through their queues.
//
// Intake resumes as soon as no sink is unavailable, whatever became of the
// held events. A sink that implements Availability is unavailable exactly
// while Available reports false: its breaker or probe decides, and once an
// open breaker may be probed (half-open) intake resumes and new events
// queue behind the probe (so that one event the sink keeps failing cannot
// keep intake paused on its own). An event the sink tried itself and
// answered with an outage is a suspect: at the front of the queue it goes
// once to the back, so the events behind it go first, the probe included
// (it waits one pass of the queue, not more), and when only suspects wait,
// the probe waits a moment (twice the availability check) for intake to
// bring a fresh event; so an event that trips the sink's breaker every
// time, alone in the queue when it did, is not the probe that trips it
// again before anything else gets in. A sink without Availability is
// unavailable while events wait for it and its latest answer was an
// outage: any other answer (it took an event, or failed one for another
// reason) ends that, and so does its queue running empty, however the held
// events ended.
//
// # Hold limits
//
// No event is held for ever; two limits give it up, with a failure record
// of class retryable_exhausted for that sink carrying the reason and the
// sink's last answer, after which the event is acked as soon as every sink
// has settled:
//
//   - MaxHold (default 1h): the event has been held for that sink for
//     longer than MaxHold, counted from the first time it was held for the
//     sink in this process (an outage answer to it, or waiting in the
//     sink's queue while the sink was in an outage). A sink down for good
//     thus sends to the failure log only the events this process had taken
//     in (at most MaxInFlight per MaxHold); the backlog stays in JetStream.
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
// Naks the events no sink has started, gives the events a sink has started
// ShutdownTimeout to finish on every sink (and acks them), Naks whatever is
// still unfinished so that another replica gets it at once, and returns.
// The caller then drains the connection.
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
