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
// (the heartbeats keep it) and retried when the sink is back, within the
// hold limits (see holding).
func (c *Consumer) deliver(ctx context.Context, s *sinkState, ev *bhiv.Event, fp uint64) outcome {
	start := time.Now()
	wait := 50 * time.Millisecond
	h := &holding{s: s, mark: s.taken.Load()}
	defer h.end()
	for {
		if !s.available() {
			h.begin(time.Now())
			switch c.hold(ctx, s, wait, h.since.Add(c.cfg.MaxHold)) {
			case holdStopped:
				return outcome{state: stUnfinished}
			case holdExpired:
				return c.giveUpHold(s, ev, h, start, h.overLimit(c.cfg.MaxHold))
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
			now := time.Now()
			s.outage.Store(true)
			if h.since.IsZero() {
				c.log.Debug("sink unavailable; holding the event", "sink", s.name, "event_id", ev.ID, tint.Err(err))
			}
			h.begin(now)
			if h.outage(err) >= c.cfg.MaxFailedHolds {
				return c.giveUpHold(s, ev, h, start, h.poisoned())
			}
			if !now.Before(h.since.Add(c.cfg.MaxHold)) {
				return c.giveUpHold(s, ev, h, start, h.overLimit(c.cfg.MaxHold))
			}
			switch c.hold(ctx, s, wait, h.since.Add(c.cfg.MaxHold)) {
			case holdStopped:
				return outcome{state: stUnfinished}
			case holdExpired:
				return c.giveUpHold(s, ev, h, start, h.overLimit(c.cfg.MaxHold))
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

// holding is the hold of one event for one sink: from the first time the
// sink was unavailable for it (Available false, or an outage answer) until
// the delivery ends.
//
// Two limits end it with a retryable_exhausted record, so that no event is
// held forever. MaxHold bounds its time. MaxFailedHolds catches a poison
// event, one the sink fails while it takes others: its own failed attempts
// open the sink's breaker, so every delivery of it ends as an outage and it
// would otherwise be held, reopening the breaker for everyone, until
// MaxHold. A hold counts as failed when, in the call that ended in the
// outage answer, the sink made attempts of the event's own (the
// *bhiv.SinkError's Attempts; one for another error) and the sink took
// other events since the event's previous call. During a real outage
// nothing is taken, so no hold counts after the first; an event that merely
// found the breaker open made no attempt of its own.
type holding struct {
	s        *sinkState
	since    time.Time // when the sink was first unavailable for the event; zero while never
	counted  bool      // counted in s.held
	failed   int       // failed holds
	attempts int       // attempts the sink reported over the outage answers
	last     error     // the latest outage answer; nil while the sink was never called
	mark     uint64    // s.taken at the end of the previous call (or the start)
}

// begin starts the hold at now, unless it has started.
func (h *holding) begin(now time.Time) {
	if h.since.IsZero() {
		h.since = now
	}
	if !h.counted {
		h.counted = true
		h.s.held.Add(1)
	}
}

// end ends the hold, if any.
func (h *holding) end() {
	if h.counted {
		h.counted = false
		h.s.held.Add(-1)
	}
}

// outage records the outage answer err and returns the failed holds.
func (h *holding) outage(err error) int {
	attempts := 1
	var se *bhiv.SinkError
	if errors.As(err, &se) {
		attempts = se.Attempts
	}
	h.attempts += attempts
	h.last = err
	taken := h.s.taken.Load()
	if attempts > 0 && taken > h.mark {
		h.failed++
	}
	h.mark = taken
	return h.failed
}

func (h *holding) overLimit(limit time.Duration) string {
	return fmt.Sprintf("held %s while the sink was unavailable, past the hold limit of %s",
		time.Since(h.since).Round(time.Millisecond), limit)
}

func (h *holding) poisoned() string {
	return fmt.Sprintf("its own attempts failed in %d holds while the sink took other events (held %s)",
		h.failed, time.Since(h.since).Round(time.Millisecond))
}

// giveUpHold ends a held delivery with a retryable_exhausted error saying
// why and carrying the latest outage answer.
func (c *Consumer) giveUpHold(s *sinkState, ev *bhiv.Event, h *holding, start time.Time, why string) outcome {
	se := &bhiv.SinkError{Sink: s.name, Class: bhiv.ClassRetryableExhausted, Attempts: max(h.attempts, 1)}
	if h.last == nil {
		se.Err = fmt.Errorf("%s; the sink was unavailable throughout", why)
	} else {
		var last *bhiv.SinkError
		if errors.As(h.last, &last) {
			se.Status, se.Body = last.Status, last.Body
		}
		se.Err = fmt.Errorf("%s; last answer: %s", why, h.last.Error())
	}
	c.log.Warn("giving up a held event", "sink", s.name, "event_id", ev.ID, "reason", why)
	c.m.duration.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
	c.m.deliveries.WithLabelValues(s.name, OutcomeRetryableExhausted).Inc()
	return outcome{state: stFailed, err: se}
}

// holdResult is how a hold ended.
type holdResult int

const (
	holdRetry   holdResult = iota // try the sink again
	holdStopped                   // shutdown: leave the event unfinished
	holdExpired                   // the hold limit passed while the sink was unavailable
)

// hold waits at least minWait and then until the sink is available, or at
// most retryHold (so that a breaker that moves to half-open only when asked
// is probed). It ends early at shutdown, and at deadline while the sink is
// unavailable.
func (c *Consumer) hold(ctx context.Context, s *sinkState, minWait time.Duration, deadline time.Time) holdResult {
	start := time.Now()
	earliest, latest := start.Add(minWait), start.Add(max(c.cfg.retryHold, minWait))
	tick := time.NewTicker(max(min(c.cfg.availEvery/2, minWait), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return holdStopped
		case <-c.abortHolds:
			return holdStopped
		case now := <-tick.C:
			avail := s.available()
			switch {
			case !now.Before(earliest) && avail:
				return holdRetry
			case !now.Before(deadline):
				return holdExpired
			case !now.Before(latest):
				return holdRetry
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
