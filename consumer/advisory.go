package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
)

// maxDeliveriesAdvisory is the part of the JetStream MAX_DELIVERIES advisory
// the consumer reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// AdvisorySubject returns the subject of the MAX_DELIVERIES advisories of
// the durable on stream.
func AdvisorySubject(stream, durable string) string {
	return fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", stream, durable)
}

// subscribeAdvisories listens, in a queue group shared by every process on
// the durable, to its MAX_DELIVERIES advisories and records each message
// named there in the failure log.
func (c *Consumer) subscribeAdvisories(ctx context.Context, wg *sync.WaitGroup) (*nats.Subscription, error) {
	subject := AdvisorySubject(c.cfg.Stream.Name, c.cfg.Durable)
	sub, err := c.js.Conn().QueueSubscribe(subject, "bhiv-max-deliveries-"+c.cfg.Durable, func(msg *nats.Msg) {
		select {
		case c.advisories <- msg.Data:
		case <-ctx.Done():
			c.log.Error("max deliveries advisory not handled at shutdown", "advisory", string(msg.Data))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case data := <-c.advisories:
				c.handleAdvisory(ctx, data)
			}
		}
	})
	return sub, nil
}

// handleAdvisory writes the message an advisory names to the failure log,
// retrying the failure log until it takes the records or ctx ends.
func (c *Consumer) handleAdvisory(ctx context.Context, data []byte) {
	var a maxDeliveriesAdvisory
	if err := json.Unmarshal(data, &a); err != nil || a.StreamSeq == 0 {
		c.log.Error("unreadable max deliveries advisory", "advisory", string(data), tint.Err(err))
		return
	}
	recs := c.maxDeliveriesRecords(ctx, a)
	if len(recs) == 0 {
		return
	}
	wait := time.Second
	for {
		err := c.appendRecords(ctx, recs...)
		if err == nil {
			return
		}
		c.log.Error("cannot write the failure log for an event that reached max deliveries; retrying",
			"stream_seq", a.StreamSeq, "deliveries", a.Deliveries, "retry_in", wait, tint.Err(err))
		select {
		case <-ctx.Done():
			c.log.Error("event that reached max deliveries NOT recorded in the failure log at shutdown; it is still in the stream",
				"stream", c.cfg.Stream.Name, "stream_seq", a.StreamSeq)
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// maxDeliveriesRecords fetches the message by stream sequence and returns
// its failure records: one per sink this process does not know to have
// taken it, or an invalid-input record, or a record without the message when
// it cannot be fetched.
func (c *Consumer) maxDeliveriesRecords(ctx context.Context, a maxDeliveriesAdvisory) []bhiv.FailureRecord {
	reason := maxDeliveriesReason(int(a.Deliveries))
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var raw *rawMsg
	stream, err := c.js.Stream(gctx, c.cfg.Stream.Name)
	if err == nil {
		var m *rawMsg
		rm, gerr := stream.GetMsg(gctx, a.StreamSeq)
		if gerr == nil {
			m = &rawMsg{subject: rm.Subject, header: rm.Header, data: rm.Data, seq: rm.Sequence, time: rm.Time}
		}
		raw, err = m, gerr
	}
	if err != nil {
		return []bhiv.FailureRecord{{
			Time:       time.Now().UTC(),
			Sink:       SinkConsumer,
			StreamSeq:  a.StreamSeq,
			Attempts:   int(a.Deliveries),
			Error:      fmt.Sprintf("%s; the message could not be fetched from stream %s: %v", reason, c.cfg.Stream.Name, err),
			ErrorClass: bhiv.ClassRetryableExhausted,
		}}
	}
	m := bhiv.Message{Subject: raw.subject, Header: raw.header, Data: raw.data,
		Stream: c.cfg.Stream.Name, Sequence: raw.seq, Timestamp: raw.time}
	return c.giveUpRecords(m, int(a.Deliveries))
}

// maxDeliveriesReason is the error of a record, and the reason of the term,
// of a message given up after deliveries deliveries.
func maxDeliveriesReason(deliveries int) string {
	return fmt.Sprintf("max deliveries reached: delivered %d times without an ack", deliveries)
}

// giveUpRecords returns the failure records of a message given up after
// deliveries deliveries without an ack: one per sink this process does not
// know to have taken it, or an invalid-input record with the raw message.
// None when every sink had taken it.
func (c *Consumer) giveUpRecords(m bhiv.Message, deliveries int) []bhiv.FailureRecord {
	reason := maxDeliveriesReason(deliveries)
	ev, derr, panicked := c.decode(m)
	if derr != nil {
		return []bhiv.FailureRecord{c.invalidRecord(m, deliveries, fmt.Errorf("%s: %w", reason, derr), panicked)}
	}
	fp := fingerprint(m)
	var recs []bhiv.FailureRecord
	for _, s := range c.sinks {
		if c.mem.has(ev.ID, fp, s.bit) {
			continue
		}
		rec := c.sinkRecord(s.name, &ev, m, errors.New(reason))
		rec.Attempts = deliveries
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		c.log.Info("event reached max deliveries but every sink had taken it", "event_id", ev.ID, "stream_seq", m.Sequence)
	}
	return recs
}

type rawMsg struct {
	subject string
	header  map[string][]string
	data    []byte
	seq     uint64
	time    time.Time
}
