package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go/jetstream"
)

// every calls fn every period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func(now time.Time)) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			fn(now)
		}
	}
}

// heartbeats sends InProgress for every message held, every AckWait/3.
func (c *Consumer) heartbeats(ctx context.Context) {
	every(ctx, c.cfg.AckWait/3, func(time.Time) {
		c.mu.Lock()
		held := make([]*inflight, 0, len(c.owned))
		for t := range c.owned {
			held = append(held, t)
		}
		c.mu.Unlock()
		for _, t := range held {
			if err := t.msg.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				c.log.Debug("in-progress heartbeat", tint.Err(err))
			}
		}
	})
}

// watchAvailability pauses intake while any sink is down and resumes it when
// every sink is back.
func (c *Consumer) watchAvailability(ctx context.Context) {
	every(ctx, c.cfg.availEvery, func(time.Time) { c.checkAvailability() })
}

// checkAvailability pauses or resumes intake as the sinks' availability
// says.
func (c *Consumer) checkAvailability() {
	var down []string
	for _, s := range c.sinks {
		if s.isDown() {
			down = append(down, s.name)
		}
	}
	paused := len(down) > 0
	if c.paused.Load() == paused {
		return
	}
	c.paused.Store(paused)
	if paused {
		c.m.intakePaused.Set(1)
		c.log.Warn("intake paused: sink unavailable; holding events in JetStream", "sinks", strings.Join(down, ","), "in_flight", c.inFlight())
	} else {
		c.m.intakePaused.Set(0)
		c.log.Warn("intake resumed: every sink available", "in_flight", c.inFlight())
	}
	signal(c.availChanged)
}

// pollInfo reads the durable's info for the pending gauges, notices a
// durable deleted while no pull was waiting, and restarts a Consume that
// has stalled: idle, with no pull request waiting on the server (seen after
// a server restart, where the client kept waiting for a pull the server no
// longer had until its 30s heartbeat check).
func (c *Consumer) pollInfo(ctx context.Context) {
	var st stallWatch
	every(ctx, c.cfg.infoEvery, func(time.Time) {
		c.mu.Lock()
		cons, stream := c.cons, c.stream
		c.mu.Unlock()
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		switch {
		case err == nil:
			c.pollStream(ctx, stream, info)
			c.mu.Lock()
			c.ackFloor = max(c.ackFloor, info.AckFloor.Stream)
			c.mu.Unlock()
			c.m.pending.Set(float64(info.NumPending))
			c.m.ackPending.Set(float64(info.NumAckPending))
			if st.stalled(c, info) {
				c.log.Warn("consume stalled: no pull request waiting on the server; restarting it",
					"durable", c.cfg.Durable, "pending", info.NumPending, "ack_pending", info.NumAckPending)
				signal(c.reset)
			}
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			c.log.Warn("durable consumer not found; recreating it", "durable", c.cfg.Durable)
			signal(c.reset)
		case ctx.Err() == nil:
			c.log.Debug("consumer info", tint.Err(err))
		}
	})
}

// stallWatch tells a stalled Consume: two polls in a row with no pull
// request waiting on the server, nothing handed over since, intake running
// and nothing held.
type stallWatch struct {
	idlePolls   int
	lastHandled uint64
}

func (w *stallWatch) stalled(c *Consumer, info *jetstream.ConsumerInfo) bool {
	handled := c.handled.Load()
	if info.NumWaiting == 0 && handled == w.lastHandled && c.consuming.Load() && !c.paused.Load() && c.inFlight() == 0 {
		w.idlePolls++
	} else {
		w.idlePolls = 0
	}
	w.lastHandled = handled
	if w.idlePolls < 2 {
		return false
	}
	w.idlePolls = 0
	return true
}

// checkRetention warns when the stream may delete events the consumer
// still holds: JetStream deletes an event older than the stream's MaxAge,
// acked or not.
func (c *Consumer) checkRetention() {
	c.mu.Lock()
	stream := c.stream
	c.mu.Unlock()
	sc := stream.CachedInfo().Config
	c.m.streamMaxAge.Set(sc.MaxAge.Seconds())
	c.m.streamMaxBytes.Set(float64(sc.MaxBytes))
	if sc.MaxAge > 0 && sc.MaxAge < c.cfg.MaxHold {
		c.log.Warn("the stream's max age is shorter than the hold limit: JetStream deletes an event older than max age, acked or not, so an event held through a long sink outage can be lost without a failure record; raise the stream's max age (BHIV_STREAM_MAX_AGE) or lower BHIV_MAX_HOLD",
			"stream", sc.Name, "stream_max_age", sc.MaxAge, "max_hold", c.cfg.MaxHold)
	}
}

// pollStream reads the stream's limits and size and the age of the oldest
// event the durable has not acked, for the retention gauges.
func (c *Consumer) pollStream(ctx context.Context, stream jetstream.Stream, ci *jetstream.ConsumerInfo) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	si, err := stream.Info(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("stream info", tint.Err(err))
		}
		return
	}
	c.m.streamMaxAge.Set(si.Config.MaxAge.Seconds())
	c.m.streamMaxBytes.Set(float64(si.Config.MaxBytes))
	c.m.streamBytes.Set(float64(si.State.Bytes))
	age, err := c.oldestUnacked(ctx, stream, si, ci)
	if err != nil {
		c.log.Debug("oldest unacked event", tint.Err(err))
		return
	}
	c.m.oldestUnacked.Set(age.Seconds())
}

// oldestUnacked returns the age of the oldest event in the stream that the
// durable has not acked: the first one past its ack floor.
func (c *Consumer) oldestUnacked(ctx context.Context, stream jetstream.Stream, si *jetstream.StreamInfo, ci *jetstream.ConsumerInfo) (time.Duration, error) {
	if ci.NumPending == 0 && ci.NumAckPending == 0 {
		return 0, nil
	}
	seq := max(ci.AckFloor.Stream+1, si.State.FirstSeq)
	msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(c.consumerCfg.FilterSubject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return max(time.Since(msg.Time), 0), nil
}

// summary logs a line every SummaryInterval.
func (c *Consumer) summary(ctx context.Context) {
	last := time.Now()
	var lastRecv, lastAck, lastFail uint64
	every(ctx, c.cfg.SummaryInterval, func(now time.Time) {
		recv, ack, fail := c.m.nReceived.Load(), c.m.nAcked.Load(), c.m.nFailures.Load()
		secs := now.Sub(last).Seconds()
		c.log.Info("consumer summary",
			"events_per_s", fmt.Sprintf("%.1f", float64(recv-lastRecv)/secs),
			"received", recv-lastRecv, "acked", ack-lastAck, "failure_records", fail-lastFail,
			"in_flight", c.inFlight(), "intake_paused", c.paused.Load())
		last, lastRecv, lastAck, lastFail = now, recv, ack, fail
	})
}
