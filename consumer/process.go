package consumer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go/jetstream"
)

// state is how one sink ended with one event.
type state int

const (
	stDone       state = iota // taken, now or before (remembered)
	stFailed                  // finally failed: a failure record is due
	stUnfinished              // shutdown came first: the event goes back to JetStream
)

type outcome struct {
	state state
	err   error
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

// process decides the fate of one message: decode, fan out, record
// failures, then ack, Nak or terminate.
func (c *Consumer) process(ctx context.Context, t *inflight) {
	m, delivered := c.message(t.msg)
	ev, err, panicked := c.decode(m)
	c.m.nReceived.Add(1)
	kind := kindInvalid
	if err == nil {
		kind = string(ev.Kind())
	}
	c.m.received.WithLabelValues(kind).Inc()
	if delivered > c.cfg.MaxDeliver {
		c.giveUp(ctx, t, m, delivered-1)
		return
	}
	if err != nil {
		rec := c.invalidRecord(m, delivered, err, panicked)
		if err := c.appendRecords(ctx, rec); err != nil {
			c.log.Error("cannot write the failure log; the message stays in JetStream", "subject", m.Subject,
				"stream_seq", m.Sequence, "retry_in", c.cfg.NakDelay, tint.Err(err))
			c.nak(t, c.cfg.NakDelay)
			return
		}
		c.term(t, termReason(err))
		return
	}
	c.fanOut(ctx, t, &ev, m, delivered)
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

// fanOut sends ev to every sink that has not taken it yet, at once, and
// settles the message when all have finished.
func (c *Consumer) fanOut(ctx context.Context, t *inflight, ev *bhiv.Event, m bhiv.Message, delivered int) {
	outs := make([]outcome, len(c.sinks))
	fp := fingerprint(m)
	if c.mem.conflict(ev.ID, fp) {
		c.log.Warn("a different message carries an event id already handled; the sinks keep the first event",
			"event_id", ev.ID, "stream_seq", m.Sequence)
	}
	var wg sync.WaitGroup
	last := -1
	for i, s := range c.sinks {
		if c.mem.has(ev.ID, fp, s.bit) {
			outs[i] = outcome{state: stDone}
			continue
		}
		if last >= 0 {
			j := last
			wg.Go(func() { outs[j] = c.deliver(ctx, c.sinks[j], ev, fp) })
		}
		last = i
	}
	if last >= 0 {
		outs[last] = c.deliver(ctx, c.sinks[last], ev, fp) // the last one on this goroutine
	}
	wg.Wait()

	var recs []bhiv.FailureRecord
	var failed []*sinkState
	for i, o := range outs {
		switch o.state {
		case stUnfinished:
			c.nak(t, 0)
			return
		case stFailed:
			recs = append(recs, c.sinkRecord(c.sinks[i].name, ev, m, o.err))
			failed = append(failed, c.sinks[i])
		}
	}
	if len(recs) > 0 {
		if err := c.appendRecords(ctx, recs...); err != nil {
			c.log.Error("cannot write the failure log; the event stays in JetStream", "event_id", ev.ID,
				"stream_seq", m.Sequence, "deliveries", delivered, "retry_in", c.cfg.NakDelay, tint.Err(err))
			c.nak(t, c.cfg.NakDelay)
			return
		}
		for _, s := range failed {
			c.mem.add(ev.ID, fp, s.bit)
		}
	}
	c.ack(t)
}

// deliver sends ev to one sink until it takes it, finally fails, or
// shutdown ends the wait. While the sink is unavailable the event is held
// (the heartbeats keep it) and retried when the sink is back.
func (c *Consumer) deliver(ctx context.Context, s *sinkState, ev *bhiv.Event, fp uint64) outcome {
	start := time.Now()
	wait := 50 * time.Millisecond
	holding := false // counted in s.held
	setHolding := func(h bool) {
		if h != holding {
			holding = h
			if h {
				s.held.Add(1)
			} else {
				s.held.Add(-1)
			}
		}
	}
	defer setHolding(false)
	for {
		if !s.available() {
			if !c.hold(ctx, s, wait) {
				return outcome{state: stUnfinished}
			}
			wait = min(2*wait, time.Second)
		}
		cp := *ev // sinks get their own copy of the envelope
		err, panicked := c.call(ctx, s, &cp)
		if err == nil {
			s.outage.Store(false)
			s.taken.Add(1)
			c.mem.add(ev.ID, fp, s.bit)
			c.m.duration.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
			c.m.deliveries.WithLabelValues(s.name, OutcomeSuccess).Inc()
			return outcome{state: stDone}
		}
		if !panicked && ctx.Err() != nil {
			return outcome{state: stUnfinished}
		}
		if !panicked && (errors.Is(err, bhiv.ErrUnavailable) || !s.available()) {
			s.outage.Store(true)
			if !holding {
				c.log.Debug("sink unavailable; holding the event", "sink", s.name, "event_id", ev.ID, tint.Err(err))
			}
			setHolding(true)
			if !c.hold(ctx, s, wait) {
				return outcome{state: stUnfinished}
			}
			wait = min(2*wait, time.Second)
			continue
		}
		s.outage.Store(false) // an answer that is not an outage: the sink is up
		c.m.duration.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
		outcomeLabel := OutcomeRetryableExhausted
		if class, _, _ := classify(err); class == bhiv.ClassPermanent || class == bhiv.ClassInvalidInput {
			outcomeLabel = OutcomePermanent
		}
		c.m.deliveries.WithLabelValues(s.name, outcomeLabel).Inc()
		return outcome{state: stFailed, err: err}
	}
}

// hold waits at least minWait and then until the sink is available, or at
// most retryHold (so that a breaker that moves to half-open only when asked
// is probed). It returns false when the wait must end: shutdown.
func (c *Consumer) hold(ctx context.Context, s *sinkState, minWait time.Duration) bool {
	start := time.Now()
	earliest, latest := start.Add(minWait), start.Add(max(c.cfg.retryHold, minWait))
	tick := time.NewTicker(max(min(c.cfg.availEvery/2, minWait), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-c.abortHolds:
			return false
		case now := <-tick.C:
			if !now.Before(latest) || (!now.Before(earliest) && s.available()) {
				return true
			}
		}
	}
}

// call runs the sink, turning a panic into a permanent SinkError.
func (c *Consumer) call(ctx context.Context, s *sinkState, ev *bhiv.Event) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in sink", "sink", s.name, "event_id", ev.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = &bhiv.SinkError{Sink: s.name, Class: bhiv.ClassPermanent, Attempts: 1, Err: fmt.Errorf("panic: %v", r)}
			panicked = true
		}
	}()
	return s.sink.Deliver(ctx, ev), false
}

// classify reads the class, status and attempts of a sink's error. Errors
// that are not a *bhiv.SinkError count as retryable_exhausted after one
// attempt.
func classify(err error) (class bhiv.ErrorClass, status, attempts int) {
	var se *bhiv.SinkError
	if errors.As(err, &se) {
		class, status, attempts = se.Class, se.Status, se.Attempts
		switch class {
		case bhiv.ClassPermanent, bhiv.ClassRetryableExhausted, bhiv.ClassInvalidInput:
		default:
			class = bhiv.ClassRetryableExhausted
		}
	} else {
		class = bhiv.ClassRetryableExhausted
	}
	return class, status, max(attempts, 1)
}

// sinkRecord is the failure record of a sink that finally failed ev.
func (c *Consumer) sinkRecord(sink string, ev *bhiv.Event, m bhiv.Message, err error) bhiv.FailureRecord {
	class, status, attempts := classify(err)
	msg := err.Error()
	var se *bhiv.SinkError
	if errors.As(err, &se) && se.Body != "" {
		msg += " (response body: " + se.Body + ")"
	}
	env, jerr := ev.JSON()
	if jerr != nil { // cannot happen for a decoded event
		env = nil
		msg += "; envelope not encodable: " + jerr.Error()
	}
	return bhiv.FailureRecord{
		Time:       time.Now().UTC(),
		Sink:       sink,
		EventID:    ev.ID,
		Kind:       ev.Kind(),
		Subject:    m.Subject,
		StreamSeq:  m.Sequence,
		Attempts:   attempts,
		Status:     status,
		Error:      msg,
		ErrorClass: class,
		Event:      env,
	}
}

// invalidRecord is the failure record of a message that is not a valid
// event: class invalid_input (permanent when decoding panicked), with the raw
// bytes and headers.
func (c *Consumer) invalidRecord(m bhiv.Message, delivered int, err error, panicked bool) bhiv.FailureRecord {
	class := bhiv.ClassInvalidInput
	if panicked {
		class = bhiv.ClassPermanent
	}
	rec := bhiv.FailureRecord{
		Time:       time.Now().UTC(),
		Sink:       bhiv.SinkDecode,
		Subject:    m.Subject,
		StreamSeq:  m.Sequence,
		Attempts:   max(delivered, 1),
		Error:      err.Error(),
		ErrorClass: class,
		Raw:        m.Data,
		Headers:    m.Header,
	}
	if rec.Raw == nil {
		rec.Raw = []byte{}
	}
	if id := firstHeader(m.Header, bhiv.MsgIDHeader); bhiv.ValidID(id) {
		rec.EventID = id
	}
	if k, err := bhiv.KindFromSubject(c.cfg.Stream.SubjectPrefix, m.Subject); err == nil {
		rec.Kind = k
	}
	return rec
}

// appendRecords writes recs to the failure log (a panic there is an error)
// and logs one warning per record.
func (c *Consumer) appendRecords(ctx context.Context, recs ...bhiv.FailureRecord) (err error) {
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("failure log panicked: %v", r)
			}
		}()
		err = c.cfg.FailureLog.Append(ctx, recs...)
	}()
	if err != nil {
		return err
	}
	for _, r := range recs {
		c.m.failureRecords.WithLabelValues(r.Sink, string(r.ErrorClass)).Inc()
		c.m.nFailures.Add(1)
		c.log.Warn("event recorded in the failure log", "sink", r.Sink, "class", string(r.ErrorClass),
			"event_id", r.EventID, "subject", r.Subject, "stream_seq", r.StreamSeq, "attempts", r.Attempts,
			"status", r.Status, tint.Err(errors.New(r.Error)))
	}
	return nil
}

func firstHeader(h map[string][]string, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// termReason is the reason given to TermWithReason: one short line.
func termReason(err error) string {
	r := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, err.Error())
	if len(r) > 200 {
		r = r[:200]
	}
	return r
}
