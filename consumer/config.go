package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Sink is what the consumer fans events out to: bhiv.Sink, the one sink
// contract, whose documentation says what Deliver's answers mean.
type Sink = bhiv.Sink

// Availability is implemented by sinks that can be down as a whole (see
// bhiv.Availability): the consumer then holds the events for that sink and
// pauses intake.
type Availability = bhiv.Availability

// Pacer is implemented by sinks that set their own pace, such as Core with
// its adaptive concurrency limit: MaxInFlight returns how many deliveries
// the consumer may have running at once on the sink right now (at least
// 1). The consumer asks again before it starts each delivery. A sink
// without it gets at most Config.Concurrency deliveries at once.
type Pacer interface {
	MaxInFlight() int
}

// FailureLog durably appends failure records. Append returns only when the
// records are durable, or with an error.
type FailureLog interface {
	Append(ctx context.Context, recs ...bhiv.FailureRecord) error
}

// Defaults of Config.
const (
	DefaultDurable         = "bhiv-sinks"
	DefaultAckWait         = 30 * time.Second
	DefaultConcurrency     = 256
	DefaultMaxAckPending   = 5_000
	DefaultMaxDeliver      = 20
	DefaultShutdownTimeout = 30 * time.Second
	DefaultRememberIDs     = 100_000
	DefaultNakDelay        = 5 * time.Second
	DefaultSummaryInterval = time.Minute
	DefaultMaxHold         = time.Hour
	DefaultMaxFailedHolds  = 3
)

// maxSinks is the most sinks a consumer takes (the memory of which sinks
// took an event is a 64-bit mask).
const maxSinks = 64

// Config configures a Consumer. The zero value plus Sinks and FailureLog,
// after WithDefaults, is a working configuration.
type Config struct {
	Stream       bhiv.StreamConfig // the events stream: name, subject prefix, replicas
	ManageStream bool              // create or update the stream when Run starts
	Durable      string            // durable consumer name, default "bhiv-sinks"
	AckWait      time.Duration     // default 30s
	MaxDeliver   int               // deliveries without an ack before an event is given up to the failure log, default 20

	// MaxAckPending limits the unacked messages of the durable, shared by
	// every process on it: it is what bounds the events in flight, and so
	// how far a fast sink can run ahead of a slow one. A process holds at
	// most MaxAckPending messages itself. Default 5,000: each held event
	// costs a few KiB, and at 10s between heartbeats each costs 0.1
	// InProgress per second.
	MaxAckPending int

	// MaxInFlight is the most messages this process holds at once (taken
	// in, not yet acked); default MaxAckPending. Set it lower to spread a
	// backlog over several processes on the durable. The client library
	// pre-buffers at most min(500, MaxInFlight) more.
	MaxInFlight int

	// Concurrency is the most deliveries running at once on a sink that
	// does not set its own pace (Pacer), such as the Bucket, whose group
	// commit takes every write waiting; default 256. Core paces itself.
	Concurrency int

	ShutdownTimeout time.Duration // time given to in-flight events on shutdown, default 30s

	// MaxHold is the longest an event is held for an unavailable sink,
	// counted from the first time that sink was unavailable for it in this
	// process; then it gets a retryable_exhausted record for that sink.
	// Default 1h. Keep it well under the stream's MaxAge.
	MaxHold time.Duration
	// MaxFailedHolds is how many holds of one event may end as failed (its
	// own attempts failed while the sink took other events: a poison event
	// that reopens the sink's breaker) before it gets a retryable_exhausted
	// record. Default 3.
	MaxFailedHolds int

	MaxEventBytes   int           // largest accepted message, default bhiv.DefaultMaxEventBytes
	RememberIDs     int           // recent event ids remembered with the sinks that took them, default 100,000
	NakDelay        time.Duration // redelivery delay when the failure log cannot be written, default 5s
	SummaryInterval time.Duration // period of the summary log line; default 1m, negative turns it off

	Sinks      map[string]Sink // by name, such as "core" and "bucket"
	FailureLog FailureLog
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // optional; metrics are registered here

	// Test knobs, unexported: zero means the default.
	availEvery time.Duration // availability poll period (100ms)
	infoEvery  time.Duration // consumer info poll period (5s)
	retryHold  time.Duration // longest hold between retries of an unavailable sink (5s)
	// probeGrace is how long, once a sink in an outage is available again,
	// a probe waits for a fresh event when every event queued for the sink
	// has itself been answered with an outage (2 × availEvery).
	probeGrace time.Duration
	// setupPatience is how long Run retries setting up the stream and the
	// durable at start before it returns the error (30s).
	setupPatience time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Stream = c.Stream.WithDefaults()
	config.Default(&c.Durable, DefaultDurable)
	config.Default(&c.AckWait, DefaultAckWait)
	config.Default(&c.Concurrency, DefaultConcurrency)
	config.Default(&c.MaxDeliver, DefaultMaxDeliver)
	config.Default(&c.MaxAckPending, DefaultMaxAckPending)
	config.Default(&c.MaxInFlight, c.MaxAckPending)
	config.Default(&c.ShutdownTimeout, DefaultShutdownTimeout)
	config.Default(&c.MaxEventBytes, bhiv.DefaultMaxEventBytes)
	config.Default(&c.RememberIDs, DefaultRememberIDs)
	config.Default(&c.NakDelay, DefaultNakDelay)
	config.Default(&c.MaxHold, DefaultMaxHold)
	config.Default(&c.MaxFailedHolds, DefaultMaxFailedHolds)
	config.Default(&c.SummaryInterval, DefaultSummaryInterval)
	c.Logger = config.Logger(c.Logger)
	config.Default(&c.availEvery, 100*time.Millisecond)
	config.Default(&c.infoEvery, 5*time.Second)
	config.Default(&c.retryHold, 5*time.Second)
	config.Default(&c.probeGrace, 2*c.availEvery)
	config.Default(&c.setupPatience, 30*time.Second)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c Config) Validate() error {
	c = c.WithDefaults()
	errs := []error{c.Stream.Validate()} // errors.Join drops a nil
	if !bhiv.ValidStreamName(c.Durable) {
		errs = append(errs, fmt.Errorf("durable name %q: use letters, digits, - and _ only", c.Durable))
	}
	errs = append(errs, c.limitErrs()...)
	errs = append(errs, c.sinkErrs()...)
	return errors.Join(errs...)
}

// limitErrs checks the numbers and durations of c.
func (c Config) limitErrs() []error {
	var errs []error
	for _, r := range []struct {
		ok      bool
		problem string
	}{
		{c.AckWait >= 100*time.Millisecond, fmt.Sprintf("ack wait %s: want at least 100ms", c.AckWait)},
		{c.Concurrency >= 1 && c.Concurrency <= 10_000, fmt.Sprintf("concurrency %d: want 1 to 10000", c.Concurrency)},
		{c.MaxDeliver >= 2, fmt.Sprintf("max deliver %d: want at least 2", c.MaxDeliver)},
		{c.MaxAckPending >= 1 && c.MaxAckPending <= 1_000_000, fmt.Sprintf("max ack pending %d: want 1 to 1000000", c.MaxAckPending)},
		{c.MaxInFlight >= 1 && c.MaxInFlight <= c.MaxAckPending, fmt.Sprintf("max in flight %d: want 1 to max ack pending (%d)", c.MaxInFlight, c.MaxAckPending)},
		{c.ShutdownTimeout > 0, fmt.Sprintf("shutdown timeout %s: want a positive duration", c.ShutdownTimeout)},
		{c.MaxHold > 0, fmt.Sprintf("max hold %s: want a positive duration", c.MaxHold)},
		{c.MaxFailedHolds >= 1, fmt.Sprintf("max failed holds %d: want at least 1", c.MaxFailedHolds)},
		{c.MaxEventBytes >= 1, fmt.Sprintf("max event bytes %d: want at least 1", c.MaxEventBytes)},
		{c.RememberIDs >= 1, fmt.Sprintf("remember ids %d: want at least 1", c.RememberIDs)},
		{c.NakDelay >= 0, fmt.Sprintf("nak delay %s: want a positive duration", c.NakDelay)},
	} {
		if !r.ok {
			errs = append(errs, errors.New(r.problem))
		}
	}
	return errs
}

// sinkErrs checks the sinks and the failure log of c.
func (c Config) sinkErrs() []error {
	var errs []error
	if len(c.Sinks) == 0 {
		errs = append(errs, errors.New("no sinks configured"))
	}
	if len(c.Sinks) > maxSinks {
		errs = append(errs, fmt.Errorf("%d sinks: at most %d", len(c.Sinks), maxSinks))
	}
	for _, name := range sortedNames(c.Sinks) {
		switch {
		case name == "":
			errs = append(errs, errors.New("a sink has an empty name"))
		case name == bhiv.SinkDecode || name == SinkConsumer:
			errs = append(errs, fmt.Errorf("sink name %q is reserved", name))
		case c.Sinks[name] == nil:
			errs = append(errs, fmt.Errorf("sink %q is nil", name))
		}
	}
	if c.FailureLog == nil {
		errs = append(errs, errors.New("no failure log configured"))
	}
	return errs
}

func sortedNames(m map[string]Sink) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
