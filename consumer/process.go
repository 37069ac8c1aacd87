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
	stPending    state = iota // not settled yet
	stDone                    // taken, now or before (remembered)
	stFailed                  // finally failed: a failure record is due
	stUnfinished              // shutdown came first: the event goes back to JetStream
)

type outcome struct {
	state state
	err   error
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

// finish records how sink number i ended with t; the last sink to finish
// settles the message.
func (c *Consumer) finish(t *inflight, i int, o outcome) {
	t.mu.Lock()
	t.outs[i] = o
	t.left--
	last := t.left == 0
	t.mu.Unlock()
	if last {
		c.settle(t)
	}
}

// settle decides the fate of a message every sink has finished with: Nak
// when one was cut short by shutdown; otherwise the failure records, then
// the ack (Nak with a delay when the failure log cannot be written).
func (c *Consumer) settle(t *inflight) {
	var recs []bhiv.FailureRecord
	var failed []*sinkState
	for i, o := range t.outs {
		switch o.state {
		case stUnfinished:
			c.nak(t, 0)
			return
		case stFailed:
			recs = append(recs, c.sinkRecord(c.sinks[i].name, &t.ev, t.m, o.err))
			failed = append(failed, c.sinks[i])
		}
	}
	if len(recs) > 0 {
		if err := c.appendRecords(c.workCtx, recs...); err != nil {
			c.log.Error("cannot write the failure log; the event stays in JetStream", "event_id", t.ev.ID,
				"stream_seq", t.m.Sequence, "deliveries", t.delivered, "retry_in", c.cfg.NakDelay, tint.Err(err))
			c.nak(t, c.cfg.NakDelay)
			return
		}
		for _, s := range failed {
			c.mem.add(t.ev.ID, t.fp, s.bit)
		}
	}
	c.ack(t)
}

// dispatch starts the deliveries of one sink: the events in its queue, in
// order, as many at once as the sink's pace allows. While the sink is in an
// outage it holds its queue and sends one event at a time as a probe: when
// the sink says it is available again, or at the latest every retryHold (a
// breaker that moves to half-open only when asked needs a call). It returns
// at shutdown once its queue is empty and its deliveries have returned.
func (c *Consumer) dispatch(s *sinkState) {
	// Each of these wakes the dispatcher once, when it closes; a returning
	// delivery wakes it through s.wake.
	intakeDone, cut := c.intakeDone, c.workCtx.Done()
	for {
		t, wait, done := c.next(s)
		if done {
			return
		}
		if t != nil {
			c.calls.Go(func() { c.deliver(s, t) })
			continue
		}
		var timer *time.Timer
		var expired <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			expired = timer.C
		}
		select {
		case <-s.wake:
		case <-expired:
		case <-intakeDone:
			intakeDone = nil
		case <-cut:
			cut = nil
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// next returns the next event to deliver to s, or how long to wait before
// asking again (0: until woken), or done when the dispatcher must end.
func (c *Consumer) next(s *sinkState) (t *inflight, wait time.Duration, done bool) {
	stopping := c.isStopping()
	cut := c.workCtx.Err() != nil
	var drop []*inflight
	defer func() {
		// Outside s.mu: finishing may settle the message.
		for _, d := range drop {
			c.finish(d, s.bit, outcome{state: stUnfinished})
		}
	}()
	var expired []heldEvent
	defer func() {
		for _, e := range expired {
			c.finish(e.t, s.bit, c.giveUpHold(s, e.t, e.h, e.h.overLimit(c.cfg.MaxHold)))
		}
	}()
	down := s.down.Load() || !s.available()
	s.mu.Lock()
	defer s.mu.Unlock()
	if stopping {
		// Shutdown: nothing starts until intake is drained (a Nak while the
		// pull drains would bring the message straight back); then what no
		// sink has started goes back to JetStream at once, and what a sink
		// has started may finish here (on every sink) until the shutdown
		// timeout, unless this sink is in an outage.
		select {
		case <-c.intakeDone:
		default:
			return nil, 0, false
		}
		drop = s.queue.removeIf(func(q *inflight) bool {
			return cut || down || q.startedCount() == 0
		})
		for _, d := range drop {
			delete(s.holds, d)
		}
		if s.queue.len() == 0 {
			return nil, 0, s.running == 0
		}
	}
	if down {
		expired = c.sweepHolds(s)
	}
	if s.queue.len() == 0 {
		return nil, 0, false
	}
	limit := s.limit()
	if down {
		// Outage: one probe at a time, when the sink says it is back or
		// the hold is over.
		if s.running > 0 {
			return nil, 0, false
		}
		since := time.Since(s.lastTry)
		switch {
		case since >= c.cfg.retryHold:
		case since >= s.holdWait && s.available():
		default:
			return nil, min(c.cfg.availEvery/2, max(s.holdWait-since, time.Millisecond)), false
		}
		limit = 1
	}
	if s.running >= limit {
		return nil, 0, false
	}
	t = s.queue.pop()
	s.running++
	s.lastTry = time.Now()
	t.mu.Lock()
	t.started++
	t.mu.Unlock()
	return t, 0, false
}

// deliver makes one delivery of t to s and acts on its result: taken,
// finally failed, or held (the sink is unavailable: t goes back to the
// front of the sink's queue, to be retried when the sink is back).
func (c *Consumer) deliver(s *sinkState, t *inflight) {
	start := time.Now()
	mark := s.taken.Load()
	cp := t.ev // sinks get their own copy of the envelope
	err, panicked := c.call(c.workCtx, s, &cp)
	o, held := c.judge(s, t, err, panicked, start, mark)
	s.mu.Lock()
	s.running--
	if held {
		if !c.isStopping() {
			// To the back: the next probe is another event, so that one
			// event the sink fails (a poison event that trips its breaker)
			// does not block the others behind it.
			s.queue.push(t)
		} else {
			o, held = outcome{state: stUnfinished}, false
		}
	}
	if !held {
		delete(s.holds, t)
	}
	s.mu.Unlock()
	signal(s.wake)
	if !held {
		c.finish(t, s.bit, o)
	}
}

// judge classifies the result of one delivery; held is true when the sink
// is unavailable and the event must wait for it, within the hold limits.
// mark is the count of events the sink had taken when the call began.
func (c *Consumer) judge(s *sinkState, t *inflight, err error, panicked bool, start time.Time, mark uint64) (o outcome, held bool) {
	switch {
	case err == nil:
		s.up()
		s.taken.Add(1)
		c.mem.add(t.ev.ID, t.fp, s.bit)
		c.m.duration.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
		c.m.deliveries.WithLabelValues(s.name, OutcomeSuccess).Inc()
		return outcome{state: stDone}, false
	case !panicked && c.workCtx.Err() != nil:
		return outcome{state: stUnfinished}, false
	case !panicked && (errors.Is(err, bhiv.ErrUnavailable) || !s.available()):
		now := time.Now()
		s.mu.Lock()
		if !s.down.Swap(true) {
			s.holdWait = 50 * time.Millisecond
			c.log.Debug("sink unavailable; holding its events", "sink", s.name, "event_id", t.ev.ID, tint.Err(err))
		} else {
			s.holdWait = min(2*s.holdWait, time.Second)
		}
		h := s.hold(t, now, mark)
		failed := h.outage(err, s.taken.Load())
		s.lastOutage = err
		s.mu.Unlock()
		switch {
		case failed >= c.cfg.MaxFailedHolds:
			return c.giveUpHold(s, t, h, h.poisoned()), false
		case !now.Before(h.since.Add(c.cfg.MaxHold)):
			return c.giveUpHold(s, t, h, h.overLimit(c.cfg.MaxHold)), false
		}
		return outcome{}, true
	}
	s.up()
	c.m.duration.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
	outcomeLabel := OutcomeRetryableExhausted
	if class, _, _ := classify(err); class == bhiv.ClassPermanent || class == bhiv.ClassInvalidInput {
		outcomeLabel = OutcomePermanent
	}
	c.m.deliveries.WithLabelValues(s.name, outcomeLabel).Inc()
	return outcome{state: stFailed, err: err}, false
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

func (t *inflight) startedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.started
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

// holdState is the hold of one event for one sink: from the first time it
// was held for the sink (an outage answer to it, or waiting in the sink's
// queue while the sink was in an outage) until it leaves the sink's queue.
//
// Two limits end it with a retryable_exhausted record, so that no event is
// held for ever (see the package doc): MaxHold bounds its time;
// MaxFailedHolds catches a poison event, one the sink fails while it takes
// others. A hold counts as failed when, in the call that ended in the
// outage answer, the sink made attempts of the event's own (the
// *bhiv.SinkError's Attempts; one for another error) and the sink took
// other events since the event's previous call.
type holdState struct {
	since    time.Time // when the event was first held for the sink
	failed   int       // failed holds
	attempts int       // attempts the sink reported over the outage answers
	last     error     // the latest outage answer; nil while the sink was never called
	mark     uint64    // sinkState.taken at the end of the previous call (or the start of the first)
}

// hold returns the hold of t, begun at now when it had none. s.mu is held.
func (s *sinkState) hold(t *inflight, now time.Time, mark uint64) *holdState {
	h := s.holds[t]
	if h == nil {
		if s.holds == nil {
			s.holds = make(map[*inflight]*holdState)
		}
		h = &holdState{since: now, mark: mark}
		s.holds[t] = h
	}
	return h
}

// outage records the outage answer err, the sink having taken taken events
// by now, and returns the failed holds.
func (h *holdState) outage(err error, taken uint64) int {
	attempts := 1
	var se *bhiv.SinkError
	if errors.As(err, &se) {
		attempts = se.Attempts
	}
	h.attempts += attempts
	h.last = err
	if attempts > 0 && taken > h.mark {
		h.failed++
	}
	h.mark = taken
	return h.failed
}

func (h *holdState) overLimit(limit time.Duration) string {
	return fmt.Sprintf("held %s while the sink was unavailable, past the hold limit of %s",
		time.Since(h.since).Round(time.Millisecond), limit)
}

func (h *holdState) poisoned() string {
	return fmt.Sprintf("its own attempts failed in %d holds while the sink took other events (held %s)",
		h.failed, time.Since(h.since).Round(time.Millisecond))
}

// sweepEvery is how often the queue of a sink in an outage is looked
// through for events held past MaxHold.
const sweepEvery = 200 * time.Millisecond

// heldEvent is an event with its hold.
type heldEvent struct {
	t *inflight
	h *holdState
}

// sweepHolds starts the hold of every event waiting in s's queue during an
// outage, and removes and returns those held past MaxHold, to be given up.
// s.mu is held.
func (c *Consumer) sweepHolds(s *sinkState) []heldEvent {
	now := time.Now()
	if now.Sub(s.lastSweep) < sweepEvery {
		return nil
	}
	s.lastSweep = now
	deadline := now.Add(-c.cfg.MaxHold)
	if s.queue.len() == 0 {
		return nil
	}
	taken := s.taken.Load()
	var expired []heldEvent
	for _, t := range s.queue.removeIf(func(t *inflight) bool {
		return !s.hold(t, now, taken).since.After(deadline)
	}) {
		expired = append(expired, heldEvent{t, s.holds[t]})
		delete(s.holds, t)
	}
	return expired
}

// giveUpHold ends a held event's delivery to s with a retryable_exhausted
// error saying why and carrying the latest outage answer.
func (c *Consumer) giveUpHold(s *sinkState, t *inflight, h *holdState, why string) outcome {
	se := &bhiv.SinkError{Sink: s.name, Class: bhiv.ClassRetryableExhausted, Attempts: max(h.attempts, 1)}
	s.mu.Lock()
	lastOutage := s.lastOutage
	s.mu.Unlock()
	switch {
	case h.last == nil && lastOutage == nil:
		se.Err = fmt.Errorf("%s; the sink was unavailable throughout", why)
	case h.last == nil:
		se.Err = fmt.Errorf("%s; the sink was unavailable throughout, its last answer to another event: %s", why, lastOutage.Error())
	default:
		var last *bhiv.SinkError
		if errors.As(h.last, &last) {
			se.Status, se.Body = last.Status, last.Body
		}
		se.Err = fmt.Errorf("%s; last answer: %s", why, h.last.Error())
	}
	c.log.Warn("giving up a held event", "sink", s.name, "event_id", t.ev.ID, "reason", why)
	c.m.duration.WithLabelValues(s.name).Observe(time.Since(h.since).Seconds())
	c.m.deliveries.WithLabelValues(s.name, OutcomeRetryableExhausted).Inc()
	return outcome{state: stFailed, err: se}
}
