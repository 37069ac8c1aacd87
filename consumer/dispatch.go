package consumer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/lmittmann/tint"
)

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
	var drop []*inflight
	var expired []heldEvent
	defer func() {
		// Outside s.mu: finishing may settle the message.
		for _, d := range drop {
			c.finish(d, s.bit, outcome{state: stUnfinished})
		}
		for _, e := range expired {
			c.finish(e.t, s.bit, c.giveUpHold(s, e.t, e.h, e.h.overLimit(c.cfg.MaxHold)))
		}
	}()
	down := s.down.Load() || !s.available()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.isStopping() {
		var drained bool
		if drop, drained = c.dropAtShutdown(s, down); !drained {
			return nil, 0, false
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
	if wait, ok := c.mayStart(s, down); !ok {
		return nil, wait, false
	}
	return s.start(), 0, false
}

// dropAtShutdown removes from s's queue, at shutdown, the events to give
// back to JetStream; drained is false while intake is still draining (a
// Nak then would bring the message straight back), and nothing may start
// meanwhile. Once drained, what no sink has started goes back at once, and
// what a sink has started may finish here (on every sink) until the
// shutdown timeout, unless this sink is in an outage. s.mu is held.
func (c *Consumer) dropAtShutdown(s *sinkState, down bool) (drop []*inflight, drained bool) {
	select {
	case <-c.intakeDone:
	default:
		return nil, false
	}
	cut := c.workCtx.Err() != nil
	drop = s.queue.removeIf(func(q *inflight) bool {
		return cut || down || q.startedCount() == 0
	})
	for _, d := range drop {
		delete(s.holds, d)
	}
	return drop, true
}

// mayStart reports whether s may start another delivery now: while its
// deliveries are under its limit; in an outage (down), one probe at a time,
// when the sink says it is back or at the latest every retryHold, and, when
// every event queued is a suspect (tried by the sink and answered with an
// outage), only after probeGrace has given intake the time to bring a fresh
// event to probe with. When it may not, wait is how long until it may (0:
// until woken). s.mu is held.
func (c *Consumer) mayStart(s *sinkState, down bool) (wait time.Duration, ok bool) {
	if !down {
		return 0, s.running < s.limit()
	}
	if s.running > 0 {
		return 0, false
	}
	since := time.Since(s.lastTry)
	if since < c.cfg.retryHold && (since < s.holdWait || !s.available()) {
		return min(c.cfg.availEvery/2, max(s.holdWait-since, time.Millisecond)), false
	}
	if s.avail != nil && s.available() && !s.queue.any(func(t *inflight) bool { return !s.suspect(t) }) {
		// Every event queued was tried by the sink itself and answered
		// with an outage: one of them may be a poison event, alone in the
		// queue when it tripped the breaker, that would trip it again at
		// once, every time, before intake (resuming now that the sink is
		// available) brings in anything else. Give intake probeGrace to
		// bring a fresh event to probe with first.
		now := time.Now()
		if s.availSince.IsZero() {
			s.availSince = now
		}
		if wait := c.cfg.probeGrace - now.Sub(s.availSince); wait > 0 {
			return min(wait, c.cfg.availEvery/2), false
		}
	}
	return 0, true
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
		s.availSince = time.Time{}
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
