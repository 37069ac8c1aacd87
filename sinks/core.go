package sinks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// CoreName is the name of the Core sink, as found in SinkError.Sink and in
// failure records.
const CoreName = "core"

// Defaults of CoreConfig.
const (
	DefaultCoreURL             = "http://localhost:9000/bhiv/core"
	DefaultCoreMaxRetries      = 3
	DefaultCoreBackoff         = time.Second
	DefaultCoreBackoffMax      = 30 * time.Second
	DefaultCoreBreakerFailures = 5
	DefaultCoreBreakerDelay    = 10 * time.Second
	DefaultCoreTimeout         = 10 * time.Second
	DefaultCoreBatchMax        = 1
	DefaultCoreBatchLinger     = 5 * time.Millisecond
	DefaultCoreUserAgent       = "bhiv/dev"
)

// maxBodyExcerpt is how much of an error response's body is kept.
const maxBodyExcerpt = 1 << 10

// maxDrain is how much of a response body is read (and discarded) so that
// its connection can be reused; a longer body costs the connection.
const maxDrain = 256 << 10

// CoreConfig configures the Core sink. The zero value is valid: events go
// to DefaultCoreURL with the default policies.
type CoreConfig struct {
	// URL is where events are POSTed; default DefaultCoreURL. User-info in
	// it is sent as basic auth but never logged.
	URL string
	// Token, when set, is sent as "Authorization: Bearer <Token>". It never
	// appears in logs or errors.
	Token string
	// MaxRetries is how many times a retryable failure is retried; 0 means
	// DefaultCoreMaxRetries, a negative value none.
	MaxRetries int
	// Backoff is the first retry delay, doubled on every retry up to
	// BackoffMax (each varied by ±20%). A Retry-After header, in seconds or
	// as an HTTP date, replaces the computed delay, capped at BackoffMax.
	Backoff, BackoffMax time.Duration
	// BreakerFailures is how many consecutive failed attempts open the
	// circuit breaker.
	BreakerFailures int
	// BreakerDelay is how long the breaker stays open before it lets one
	// probe through (half-open). A Retry-After on the failure that opened it
	// replaces it, capped at max(BreakerDelay, BackoffMax).
	BreakerDelay time.Duration
	// Timeout limits each attempt.
	Timeout time.Duration
	// CAFile, when set, holds the only CA certificates trusted for Core;
	// CertFile and KeyFile, set together, are the client certificate (mTLS).
	// TLS 1.2 is the minimum.
	CAFile, CertFile, KeyFile string
	// BatchMax is the most events sent in one POST; 1 (the default) sends
	// each event on its own. Above 1, concurrent deliveries are sent as a
	// JSON array, flushed at BatchMax events or BatchLinger after the first.
	BatchMax int
	// BatchLinger is how long a batch waits for more events.
	BatchLinger time.Duration
	// Concurrency is how many requests may be in flight to Core at once
	// (each POST, batches too): 0, the default, lets the adaptive limiter
	// find it between ConcurrencyMin and ConcurrencyMax (see core_limit.go);
	// above 0 it is fixed.
	Concurrency int
	// ConcurrencyMin and ConcurrencyMax bound the adaptive limit; defaults
	// DefaultCoreConcurrencyMin (or ConcurrencyMax, when that is lower) and
	// DefaultCoreConcurrencyMax. The maximum (or the fixed Concurrency)
	// sizes the idle connection pool.
	ConcurrencyMin, ConcurrencyMax int
	// UserAgent is sent with every request; default DefaultCoreUserAgent.
	UserAgent string
	// Mode is the CloudEvents HTTP content mode of a request carrying one
	// event: CoreBinary (the default) or CoreStructured. Batches are always
	// in the batched mode.
	Mode CoreMode
	// Logger receives retries (debug) and breaker changes (warn, info); nil
	// discards them.
	Logger *slog.Logger
	// Registerer, when set, receives the sink's metrics.
	Registerer prometheus.Registerer
}

// WithDefaults returns the config with every zero field set to its
// default. A negative MaxRetries (none) stays negative, so that applying
// the defaults twice changes nothing.
func (c CoreConfig) WithDefaults() CoreConfig {
	config.Default(&c.URL, DefaultCoreURL)
	config.Default(&c.MaxRetries, DefaultCoreMaxRetries)
	config.Default(&c.Backoff, DefaultCoreBackoff)
	config.Default(&c.BackoffMax, max(DefaultCoreBackoffMax, c.Backoff))
	config.Default(&c.BreakerFailures, DefaultCoreBreakerFailures)
	config.Default(&c.BreakerDelay, DefaultCoreBreakerDelay)
	config.Default(&c.Timeout, DefaultCoreTimeout)
	config.Default(&c.BatchMax, DefaultCoreBatchMax)
	config.Default(&c.BatchLinger, DefaultCoreBatchLinger)
	floor := DefaultCoreConcurrencyMin
	if c.ConcurrencyMax > 0 {
		floor = min(floor, c.ConcurrencyMax) // a lower max lowers the default floor with it
	}
	config.Default(&c.ConcurrencyMin, floor)
	config.Default(&c.ConcurrencyMax, max(DefaultCoreConcurrencyMax, c.ConcurrencyMin))
	config.Default(&c.UserAgent, DefaultCoreUserAgent)
	config.Default(&c.Mode, CoreBinary)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks the config, with defaults applied for zero fields. Its
// errors never show the token or the URL's user-info.
func (c CoreConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("core url %s: not a URL", redactURLString(c.URL)))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("core url %s: scheme must be http or https", redactURL(u)))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("core url %s: no host", redactURL(u)))
	}
	if strings.ContainsAny(c.Token, "\r\n") || strings.TrimSpace(c.Token) != c.Token {
		errs = append(errs, errors.New("core token: has spaces or line breaks at its ends or inside"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"backoff", c.Backoff}, {"backoff max", c.BackoffMax}, {"breaker delay", c.BreakerDelay}, {"timeout", c.Timeout}, {"batch linger", c.BatchLinger}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("core %s %s: must not be negative", d.name, d.v))
		}
	}
	if c.BackoffMax < c.Backoff {
		errs = append(errs, fmt.Errorf("core backoff max %s is below backoff %s", c.BackoffMax, c.Backoff))
	}
	if c.BreakerFailures < 1 {
		errs = append(errs, fmt.Errorf("core breaker failures %d: must be at least 1", c.BreakerFailures))
	}
	if c.BatchMax < 1 {
		errs = append(errs, fmt.Errorf("core batch max %d: must be at least 1", c.BatchMax))
	}
	if c.Concurrency < 0 || c.Concurrency > MaxCoreConcurrency {
		errs = append(errs, fmt.Errorf("core concurrency %d: want 0 (auto) or 1 to %d", c.Concurrency, MaxCoreConcurrency))
	}
	if c.ConcurrencyMin < 1 || c.ConcurrencyMax > MaxCoreConcurrency || c.ConcurrencyMax < c.ConcurrencyMin {
		errs = append(errs, fmt.Errorf("core concurrency min %d, max %d: want 1 <= min <= max <= %d",
			c.ConcurrencyMin, c.ConcurrencyMax, MaxCoreConcurrency))
	}
	if !slices.Contains(CoreModes, c.Mode) {
		errs = append(errs, fmt.Errorf("core mode %q: want binary or structured", c.Mode))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("core tls: the client certificate and key files go together"))
	}
	return errors.Join(errs...)
}

// Core is the Core sink: it POSTs events to BHIV Core over HTTP through a
// failsafe-go retry policy, concurrency limiter, circuit breaker and
// per-attempt timeout, in that order from the outside in. It is safe for
// concurrent use.
type Core struct {
	cfg       CoreConfig
	url       string   // the URL requests go to
	safeURL   string   // the URL as shown in logs and errors
	secrets   []string // strings redacted from response bodies
	auth      string   // the Authorization header, or ""
	log       *slog.Logger
	transport *http.Transport
	client    *http.Client
	breaker   circuitbreaker.CircuitBreaker[*http.Response]
	limiter   *coreLimit
	executor  failsafe.Executor[*http.Response]
	m         *coreMetrics

	// posts counts the POSTs under way (from the first attempt to the
	// result, backoffs included), atLimiter those waiting for a permit or
	// holding one; the difference is waiting between attempts.
	posts, atLimiter atomic.Int64

	// refusedStatus is the status of the refusal (401, 403, 404, 407) that
	// opened the breaker, until it closes again; 0 when none.
	refusedStatus atomic.Int32
	// quiet silences breakerChanged while returnPermit re-enters the
	// half-open state.
	quiet atomic.Bool

	closed atomic.Bool

	// Batching (BatchMax > 1), see core_batch.go.
	mu       sync.Mutex
	cur      *coreBatch      // the batch being filled, or nil
	inflight sync.WaitGroup  // batches not yet answered
	base     context.Context // ended by Close (cause ErrClosed)
	stop     context.CancelCauseFunc
}

// NewCore returns a Core sink for cfg (defaults applied).
func NewCore(cfg CoreConfig) (*Core, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // checked by Validate
	tlsCfg, err := coreTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Core{
		cfg:     cfg,
		url:     cfg.URL,
		safeURL: redactURL(u),
		log:     cfg.Logger,
	}
	if cfg.Token != "" {
		c.auth = "Bearer " + cfg.Token
		c.secrets = append(c.secrets, cfg.Token)
	}
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			c.secrets = append(c.secrets, p)
		}
	}
	c.transport, c.client = c.newClient(tlsCfg)
	c.limiter = c.newLimiter()
	if c.m, err = newCoreMetrics(cfg.Registerer, c); err != nil {
		return nil, err
	}
	c.breaker = c.newBreaker()
	c.executor = failsafe.With[*http.Response](c.newRetry(), limiterPolicy{c}, breakerPolicy{c}, timeout.New[*http.Response](cfg.Timeout))
	c.base, c.stop = context.WithCancelCause(context.Background())
	return c, nil
}

// newClient returns the HTTP transport and client of Core: connections
// pooled for as many requests as the concurrency allows, attempts counted
// and answers read by coreTransport, redirects not followed (a 3xx is a
// permanent failure).
func (c *Core) newClient(tlsCfg *tls.Config) (*http.Transport, *http.Client) {
	cfg := c.cfg
	conns := cfg.ConcurrencyMax
	if cfg.Concurrency > 0 {
		conns = cfg.Concurrency
	}
	dialer := &net.Dialer{Timeout: min(cfg.Timeout, 30*time.Second), KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, conns+conns/4+1),
		MaxIdleConnsPerHost:   conns + conns/4 + 1,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(cfg.Timeout, 10*time.Second),
		ExpectContinueTimeout: time.Second,
	}
	return transport, &http.Client{
		Transport:     &coreTransport{next: transport, core: c},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Name returns "core".
func (c *Core) Name() string { return CoreName }

// Deliver POSTs ev to Core (or adds it to the next batch) and returns nil
// once Core took it. Otherwise it returns a *bhiv.SinkError with Sink
// "core": class permanent for an answer no retry can change, else
// retryable_exhausted, wrapping bhiv.ErrUnavailable when the circuit
// breaker is open. When ctx ends first, it returns promptly an error that
// wraps ctx.Err() and is not a *bhiv.SinkError. After Close it returns an
// error wrapping ErrClosed.
func (c *Core) Deliver(ctx context.Context, ev *bhiv.Event) error {
	if c.closed.Load() {
		return fmt.Errorf("core: deliver %s: %w", ev.ID, ErrClosed)
	}
	if ctx.Err() != nil {
		return cancelledErr(ctx, ev.ID, 0)
	}
	if c.cfg.BatchMax > 1 {
		body, err := ev.JSON()
		if err != nil {
			return &bhiv.SinkError{Sink: CoreName, Class: bhiv.ClassPermanent, Err: fmt.Errorf("encode event: %w", err)}
		}
		return c.deliverBatched(ctx, ev, body)
	}
	m, err := c.message(ev)
	if err != nil {
		return &bhiv.SinkError{Sink: CoreName, Class: bhiv.ClassPermanent, Err: err}
	}
	return c.post(ctx, m)
}

// Available reports whether Core may be called: false while the breaker is
// open and its delay has not passed. Once the delay has passed it is true
// again, so that the next delivery can probe Core.
func (c *Core) Available() bool { return c.BreakerState() != "open" }

// BreakerState returns the state of the circuit breaker: "closed", "open"
// or "half-open". An open breaker whose delay has passed reports half-open:
// the next delivery is its probe.
func (c *Core) BreakerState() string {
	switch c.breaker.State() {
	case circuitbreaker.OpenState:
		if c.breaker.RemainingDelay() > 0 {
			return "open"
		}
		return "half-open"
	case circuitbreaker.HalfOpenState:
		return "half-open"
	default:
		return "closed"
	}
}

// Close stops the batcher, fails deliveries still in flight with an error
// wrapping ErrClosed, waits for them, and closes idle connections. Call it
// once the callers are done. It is safe to call more than once.
func (c *Core) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.mu.Lock()
	b := c.cur
	c.cur = nil
	c.mu.Unlock()
	c.stop(ErrClosed)
	if b != nil {
		b.timer.Stop()
		c.sendBatch(b) // fails at once: its context has ended
	}
	c.inflight.Wait()
	c.transport.CloseIdleConnections()
	c.m.unregister()
	return nil
}
