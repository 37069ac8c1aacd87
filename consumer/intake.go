package consumer

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/hackaverse/bhiv"
	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go/jetstream"
)

// handle is Consume's handler. It takes msg in and hands it to the sinks'
// queues; it blocks only while this process holds MaxAckPending messages,
// unless run is being stopped.
func (c *Consumer) handle(run *consumeRun, msg jetstream.Msg) {
	c.handled.Add(1)
	t := &inflight{msg: msg}
	c.mu.Lock()
	if c.stopping {
		// Nak'ed once the Consume is drained: a Nak now would bring it
		// straight back to the pull request being drained.
		c.late = append(c.late, t)
		c.mu.Unlock()
		return
	}
	c.owned[t] = struct{}{}
	n := len(c.owned)
	c.mu.Unlock()
	c.m.inFlight.Inc()
	c.intake(t)
	for n >= c.cfg.MaxInFlight {
		select {
		case <-c.room:
		case <-run.draining:
			return
		case <-c.halt:
			return
		}
		n = c.inFlight()
	}
}

// inflight is one message this process holds, from its receipt to its ack,
// Nak or term. A valid event waits in the queue of every sink that has not
// taken it yet; each sink delivers it at its own pace, and the last sink to
// settle it settles the message.
type inflight struct {
	msg jetstream.Msg

	// Set at intake, read-only afterwards.
	m         bhiv.Message
	delivered int
	ev        bhiv.Event
	fp        uint64

	mu      sync.Mutex
	outs    []outcome // by sink index
	left    int       // sinks not settled yet
	started int       // deliveries begun, on any sink
}

// message converts a JetStream message for bhiv.Decode, and returns how
// many times it has been delivered.
func (c *Consumer) message(msg jetstream.Msg) (bhiv.Message, int) {
	m := bhiv.Message{
		Subject: msg.Subject(),
		Header:  msg.Headers(),
		Data:    msg.Data(),
		Stream:  c.cfg.Stream.Name,
	}
	delivered := 1
	if md, err := msg.Metadata(); err == nil {
		m.Stream, m.Sequence, m.Timestamp = md.Stream, md.Sequence.Stream, md.Timestamp
		delivered = int(md.NumDelivered)
	}
	return m, delivered
}

// decode runs bhiv.Decode, turning a panic into an error.
func (c *Consumer) decode(m bhiv.Message) (ev bhiv.Event, err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic while decoding a message", "subject", m.Subject, "stream_seq", m.Sequence,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			ev, err, panicked = bhiv.Event{}, fmt.Errorf("panic while decoding: %v", r), true
		}
	}()
	ev, err = bhiv.Decode(m, c.decodeOpts)
	return ev, err, false
}

// intake decodes a message once and hands it to every sink that has not
// taken it yet. It never blocks on a sink: messages that need the failure
// log (invalid, or past max deliveries) are settled on a goroutine of their
// own.
func (c *Consumer) intake(t *inflight) {
	m, delivered := c.message(t.msg)
	ev, err, panicked := c.decode(m)
	c.m.nReceived.Add(1)
	kind := kindInvalid
	if err == nil {
		kind = string(ev.Kind())
	}
	c.m.received.WithLabelValues(kind).Inc()
	if delivered > c.cfg.MaxDeliver {
		c.background(func(ctx context.Context) { c.giveUp(ctx, t, m, delivered-1) })
		return
	}
	if err != nil {
		c.background(func(ctx context.Context) { c.settleInvalid(ctx, t, m, delivered, err, panicked) })
		return
	}
	t.m, t.delivered, t.ev, t.fp = m, delivered, ev, fingerprint(m)
	if c.mem.conflict(ev.ID, t.fp) {
		c.log.Warn("a different message carries an event id already handled; the sinks keep the first event",
			"event_id", ev.ID, "stream_seq", m.Sequence)
	}
	t.outs = make([]outcome, len(c.sinks))
	var todo []*sinkState
	for i, s := range c.sinks {
		if c.mem.has(ev.ID, t.fp, s.bit) {
			t.outs[i] = outcome{state: stDone}
			continue
		}
		todo = append(todo, s)
	}
	if len(todo) == 0 { // a redelivery of an event every sink has settled
		c.ack(t)
		return
	}
	t.left = len(todo)
	for _, s := range todo {
		s.enqueue(t)
	}
}

// background runs fn on a goroutine that Run waits for, with the context of
// the work (cancelled when the shutdown timeout is over).
func (c *Consumer) background(fn func(ctx context.Context)) {
	c.calls.Go(func() { fn(c.workCtx) })
}

// settleInvalid records a message that is not a valid event and terminates
// it; when the failure log cannot be written it stays in JetStream.
func (c *Consumer) settleInvalid(ctx context.Context, t *inflight, m bhiv.Message, delivered int, err error, panicked bool) {
	rec := c.invalidRecord(m, delivered, err, panicked)
	if err := c.appendRecords(ctx, rec); err != nil {
		c.log.Error("cannot write the failure log; the message stays in JetStream", "subject", m.Subject,
			"stream_seq", m.Sequence, "retry_in", c.cfg.NakDelay, tint.Err(err))
		c.nak(t, c.cfg.NakDelay)
		return
	}
	c.term(t, termReason(err))
}

// giveUp settles a message that was delivered MaxDeliver times without an
// ack (a crash loop: each process that took it died before settling it). It
// is not handed to the sinks again: every sink that has not taken it gets a
// failure record, then it is terminated. When the failure log cannot be
// written it stays in JetStream. JetStream itself never gives up (the
// durable's MaxDeliver is unlimited), so no event is dropped while no
// process is running.
func (c *Consumer) giveUp(ctx context.Context, t *inflight, m bhiv.Message, deliveries int) {
	recs := c.giveUpRecords(m, deliveries)
	if len(recs) > 0 {
		if err := c.appendRecords(ctx, recs...); err != nil {
			c.log.Error("cannot write the failure log for an event that reached max deliveries; it stays in JetStream",
				"stream_seq", m.Sequence, "deliveries", deliveries, "retry_in", c.cfg.NakDelay, tint.Err(err))
			c.nak(t, c.cfg.NakDelay)
			return
		}
	}
	c.term(t, maxDeliveriesReason(deliveries))
}

func (t *inflight) startedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.started
}
