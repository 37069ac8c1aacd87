package consumer

import (
	"errors"
	"fmt"
	"time"

	"github.com/hackaverse/bhiv"
)

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
	passed   bool      // sent to the back of the queue once since its latest outage answer (sinkState.start)
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
	h.passed = false
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
