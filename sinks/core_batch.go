package sinks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/hackaverse/bhiv"
)

// Batching (BatchMax > 1). Concurrent deliveries join the batch being
// filled; it is sent as one POST of a JSON array of envelopes (the
// CloudEvents batched content mode, application/cloudevents-batch+json,
// whatever Mode says: the HTTP binding has no binary batch) when it holds BatchMax
// events or BatchLinger after its first event, whichever comes first. Every
// caller in a batch gets the batch's result: nil, or its own copy of the
// batch's *bhiv.SinkError. A failed batch is retried whole.
//
// The Idempotency-Key of a batch is "batch-" followed by the first 32 hex
// digits of the SHA-256 of its event ids in order, each followed by a
// newline: the same events in the same order give the same key, on every
// retry. A batch that ends up with one event is sent like an unbatched
// event, in the configured Mode, with the event id as its key. Core must
// deduplicate by event id as well, since after a redelivery an event may
// arrive in a batch of other events.

// coreBatch is a batch of events sent in one POST.
type coreBatch struct {
	ids    []string
	events []*bhiv.Event
	bodies [][]byte       // their envelopes
	index  map[string]int // event id → position, to send an event once
	timer  *time.Timer    // the linger timer

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	waiters int // callers still waiting for the result

	done chan struct{} // closed when err is set
	err  error
}

// deliverBatched adds an event, with its envelope body, to the current
// batch and waits for the batch's result.
func (c *Core) deliverBatched(ctx context.Context, ev *bhiv.Event, body []byte) error {
	id := ev.ID
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return fmt.Errorf("core: deliver %s: %w", id, ErrClosed)
	}
	b := c.cur
	if b == nil {
		b = &coreBatch{
			ids:    make([]string, 0, c.cfg.BatchMax),
			events: make([]*bhiv.Event, 0, c.cfg.BatchMax),
			bodies: make([][]byte, 0, c.cfg.BatchMax),
			index:  make(map[string]int, c.cfg.BatchMax),
			done:   make(chan struct{}),
		}
		b.ctx, b.cancel = context.WithCancelCause(c.base)
		c.cur = b
		c.inflight.Add(1)
		b.timer = time.AfterFunc(c.cfg.BatchLinger, func() { c.flushLingered(b) })
	}
	// Two deliveries of the same event in one batch share one entry; two
	// different envelopes with one id both go (Core decides).
	if i, ok := b.index[id]; !ok || !bytes.Equal(b.bodies[i], body) {
		b.index[id] = len(b.ids)
		b.ids = append(b.ids, id)
		b.events = append(b.events, ev)
		b.bodies = append(b.bodies, body)
	}
	b.mu.Lock()
	b.waiters++
	b.mu.Unlock()
	full := len(b.ids) >= c.cfg.BatchMax
	if full {
		c.cur = nil
		b.timer.Stop()
	}
	c.mu.Unlock()
	if full {
		go c.sendBatch(b)
	}

	select {
	case <-b.done:
		if se, ok := b.err.(*bhiv.SinkError); ok {
			cp := *se
			return &cp
		}
		return b.err
	case <-ctx.Done():
		c.leave(b)
		return cancelledErr(ctx, id, 0)
	}
}

// flushLingered sends b when its linger time is over, unless it was sent
// already.
func (c *Core) flushLingered(b *coreBatch) {
	c.mu.Lock()
	if c.cur != b {
		c.mu.Unlock()
		return
	}
	c.cur = nil
	c.mu.Unlock()
	c.sendBatch(b)
}

// leave records that a caller of b stopped waiting; when none is left, the
// batch's delivery is abandoned. A batch still filling is taken out of the
// way first (and ended at once), so that later callers start a new one
// rather than join one that has given up.
func (c *Core) leave(b *coreBatch) {
	c.mu.Lock()
	b.mu.Lock()
	b.waiters--
	last := b.waiters == 0
	b.mu.Unlock()
	filling := last && c.cur == b
	if filling {
		c.cur = nil
	}
	c.mu.Unlock()
	if !last {
		return
	}
	b.cancel(context.Canceled)
	if filling {
		// flushLingered, if its timer has fired, finds b gone and leaves it.
		b.timer.Stop()
		c.sendBatch(b) // ends at once: its context has ended
	}
}

// sendBatch POSTs b and hands its result to its callers.
func (c *Core) sendBatch(b *coreBatch) {
	defer c.inflight.Done()
	defer b.cancel(nil)
	var err error
	if len(b.ids) == 1 {
		var m coreMsg
		if m, err = c.message(b.events[0]); err == nil {
			err = c.post(b.ctx, m)
		} else {
			err = &bhiv.SinkError{Sink: CoreName, Class: bhiv.ClassPermanent, Err: err}
		}
	} else {
		err = c.post(b.ctx, batchMessage(b.ids, b.bodies))
	}
	b.err = err
	close(b.done)
}

// batchKey is the Idempotency-Key of a batch of the events ids.
func batchKey(ids []string) string {
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{'\n'})
	}
	return "batch-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// joinArray returns the JSON array of the encoded values.
func joinArray(bodies [][]byte) []byte {
	n := 2 + len(bodies)
	for _, b := range bodies {
		n += len(b)
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, b := range bodies {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	return append(out, ']')
}
