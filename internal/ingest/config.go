package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes      = 4 << 20
	DefaultPublishTimeout    = 3 * time.Second // under the 5 s timeout of the old connector's requests.post
	DefaultRetryAfter        = 2 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 45 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultSource            = "bhiv-ingest"
)

// Config configures a Server. The zero value, after WithDefaults, serves
// the default stream (BHIV on bhiv.events.>) without authentication.
type Config struct {
	// Stream names the stream events must land in and the subject prefix
	// they are published under; zero fields take their defaults.
	Stream bhiv.StreamConfig
	// Token, when set, is the bearer token every POST must carry
	// (Authorization: Bearer <token>). Empty: no authentication.
	Token string
	// MaxBodyBytes bounds a request body (a batch included); larger
	// requests are answered 413. Default 4 MiB.
	MaxBodyBytes int64
	// MaxEventBytes bounds one event's envelope as published, as the
	// consumer bounds what it decodes (BHIV_MAX_EVENT_BYTES). Default
	// bhiv.DefaultMaxEventBytes.
	MaxEventBytes int
	// PublishTimeout is how long a request waits for JetStream to ack its
	// events before it is answered 503. Default 3s, so that a client with
	// the old connector's 5 s timeout gets the 503 and its Retry-After.
	PublishTimeout time.Duration
	// RetryAfter is the Retry-After of a 503, rounded up to whole
	// seconds. Default 2s.
	RetryAfter time.Duration
	// Source is the CloudEvents source given to bare data objects, which
	// carry none. Default "bhiv-ingest".
	Source string
	// HTTP server timeouts (see net/http.Server). WriteTimeout runs from
	// the end of the request headers, so it covers reading the body and
	// waiting for JetStream: keep it above ReadTimeout + PublishTimeout.
	ReadHeaderTimeout time.Duration // default 10s, at most ReadTimeout
	ReadTimeout       time.Duration // default 30s
	WriteTimeout      time.Duration // default 45s
	IdleTimeout       time.Duration // default 2m
	// ShutdownTimeout is how long Serve lets requests in flight finish
	// when its context ends. Default PublishTimeout + 5s.
	ShutdownTimeout time.Duration
	// Metrics, when set, is served at GET /metrics, open like /healthz
	// (such as promhttp.HandlerFor the registry behind Registerer).
	Metrics http.Handler
	// Logger receives start-up warnings and 5xx answers; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Stream = c.Stream.WithDefaults()
	config.Default(&c.MaxBodyBytes, DefaultMaxBodyBytes)
	config.Default(&c.MaxEventBytes, bhiv.DefaultMaxEventBytes)
	config.Default(&c.PublishTimeout, DefaultPublishTimeout)
	config.Default(&c.RetryAfter, DefaultRetryAfter)
	config.Default(&c.Source, DefaultSource)
	config.Default(&c.ReadTimeout, DefaultReadTimeout)
	config.Default(&c.ReadHeaderTimeout, min(DefaultReadHeaderTimeout, c.ReadTimeout))
	config.Default(&c.WriteTimeout, max(DefaultWriteTimeout, c.ReadTimeout+c.PublishTimeout+5*time.Second))
	config.Default(&c.IdleTimeout, DefaultIdleTimeout)
	config.Default(&c.ShutdownTimeout, c.PublishTimeout+5*time.Second)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	errs := []error{c.Stream.Validate()} // errors.Join drops a nil
	if c.MaxBodyBytes < 1 {
		errs = append(errs, fmt.Errorf("ingest max body bytes %d: want at least 1", c.MaxBodyBytes))
	}
	if c.MaxEventBytes < 1 {
		errs = append(errs, fmt.Errorf("ingest max event bytes %d: want at least 1", c.MaxEventBytes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"publish timeout", c.PublishTimeout}, {"retry after", c.RetryAfter},
		{"read header timeout", c.ReadHeaderTimeout}, {"read timeout", c.ReadTimeout},
		{"write timeout", c.WriteTimeout}, {"idle timeout", c.IdleTimeout}, {"shutdown timeout", c.ShutdownTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("ingest %s %s: want positive", d.name, d.v))
		}
	}
	if c.WriteTimeout > 0 && c.WriteTimeout <= c.PublishTimeout {
		errs = append(errs, fmt.Errorf("ingest write timeout %s must exceed the publish timeout %s: a request waits for JetStream before it is answered",
			c.WriteTimeout, c.PublishTimeout))
	}
	return errors.Join(errs...)
}
