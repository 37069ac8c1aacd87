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
	stopWorkers  chan struct{} // closed when shutdown begins
	intakeDone   chan struct{} // closed at shutdown once the Consume is drained
	advisories   chan []byte
}

// sinkState is a sink with its queue of events and what the consumer knows
// of its availability and pace.
type sinkState struct {
	name  string
	bit   int
	sink  Sink
	avail Availability  // nil when the sink has no circuit breaker
	pacer Pacer         // nil when the sink does not set its own pace
	fixed int           // most deliveries at once without a pacer
	down  atomic.Bool   // it answered unavailable and has given no other answer since
	taken atomic.Uint64 // events it took in this process
	wake  chan struct{} // queue grew, a delivery returned (cap 1)

	mu         sync.Mutex
	queue      queue                    // events waiting for this sink
	running    int                      // deliveries running
	lastTry    time.Time                // start of the last delivery
	holdWait   time.Duration            // in an outage: least wait between probes, doubling to 1s
	holds      map[*inflight]*holdState // events held for this sink (see holdState)
	lastOutage error                    // the sink's latest outage answer
	lastSweep  time.Time                // last look for holds past MaxHold in the queue
}

// available reports what the sink's breaker says (true without one).
func (s *sinkState) available() bool { return s.avail == nil || s.avail.Available() }

// isDown reports whether the sink is in an outage: intake pauses meanwhile.
// A sink with Availability is down exactly while it says so: its breaker or
// probe decides, and once it may be called again (an open breaker gone
// half-open) intake resumes, so that new events join the held ones behind
// the probe (an event the sink keeps failing, alone in its queue, must not
// keep intake paused). A sink without it is down while events wait for it
// and its latest answer was an outage; when its queue runs empty (the held
// events ended, however) it is not, so that new events probe it.
func (s *sinkState) isDown() bool {
	if s.avail != nil {
		return !s.avail.Available()
	}
	if !s.down.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.len() > 0 || s.running > 0
}

// up records an answer that is not an outage: the sink is not down.
func (s *sinkState) up() { s.down.Store(false) }

// limit is how many deliveries may run at once on the sink now.
func (s *sinkState) limit() int {
	if s.pacer != nil {
		return max(1, s.pacer.MaxInFlight())
	}
	return s.fixed
}

// enqueue adds t to the sink's queue.
func (s *sinkState) enqueue(t *inflight) {
	s.mu.Lock()
	s.queue.push(t)
	s.mu.Unlock()
	signal(s.wake)
}

// queued returns the number of events waiting for the sink.
func (s *sinkState) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.len()
}

// consumeRun is one jetstream Consume call.
type consumeRun struct {
	cc       jetstream.ConsumeContext
	draining chan struct{} // closed when the run is being stopped or has ended
	once     sync.Once
}

// release lets a handler blocked in this run return.
func (r *consumeRun) release() { r.once.Do(func() { close(r.draining) }) }

// New returns a consumer of the durable described by cfg on js. It checks
// cfg but does not talk to the server; Run does. The nats.Conn behind js must
// be built with nats.MaxReconnects(-1) so that it reconnects forever.
func New(js jetstream.JetStream, cfg Config) (*Consumer, error) {
	if js == nil {
		return nil, errors.New("consumer: nil JetStream context")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
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
		stopWorkers:  make(chan struct{}),
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
	close(c.stopWorkers) // no delivery starts until intake is drained
	c.stopConsume(cur)   // what the client had buffered reaches handle, which sets it aside
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
	case <-c.stopWorkers:
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
		stream, err = bhiv.EnsureStream(ctx, c.js, c.cfg.Stream)
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

// handle is Consume's handler. It takes msg in and hands it to the sinks'
// queues; it blocks only while this process holds MaxAckPending messages,
// unless run is being stopped.
func (c *Consumer) handle(run *consumeRun, msg jetstream.Msg) {
	c.handled.Add(1)
	t := &inflight{msg: msg}
	c.mu.Lock()
	if c.stopping {
		// Nak'ed once the Consume is drained: a Nak now would bring it
		// straight back to the pull request being drained.
		c.late = append(c.late, t)
		c.mu.Unlock()
		return
	}
	c.owned[t] = struct{}{}
	n := len(c.owned)
	c.mu.Unlock()
	c.m.inFlight.Inc()
	c.intake(t)
	for n >= c.cfg.MaxInFlight {
		select {
		case <-c.room:
		case <-run.draining:
			return
		case <-c.stopWorkers:
			return
		}
		n = c.inFlight()
	}
}

// heartbeats sends InProgress for every message held, every AckWait/3.
func (c *Consumer) heartbeats(ctx context.Context) {
	tick := time.NewTicker(c.cfg.AckWait / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
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
	}
}

// watchAvailability pauses intake while any sink is down and resumes it when
// every sink is back.
func (c *Consumer) watchAvailability(ctx context.Context) {
	tick := time.NewTicker(c.cfg.availEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var down []string
		for _, s := range c.sinks {
			if s.isDown() {
				down = append(down, s.name)
			}
		}
		paused := len(down) > 0
		if c.paused.Load() == paused {
			continue
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
}

// pollInfo reads the durable's info for the pending gauges, notices a
// durable deleted while no pull was waiting, and restarts a Consume that
// has stalled: idle, with no pull request waiting on the server (seen after
// a server restart, where the client kept waiting for a pull the server no
// longer had until its 30s heartbeat check).
func (c *Consumer) pollInfo(ctx context.Context) {
	tick := time.NewTicker(c.cfg.infoEvery)
	defer tick.Stop()
	var idlePolls int
	var lastHandled uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
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
			handled := c.handled.Load()
			if info.NumWaiting == 0 && handled == lastHandled && c.consuming.Load() && !c.paused.Load() && c.inFlight() == 0 {
				idlePolls++
			} else {
				idlePolls = 0
			}
			lastHandled = handled
			if idlePolls >= 2 {
				idlePolls = 0
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
	}
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
	tick := time.NewTicker(c.cfg.SummaryInterval)
	defer tick.Stop()
	last := time.Now()
	var lastRecv, lastAck, lastFail uint64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			recv, ack, fail := c.m.nReceived.Load(), c.m.nAcked.Load(), c.m.nFailures.Load()
			secs := now.Sub(last).Seconds()
			c.log.Info("consumer summary",
				"events_per_s", fmt.Sprintf("%.1f", float64(recv-lastRecv)/secs),
				"received", recv-lastRecv, "acked", ack-lastAck, "failure_records", fail-lastFail,
				"in_flight", c.inFlight(), "intake_paused", c.paused.Load())
			last, lastRecv, lastAck, lastFail = now, recv, ack, fail
		}
	}
}

func (c *Consumer) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.owned)
}

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

// signal wakes whoever waits on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
