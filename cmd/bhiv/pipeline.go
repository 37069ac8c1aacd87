package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/sinks"
)

// The sinks are what the consumer fans out to.
var (
	_ consumer.Sink         = (*sinks.Core)(nil)
	_ consumer.Sink         = (*sinks.Bucket)(nil)
	_ consumer.Availability = (*sinks.Core)(nil)
	_ consumer.FailureLog   = (*sinks.FailureLog)(nil)
	_ sinks.Deliverer       = (*sinks.Core)(nil)
)

// sinkConfig holds the sink and failure-log settings.
type sinkConfig struct {
	core   sinks.CoreConfig
	bucket sinks.BucketConfig
	failed sinks.FailureLogConfig
}

// readSinks reads and checks the sink and failure-log settings.
func readSinks(c *config, concurrency int) sinkConfig {
	s := sinkConfig{
		core: sinks.CoreConfig{
			URL:             c.str("BHIV_CORE_URL"),
			Token:           c.str("BHIV_CORE_TOKEN"),
			MaxRetries:      c.int("BHIV_CORE_MAX_RETRIES", 0),
			Backoff:         c.dur("BHIV_CORE_BACKOFF", 1),
			BackoffMax:      c.dur("BHIV_CORE_BACKOFF_MAX", 1),
			BreakerFailures: c.int("BHIV_CORE_BREAKER_FAILURES", 1),
			BreakerDelay:    c.dur("BHIV_CORE_BREAKER_DELAY", 1),
			Timeout:         c.dur("BHIV_CORE_TIMEOUT", 1),
			CAFile:          c.str("BHIV_CORE_CA_FILE"),
			CertFile:        c.str("BHIV_CORE_CERT_FILE"),
			KeyFile:         c.str("BHIV_CORE_KEY_FILE"),
			BatchMax:        c.int("BHIV_CORE_BATCH_MAX", 1),
			BatchLinger:     c.dur("BHIV_CORE_BATCH_LINGER", 0),
			Concurrency:     concurrency,
			UserAgent:       "bhiv/" + Version(),
		},
		bucket: sinks.BucketConfig{
			Dir:     c.str("BHIV_BUCKET_DIR"),
			NoFsync: !c.bool("BHIV_BUCKET_FSYNC"),
		},
		failed: sinks.FailureLogConfig{
			Path:     c.str("BHIV_FAILED_LOG"),
			MaxBytes: int64(c.int("BHIV_FAILED_LOG_MAX_MB", 1)) << 20,
		},
	}
	if u, err := url.Parse(s.core.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.check("BHIV_CORE_URL", errors.New("not an http(s) URL"))
	}
	if (s.core.CertFile == "") != (s.core.KeyFile == "") {
		c.check("BHIV_CORE_CERT_FILE", errors.New("BHIV_CORE_CERT_FILE and BHIV_CORE_KEY_FILE go together"))
	}
	if s.bucket.Dir == "" {
		c.check("BHIV_BUCKET_DIR", errors.New("is empty"))
	}
	if s.failed.Path == "" {
		c.check("BHIV_FAILED_LOG", errors.New("is empty"))
	}
	return s
}

// readConsumer reads the consumer settings.
func readConsumer(c *config, n natsConfig) consumer.Config {
	return consumer.Config{
		Stream:          n.stream,
		ManageStream:    n.manageStream,
		Durable:         c.str("BHIV_CONSUMER"),
		Concurrency:     c.int("BHIV_CONCURRENCY", 1),
		AckWait:         c.dur("BHIV_ACK_WAIT", 1),
		MaxDeliver:      c.int("BHIV_MAX_DELIVER", 1),
		ShutdownTimeout: c.dur("BHIV_SHUTDOWN_TIMEOUT", 0),
		MaxEventBytes:   n.maxEventBytes,
	}
}

// pipeline is the consumer with its sinks and failure log.
type pipeline struct {
	consumer *consumer.Consumer
	core     *sinks.Core
	bucket   *sinks.Bucket
	failed   *sinks.FailureLog
}

// newPipeline opens the sinks and the failure log and builds the consumer.
func newPipeline(js jetstream.JetStream, cc consumer.Config, sc sinkConfig, log *slog.Logger, reg prometheus.Registerer) (*pipeline, error) {
	p := &pipeline{}
	var err error
	sc.core.Logger, sc.core.Registerer = log.With("sink", "core"), reg
	if p.core, err = sinks.NewCore(sc.core); err != nil {
		return nil, err
	}
	sc.bucket.Logger = log.With("sink", "bucket")
	if p.bucket, err = sinks.NewBucket(sc.bucket); err != nil {
		p.close()
		return nil, err
	}
	sc.failed.Logger = log
	if p.failed, err = sinks.OpenFailureLog(sc.failed); err != nil {
		p.close()
		return nil, err
	}
	cc.Sinks = map[string]consumer.Sink{"core": p.core, "bucket": p.bucket}
	cc.FailureLog = p.failed
	cc.Logger = log
	cc.Registerer = reg
	if p.consumer, err = consumer.New(js, cc); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// close closes the sinks and the failure log.
func (p *pipeline) close() error {
	var errs []error
	if p.core != nil {
		errs = append(errs, p.core.Close())
	}
	if p.bucket != nil {
		errs = append(errs, p.bucket.Close())
	}
	if p.failed != nil {
		errs = append(errs, p.failed.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sinks: %w", err)
	}
	return nil
}

// run runs the consumer until ctx ends.
func (p *pipeline) run(ctx context.Context) error { return p.consumer.Run(ctx) }
