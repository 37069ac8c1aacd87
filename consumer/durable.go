package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// consumeRun is one jetstream Consume call.
type consumeRun struct {
	cc       jetstream.ConsumeContext
	draining chan struct{} // closed when the run is being stopped or has ended
	once     sync.Once
}

// release lets a handler blocked in this run return.
func (r *consumeRun) release() { r.once.Do(func() { close(r.draining) }) }

// setup ensures the stream (when managed) and the durable. It retries what
// retrying may fix for up to setupPatience (30s), then returns the last
// error, so that a server without JetStream, or without permission for it,
// is a clear error at start and not a hang.
func (c *Consumer) setup(ctx context.Context) error {
	wait := 200 * time.Millisecond
	deadline := time.Now().Add(c.cfg.setupPatience)
	for {
		err := c.ensure(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, nats.ErrNoResponders) {
			err = fmt.Errorf("%w (is JetStream enabled on the server, and allowed for this account?)", err)
		}
		if permanentSetupError(err) || time.Now().After(deadline) {
			return fmt.Errorf("consumer setup: %w", err)
		}
		c.log.Warn("consumer setup failed; retrying", "in", wait, tint.Err(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func permanentSetupError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrConnectionClosed) ||
		(errors.As(err, &apiErr) && apiErr.Code == 400)
}

// ensure creates or updates the stream (when managed) and the durable. An
// existing durable keeps its deliver policy (it cannot be changed). A
// missing durable that this process was consuming is recreated from just
// after the last ack floor it saw, so that the stream is not replayed from
// the start; otherwise it is created to deliver everything.
func (c *Consumer) ensure(ctx context.Context) error {
	// Short: right after a server restart JetStream may take requests it
	// does not answer yet; a quick retry does better than a long wait.
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	var stream jetstream.Stream
	var err error
	if c.cfg.ManageStream {
		stream, err = jsstream.Ensure(ctx, c.js, c.cfg.Stream)
	} else {
		stream, err = c.js.Stream(ctx, c.cfg.Stream.Name)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", c.cfg.Stream.Name, err)
	}
	created := stream.CachedInfo().Created
	for range 3 {
		existing, err := c.js.Consumer(ctx, c.cfg.Stream.Name, c.cfg.Durable)
		switch {
		case err == nil:
			cfg := c.consumerCfg
			old := existing.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = old.DeliverPolicy, old.OptStartSeq, old.OptStartTime
			if cfg.Replicas == 0 {
				cfg.Replicas = old.Replicas
			}
			cons, err := c.js.UpdateConsumer(ctx, c.cfg.Stream.Name, cfg)
			if err != nil {
				return fmt.Errorf("update durable %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream.Name, err)
			}
			c.setConsumer(cons, stream, cons.CachedInfo().AckFloor.Stream)
			return nil
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			cfg := c.consumerCfg
			c.mu.Lock()
			floor, sameStream := c.ackFloor, c.streamCreated.Equal(created)
			c.mu.Unlock()
			if floor > 0 && sameStream {
				cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, floor+1
			}
			cons, err := c.js.CreateConsumer(ctx, c.cfg.Stream.Name, cfg)
			if errors.Is(err, jetstream.ErrConsumerExists) {
				continue // another process just created it
			}
			if err != nil {
				return fmt.Errorf("create durable %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream.Name, err)
			}
			c.log.Info("durable consumer created", "durable", c.cfg.Durable, "stream", c.cfg.Stream.Name,
				"from_stream_seq", max(cfg.OptStartSeq, 1))
			if !sameStream {
				floor = 0
			}
			c.setConsumer(cons, stream, floor)
			return nil
		default:
			return fmt.Errorf("durable %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream.Name, err)
		}
	}
	return fmt.Errorf("durable %s on stream %s: created and deleted concurrently; retrying", c.cfg.Durable, c.cfg.Stream.Name)
}

func (c *Consumer) setConsumer(cons jetstream.Consumer, stream jetstream.Stream, floor uint64) {
	streamCreated := stream.CachedInfo().Created
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cons, c.stream = cons, stream
	if !c.streamCreated.Equal(streamCreated) || floor > c.ackFloor {
		c.streamCreated, c.ackFloor = streamCreated, floor
	}
}

// control runs Consume while intake is not paused, restarts it when it ends
// or the durable must be recreated, and returns the current run when ctx
// ends.
func (c *Consumer) control(ctx context.Context) *consumeRun {
	var (
		cur        *consumeRun
		needEnsure bool
		retry      <-chan time.Time
		wait       = 200 * time.Millisecond
	)
	for {
		if cur == nil && retry == nil && !c.paused.Load() && ctx.Err() == nil {
			var err error
			if needEnsure {
				if err = c.ensure(ctx); err == nil {
					needEnsure = false
					c.log.Info("durable consumer ensured; consuming again", "durable", c.cfg.Durable)
				}
			}
			if err == nil {
				cur, err = c.startConsume()
			}
			if err != nil {
				needEnsure = true
				c.log.Warn("cannot consume; retrying", "in", wait, tint.Err(err))
				retry = time.After(wait)
				wait = min(2*wait, 5*time.Second)
			} else {
				wait = 200 * time.Millisecond
			}
		}
		var closed <-chan struct{}
		if cur != nil {
			closed = cur.cc.Closed()
		}
		c.consuming.Store(cur != nil)
		select {
		case <-ctx.Done():
			return cur
		case <-c.availChanged:
			if c.paused.Load() && cur != nil {
				c.stopConsume(cur)
				cur = nil
			}
		case <-c.reset:
			c.stopConsume(cur)
			cur = nil
			needEnsure = true
			if retry == nil {
				retry = time.After(250 * time.Millisecond) // let JetStream settle
			}
		case <-closed:
			c.log.Warn("consuming stopped; recreating the durable consumer", "durable", c.cfg.Durable)
			cur.release()
			cur = nil
			needEnsure = true
		case <-retry:
			retry = nil
		}
	}
}

func (c *Consumer) startConsume() (*consumeRun, error) {
	c.mu.Lock()
	cons := c.cons
	c.mu.Unlock()
	run := &consumeRun{draining: make(chan struct{})}
	cc, err := cons.Consume(func(msg jetstream.Msg) { c.handle(run, msg) },
		jetstream.PullMaxMessages(min(maxPull, c.cfg.MaxInFlight)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { c.consumeError(err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("consume durable %s: %w", c.cfg.Durable, err)
	}
	run.cc = cc
	return run, nil
}

// consumeError handles an error Consume reports.
func (c *Consumer) consumeError(err error) {
	switch {
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, nats.ErrNoResponders):
		c.log.Warn("consume error; re-ensuring the durable consumer", "durable", c.cfg.Durable, tint.Err(err))
		signal(c.reset)
	case errors.Is(err, nats.ErrConnectionClosed):
		c.log.Warn("consume error", tint.Err(err))
	default:
		c.log.Debug("consume error", tint.Err(err))
	}
}

// stopConsume drains run: no more pulls, and what the client had buffered is
// handed to handle, which queues it (pause) or Naks it (shutdown).
func (c *Consumer) stopConsume(run *consumeRun) {
	if run == nil {
		return
	}
	run.release()
	run.cc.Drain()
	select {
	case <-run.cc.Closed():
		return
	case <-time.After(5 * time.Second):
	}
	run.cc.Stop()
	select {
	case <-run.cc.Closed():
	case <-time.After(time.Second):
		c.log.Warn("consume did not close after drain and stop")
	}
}
