package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/lmittmann/tint"
)

// release forgets t once it is settled.
func (c *Consumer) release(t *inflight) {
	c.mu.Lock()
	_, ok := c.owned[t]
	delete(c.owned, t)
	c.mu.Unlock()
	if ok {
		c.m.inFlight.Dec()
		signal(c.room)
	}
}

func (c *Consumer) ack(t *inflight) {
	defer c.release(t)
	if err := t.msg.Ack(); err != nil {
		c.log.Warn("ack failed; the event will be redelivered", tint.Err(err))
		return
	}
	c.m.acked.Inc()
	c.m.nAcked.Add(1)
}

// nak gives t back to JetStream, after delay when it is positive.
func (c *Consumer) nak(t *inflight, delay time.Duration) {
	defer c.release(t)
	var err error
	if delay > 0 {
		err = t.msg.NakWithDelay(delay)
	} else {
		err = t.msg.Nak()
	}
	if err != nil {
		c.log.Warn("nak failed; the event will be redelivered after the ack wait", tint.Err(err))
		return
	}
	c.m.naked.Inc()
	c.m.nNaked.Add(1)
}

func (c *Consumer) term(t *inflight, reason string) {
	defer c.release(t)
	if err := t.msg.TermWithReason(reason); err != nil {
		c.log.Warn("term failed; the message will be redelivered", tint.Err(err))
		return
	}
	c.m.terminated.Inc()
	c.m.nTerminated.Add(1)
}

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
	if id := bhiv.HeaderValue(m.Header, bhiv.MsgIDHeader); bhiv.ValidID(id) {
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
