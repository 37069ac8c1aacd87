package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultMaxPending = 4000 // the nats.go default of async acks in flight
	DefaultAckTimeout = 30 * time.Second
)

// Config configures a Publisher.
type Config struct {
	// Source is the CloudEvents source of the events: the service name,
	// such as "executor". Required.
	Source string
	// Stream names the stream and the subject prefix; zero fields take
	// their defaults (BHIV, bhiv.events).
	Stream bhiv.StreamConfig
	// EnsureStream makes New create or update the stream
	// (BHIV_MANAGE_STREAM). Leave it false where operators own the stream.
	EnsureStream bool
	// MaxPending bounds the async publishes whose ack is outstanding;
	// PublishAsync blocks while that many are. Default 4000. Keep it at
	// most the JetStream context's own limit
	// (jetstream.WithPublishAsyncMaxPending, 4000 by default).
	MaxPending int
	// AckTimeout is how long an async publish may wait for its ack before
	// it counts as failed (the event may then still be stored; publishing
	// it again is safe). Default 30s.
	AckTimeout time.Duration
	// Logger receives warnings about failed async publishes; nil discards.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Stream = c.Stream.WithDefaults()
	config.Default(&c.MaxPending, DefaultMaxPending)
	config.Default(&c.AckTimeout, DefaultAckTimeout)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Source == "" {
		errs = append(errs, errors.New("publisher source is empty: set it to the service name"))
	}
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("publisher max pending %d: want at least 1", c.MaxPending))
	}
	if c.AckTimeout < 0 {
		errs = append(errs, fmt.Errorf("publisher ack timeout %s: want positive", c.AckTimeout))
	}
	return errors.Join(errs...)
}

// Result says where a published event was stored.
type Result struct {
	ID        string // the event id (also its Nats-Msg-Id)
	Stream    string // the stream that stored it
	Sequence  uint64 // its stream sequence (of the first copy, for a duplicate)
	Duplicate bool   // true when the stream already held an event with this id
}

// PublishError is a failed async publish, as reported by Wait.
type PublishError struct {
	ID  string // the event id
	Err error
}

func (e *PublishError) Error() string { return fmt.Sprintf("publish event %s: %v", e.ID, e.Err) }

// Unwrap returns the underlying error.
func (e *PublishError) Unwrap() error { return e.Err }

// AsyncResult counts the async publishes settled since the previous Wait.
type AsyncResult struct {
	Published  int // acked and stored
	Duplicates int // acked, but the stream already held the id (not stored again)
	Failed     int // not acked: see the error returned by Wait
}

// Publisher publishes BHIV events to JetStream. It is safe for concurrent
// use.
type Publisher struct {
	js     jetstream.JetStream
	cfg    Config
	log    *slog.Logger
	prefix string

	sem chan struct{} // one token per outstanding async publish

	mu      sync.Mutex
	pending int           // async publishes not yet settled
	idle    chan struct{} // closed when pending drops to 0
	queue   chan pendingAck
	running bool // the collector goroutine runs
	res     AsyncResult
	errs    []error
}

type pendingAck struct {
	id       string
	fut      jetstream.PubAckFuture
	deadline time.Time
}

// New returns a publisher on js. With cfg.EnsureStream it creates or updates
// the stream first, within ctx.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("publisher: jetstream is nil")
	}
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	if cfg.EnsureStream {
		if _, err := jsstream.Ensure(ctx, js, cfg.Stream); err != nil {
			return nil, fmt.Errorf("publisher: %w", err)
		}
	}
	idle := make(chan struct{})
	close(idle)
	return &Publisher{
		js:     js,
		cfg:    cfg,
		log:    cfg.Logger,
		prefix: cfg.Stream.SubjectPrefix,
		sem:    make(chan struct{}, cfg.MaxPending),
		idle:   idle,
		queue:  make(chan pendingAck, cfg.MaxPending),
	}, nil
}

// Source returns the CloudEvents source the publisher stamps on events.
func (p *Publisher) Source() string { return p.cfg.Source }

// EventOption adjusts an event built by Execution or Reward.
type EventOption func(*bhiv.Event)

// WithID gives the event the id instead of a new ULID. Use a stable id (the
// execution id, say) so that publishing again after an error is stored once.
func WithID(id string) EventOption { return func(e *bhiv.Event) { e.ID = id } }

// WithTime sets the event time instead of now.
func WithTime(t time.Time) EventOption { return func(e *bhiv.Event) { e.Time = t.UTC() } }

// Execution publishes execution data as an event from the publisher's source
// and waits for the ack.
func (p *Publisher) Execution(ctx context.Context, x bhiv.Execution, opts ...EventOption) (Result, error) {
	ev, err := p.build(bhiv.KindExecution, x, opts)
	if err != nil {
		return Result{}, err
	}
	return p.Publish(ctx, ev)
}

// Reward publishes reward data as an event from the publisher's source and
// waits for the ack.
func (p *Publisher) Reward(ctx context.Context, x bhiv.Reward, opts ...EventOption) (Result, error) {
	ev, err := p.build(bhiv.KindReward, x, opts)
	if err != nil {
		return Result{}, err
	}
	return p.Publish(ctx, ev)
}

func (p *Publisher) build(kind bhiv.Kind, data any, opts []EventOption) (bhiv.Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return bhiv.Event{}, fmt.Errorf("publish %s: encode data: %w", kind, err)
	}
	ev := bhiv.Event{Type: kind.Type(), Data: raw}
	for _, o := range opts {
		o(&ev)
	}
	return ev, nil
}

// prepare fills the attributes the caller may leave out (specversion, a new
// ULID id, the publisher's source, the current time, the JSON content type),
// validates the event and returns the message to send.
func (p *Publisher) prepare(ev *bhiv.Event) (*nats.Msg, error) {
	if ev.SpecVersion == "" {
		ev.SpecVersion = bhiv.SpecVersion
	}
	if ev.ID == "" {
		ev.ID = bhiv.NewID()
	}
	if ev.Source == "" {
		ev.Source = p.cfg.Source
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.DataContentType == "" {
		ev.DataContentType = bhiv.ContentTypeJSON
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("publish event %s: %w", ev.ID, err)
	}
	body, err := ev.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("publish event %s: %w", ev.ID, err)
	}
	// The only header is Nats-Msg-Id, added by the publish call. A
	// Content-Type header would say nothing bhiv.Decode needs (an envelope
	// is known by its specversion) and costs about 15% of the async rate
	// (measured with BenchmarkPublishAsync).
	return &nats.Msg{Subject: bhiv.Subject(p.prefix, ev.Kind()), Data: body, Header: make(nats.Header, 1)}, nil
}

// Publish validates ev, publishes it and waits for the JetStream ack.
// Attributes left empty are filled in: specversion, id (a new ULID), source
// (the publisher's), time (now) and datacontenttype. An invalid event returns
// a *bhiv.DecodeError (test it with errors.Is on the bhiv.Err* sentinels) and
// nothing is sent. When NATS cannot be reached, Publish returns an error when
// ctx ends (after 5s when ctx has no deadline).
func (p *Publisher) Publish(ctx context.Context, ev bhiv.Event) (Result, error) {
	msg, err := p.prepare(&ev)
	if err != nil {
		return Result{}, err
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID))
	if err != nil {
		return Result{ID: ev.ID}, fmt.Errorf("publish event %s to %s: %w", ev.ID, msg.Subject, err)
	}
	return Result{ID: ev.ID, Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PublishAsync validates ev and publishes it without waiting for the ack;
// call Wait to learn how every async publish ended. It blocks while
// MaxPending acks are outstanding; each of them settles within AckTimeout.
// Attributes left empty are filled in as by Publish.
//
// An error returned here (an invalid event, a closed connection) means the
// event was not sent; Wait does not count it again.
func (p *Publisher) PublishAsync(ev bhiv.Event) error {
	msg, err := p.prepare(&ev)
	if err != nil {
		return err
	}
	p.sem <- struct{}{}
	// The JetStream context has its own bound; wait for it as long as for
	// an ack rather than fail at once.
	fut, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.ID), jetstream.WithStallWait(p.cfg.AckTimeout))
	if err != nil {
		<-p.sem
		return fmt.Errorf("publish event %s to %s: %w", ev.ID, msg.Subject, err)
	}
	p.mu.Lock()
	if p.pending == 0 {
		p.idle = make(chan struct{})
	}
	p.pending++
	if !p.running {
		p.running = true
		go p.collect()
	}
	p.mu.Unlock()
	// The queue has room: it holds at most MaxPending entries, one per
	// semaphore token.
	p.queue <- pendingAck{id: ev.ID, fut: fut, deadline: time.Now().Add(p.cfg.AckTimeout)}
	return nil
}

// collect settles async publishes in the order they were sent, and returns
// when none is pending.
func (p *Publisher) collect() {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for a := range p.queue {
		ack, err := p.awaitAck(a, &timer)
		<-p.sem
		if p.settle(a, ack, err) {
			return
		}
	}
}

// awaitAck waits for the ack of a, but not past its deadline; *timer is
// made on the first wait and reused after.
func (p *Publisher) awaitAck(a pendingAck, timer **time.Timer) (*jetstream.PubAck, error) {
	select {
	case ack := <-a.fut.Ok():
		return ack, nil
	case err := <-a.fut.Err():
		return nil, err
	default:
	}
	// Not settled yet: wait, but not past the ack deadline. Acks come in
	// order, so waiting on the oldest first costs nothing.
	d := time.Until(a.deadline)
	if *timer == nil {
		*timer = time.NewTimer(d)
	} else {
		(*timer).Reset(d)
	}
	t := *timer
	defer func() {
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}()
	select {
	case ack := <-a.fut.Ok():
		return ack, nil
	case err := <-a.fut.Err():
		return nil, err
	case <-t.C:
		return nil, fmt.Errorf("no ack within %s (the event may still be stored; publishing it again is safe): %w",
			p.cfg.AckTimeout, jetstream.ErrAsyncPublishTimeout)
	}
}

// settle counts how the publish of a ended and reports whether it was the
// last one pending, which ends the collector.
func (p *Publisher) settle(a pendingAck, ack *jetstream.PubAck, err error) (last bool) {
	p.mu.Lock()
	switch {
	case err != nil:
		p.res.Failed++
		p.errs = append(p.errs, &PublishError{ID: a.id, Err: err})
	case ack.Duplicate:
		p.res.Duplicates++
	default:
		p.res.Published++
	}
	p.pending--
	last = p.pending == 0
	if last {
		close(p.idle)
		p.running = false
	}
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("async publish failed", "id", a.id, "err", err)
	}
	return last
}

// Pending returns the number of async publishes whose ack is outstanding.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// Wait waits until every async publish made so far has settled, then returns
// their counts and an error joining a *PublishError for each failed publish,
// and resets both. When ctx ends first it returns the counts so far and an
// error wrapping ctx.Err(); the publishes still pending are reported by the
// next Wait.
func (p *Publisher) Wait(ctx context.Context) (AsyncResult, error) {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	var ctxErr error
	select {
	case <-idle:
	case <-ctx.Done():
		ctxErr = ctx.Err()
	}
	p.mu.Lock()
	res, errs := p.res, p.errs
	p.res, p.errs = AsyncResult{}, nil
	pending := p.pending
	p.mu.Unlock()
	if ctxErr != nil {
		errs = append(errs, fmt.Errorf("wait for %d pending publish ack(s): %w", pending, ctxErr))
	}
	return res, errors.Join(errs...)
}
