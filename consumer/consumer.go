package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxPull is the most messages one pull request asks for (the client
// library's default).
const maxPull = 500

// SinkConsumer is the sink name of a failure record the consumer writes for a
// message it could not fetch after the MAX_DELIVERIES advisory.
const SinkConsumer = "consumer"

// Consumer reads events from the durable consumer and fans them out to the
// sinks. Build it with New and run it with Run.
type Consumer struct {
	js          jetstream.JetStream
	cfg         Config
	log         *slog.Logger
	m           *metrics
	sinks       []*sinkState // sorted by name; bit i is sinks[i]
	mem         *memory
	decodeOpts  bhiv.DecodeOptions
	consumerCfg jetstream.ConsumerConfig

	running   atomic.Bool
	paused    atomic.Bool   // intake paused: a sink is unavailable
	consuming atomic.Bool   // a Consume is running
	handled   atomic.Uint64 // messages handed to handle

	mu       sync.Mutex
	cons     jetstream.Consumer     // the current handle on the durable
	stream   jetstream.Stream       // the current handle on the stream
	owned    map[*inflight]struct{} // received, not yet settled: heartbeated
	stopping bool                   // shutdown began
	late     []*inflight            // received after shutdown began: Nak'ed after the drain
	ackFloor uint64                 // last ack floor seen (stream sequence)

	streamCreated time.Time // creation time of the stream ackFloor belongs to

	// workCtx is the context of the deliveries and failure-log writes:
	// cancelled when the shutdown timeout is over. calls counts the
	// goroutines working with it.
	workCtx context.Context
	calls   sync.WaitGroup

	room         chan struct{} // a message was settled (cap 1)
	reset        chan struct{} // the durable must be re-ensured and Consume restarted (cap 1)
	availChanged chan struct{} // intake paused or resumed (cap 1)
	halt         chan struct{} // closed when shutdown begins
	intakeDone   chan struct{} // closed at shutdown once the Consume is drained
	advisories   chan []byte
}

// New returns a consumer of the durable described by cfg on js. It checks
// cfg but does not talk to the server; Run does. The nats.Conn behind js must
// be built with nats.MaxReconnects(-1) so that it reconnects forever.
func New(js jetstream.JetStream, cfg Config) (*Consumer, error) {
	if js == nil {
		return nil, errors.New("consumer: nil JetStream context")
	}
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	c := &Consumer{
		js:           js,
		cfg:          cfg,
		log:          cfg.Logger,
		m:            newMetrics(cfg.Registerer),
		mem:          newMemory(cfg.RememberIDs),
		decodeOpts:   bhiv.DecodeOptions{SubjectPrefix: cfg.Stream.SubjectPrefix, MaxBytes: cfg.MaxEventBytes},
		owned:        make(map[*inflight]struct{}),
		room:         make(chan struct{}, 1),
		reset:        make(chan struct{}, 1),
		availChanged: make(chan struct{}, 1),
		halt:         make(chan struct{}),
		intakeDone:   make(chan struct{}),
		advisories:   make(chan []byte, 256),
	}
	if nc := js.Conn(); nc != nil && nc.Opts.MaxReconnect >= 0 {
		c.log.Warn("the NATS connection stops reconnecting after a few attempts; build it with nats.MaxReconnects(-1) so that the consumer survives server restarts",
			"max_reconnects", nc.Opts.MaxReconnect)
	}
	for i, name := range sortedNames(cfg.Sinks) {
		s := &sinkState{name: name, bit: i, sink: cfg.Sinks[name], fixed: cfg.Concurrency, wake: make(chan struct{}, 1)}
		if a, ok := s.sink.(Availability); ok {
			s.avail = a
		}
		if p, ok := s.sink.(Pacer); ok {
			s.pacer = p
		}
		c.sinks = append(c.sinks, s)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(newSinkCollector(c.sinks)); err != nil {
			c.log.Debug("sink queue metrics not registered (another consumer in this process has them)", tint.Err(err))
		}
	}
	c.consumerCfg = jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "bhiv: fan-out of events to the sinks",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // the consumer gives up itself: see giveUp
		FilterSubject: bhiv.SubjectWildcard(cfg.Stream.SubjectPrefix),
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxAckPending: cfg.MaxAckPending,
	}
	return c, nil
}

// Run consumes until ctx ends, then shuts down: it stops pulling, Naks what
// it has not started, gives the events being worked on ShutdownTimeout to
// finish and be acked, Naks the rest, and returns nil. It returns an error
// only when the stream or the durable cannot be set up for a reason retrying
// will not fix. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called more than once")
	}
	if err := c.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	bgCtx, cancelBg := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBg()
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	var bg sync.WaitGroup
	sub, err := c.subscribeAdvisories(bgCtx, &bg)
	if err != nil {
		return err
	}
	c.workCtx = workCtx
	var dispatchers sync.WaitGroup
	for _, s := range c.sinks {
		dispatchers.Go(func() { c.dispatch(s) })
	}
	bg.Go(func() { c.heartbeats(bgCtx) })
	bg.Go(func() { c.watchAvailability(bgCtx) })
	bg.Go(func() { c.pollInfo(bgCtx) })
	if c.cfg.SummaryInterval > 0 {
		bg.Go(func() { c.summary(bgCtx) })
	}
	c.checkRetention()
	c.log.Info("consumer started", "stream", c.cfg.Stream.Name, "durable", c.cfg.Durable,
		"max_ack_pending", c.cfg.MaxAckPending, "max_in_flight", c.cfg.MaxInFlight, "ack_wait", c.cfg.AckWait, "max_deliver", c.cfg.MaxDeliver,
		"concurrency", c.cfg.Concurrency, "max_hold", c.cfg.MaxHold, "max_failed_holds", c.cfg.MaxFailedHolds,
		"sinks", strings.Join(sortedNames(c.cfg.Sinks), ","))

	cur := c.control(ctx)
	c.shutdown(cur, cancelWork, &dispatchers)
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.log.Debug("unsubscribe from advisories", tint.Err(err))
	}
	cancelBg()
	bg.Wait()
	if err := c.js.Conn().FlushTimeout(5 * time.Second); err != nil {
		c.log.Warn("flush acks at shutdown", tint.Err(err))
	}
	c.log.Info("consumer stopped", "acked", c.m.nAcked.Load(), "naked", c.m.nNaked.Load(),
		"terminated", c.m.nTerminated.Load(), "failure_records", c.m.nFailures.Load())
	return nil
}

// shutdown stops pulling, Naks what no sink has started, lets the events a
// sink has started finish (on every sink) within ShutdownTimeout, then
// cancels the deliveries still running and Naks their events.
func (c *Consumer) shutdown(cur *consumeRun, cancelWork context.CancelFunc, dispatchers *sync.WaitGroup) {
	c.log.Info("consumer stopping", "in_flight", c.inFlight(), "shutdown_timeout", c.cfg.ShutdownTimeout)
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	close(c.halt)      // no delivery starts until intake is drained
	c.stopConsume(cur) // what the client had buffered reaches handle, which sets it aside
	// Nak only now: a Nak while the pull was draining would bring the
	// message straight back to it.
	close(c.intakeDone)
	c.wakeSinks()
	c.mu.Lock()
	late := c.late
	c.late = nil
	c.mu.Unlock()
	for _, t := range late {
		c.nak(t, 0)
	}
	timer := time.AfterFunc(c.cfg.ShutdownTimeout, func() {
		cancelWork()
		c.wakeSinks()
	})
	defer timer.Stop()
	done := make(chan struct{})
	go func() {
		dispatchers.Wait() // no delivery starts after this
		c.calls.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(c.cfg.ShutdownTimeout + 5*time.Second):
		// A sink ignores its context: give its events back and leave.
		c.mu.Lock()
		var left []*inflight
		for t := range c.owned {
			left = append(left, t)
		}
		c.mu.Unlock()
		c.log.Error("consumer: a sink did not return after its context was cancelled; giving its events back", "events", len(left))
		for _, t := range left {
			c.nak(t, 0)
		}
	}
}

// wakeSinks wakes every sink's dispatcher.
func (c *Consumer) wakeSinks() {
	for _, s := range c.sinks {
		signal(s.wake)
	}
}

// isStopping reports whether shutdown has begun.
func (c *Consumer) isStopping() bool {
	select {
	case <-c.halt:
		return true
	default:
		return false
	}
}

// Ready returns nil when the consumer is connected to NATS and the durable
// exists; otherwise an error saying why.
func (c *Consumer) Ready(ctx context.Context) error {
	if st := c.js.Conn().Status(); st != nats.CONNECTED {
		return fmt.Errorf("not connected to NATS: connection %s", st)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.js.Consumer(ctx, c.cfg.Stream.Name, c.cfg.Durable); err != nil {
		return fmt.Errorf("durable %s on stream %s: %w", c.cfg.Durable, c.cfg.Stream.Name, err)
	}
	return nil
}

func (c *Consumer) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.owned)
}

// signal wakes whoever waits on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
