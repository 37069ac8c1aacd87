package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/hackaverse/bhiv/sinks"
)

// The sinks are what the consumer fans out to.
var (
	_ consumer.Sink         = (*sinks.Core)(nil)
	_ consumer.Sink         = (*sinks.Bucket)(nil)
	_ consumer.Availability = (*sinks.Core)(nil)
	_ consumer.Availability = (*sinks.Bucket)(nil)
	_ consumer.Sink         = (*sinks.S3Bucket)(nil)
	_ consumer.Availability = (*sinks.S3Bucket)(nil)
	_ consumer.Pacer        = (*sinks.Core)(nil)
	_ consumer.FailureLog   = (*sinks.FailureLog)(nil)
)

// Config configures a Pipeline. Sinks, FailureLog, Logger and Registerer of
// Consumer, and the Logger of each sink, are filled in by New.
type Config struct {
	Consumer   consumer.Config
	Core       sinks.CoreConfig
	Bucket     sinks.BucketConfig
	S3         *sinks.S3Config // when set, the bucket is on S3 and Bucket is unused
	FailureLog sinks.FailureLogConfig
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // optional
}

// WithDefaults returns c with every zero field set to its default, its
// parts' included.
func (c Config) WithDefaults() Config {
	c.Consumer = c.Consumer.WithDefaults()
	c.Core = c.Core.WithDefaults()
	c.Bucket = c.Bucket.WithDefaults()
	if c.S3 != nil {
		s3 := c.S3.WithDefaults()
		c.S3 = &s3
	}
	c.FailureLog = c.FailureLog.WithDefaults()
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found in any
// of its parts, before New opens anything.
func (c Config) Validate() error {
	c = c.WithDefaults()
	errs := []error{c.Core.Validate(), c.FailureLog.Validate(),
		c.consumerConfig(unopened{}, unopened{}, unopened{}).Validate()}
	if c.S3 != nil {
		errs = append(errs, c.S3.Validate())
	} else {
		errs = append(errs, c.Bucket.Validate())
	}
	return errors.Join(errs...)
}

// consumerConfig is the consumer's config, with the sinks and the failure
// log New opened.
func (c Config) consumerConfig(core, bucket consumer.Sink, fl consumer.FailureLog) consumer.Config {
	cc := c.Consumer
	cc.Sinks = map[string]consumer.Sink{sinks.CoreName: core, sinks.BucketName: bucket}
	cc.FailureLog = fl
	cc.Logger = c.Logger
	cc.Registerer = c.Registerer
	return cc
}

// unopened stands in, for Validate, for the sinks and the failure log that
// New opens.
type unopened struct{}

func (unopened) Deliver(context.Context, *bhiv.Event) error          { return errors.New("not opened") }
func (unopened) Append(context.Context, ...bhiv.FailureRecord) error { return errors.New("not opened") }

// Pipeline is the consumer with its sinks and failure log.
type Pipeline struct {
	Consumer   *consumer.Consumer
	Core       *sinks.Core
	Bucket     *sinks.Bucket   // the bucket on local disk, or
	S3Bucket   *sinks.S3Bucket // the bucket on S3 (Config.S3)
	FailureLog *sinks.FailureLog
}

// New checks cfg, then opens the sinks and the failure log and builds the
// consumer on js.
func New(js jetstream.JetStream, cfg Config) (*Pipeline, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	p := &Pipeline{}
	cfg.Core.Logger, cfg.Core.Registerer = log.With("sink", "core"), cfg.Registerer
	if p.Core, err = sinks.NewCore(cfg.Core); err != nil {
		return nil, err
	}
	var bucket consumer.Sink
	if cfg.S3 != nil {
		s3 := *cfg.S3
		s3.Logger = log.With("sink", "bucket")
		if p.S3Bucket, err = sinks.NewS3Bucket(context.Background(), s3); err != nil {
			p.Close()
			return nil, err
		}
		bucket = p.S3Bucket
	} else {
		cfg.Bucket.Logger = log.With("sink", "bucket")
		if p.Bucket, err = sinks.NewBucket(cfg.Bucket); err != nil {
			p.Close()
			return nil, err
		}
		bucket = p.Bucket
	}
	cfg.FailureLog.Logger = log
	if p.FailureLog, err = sinks.OpenFailureLog(cfg.FailureLog); err != nil {
		p.Close()
		return nil, err
	}
	if p.Consumer, err = consumer.New(js, cfg.consumerConfig(p.Core, bucket, p.FailureLog)); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Run runs the consumer until ctx ends.
func (p *Pipeline) Run(ctx context.Context) error { return p.Consumer.Run(ctx) }

// Close closes the sinks and the failure log; call it after Run returned.
func (p *Pipeline) Close() error {
	var errs []error
	if p.Core != nil {
		errs = append(errs, p.Core.Close())
	}
	if p.Bucket != nil {
		errs = append(errs, p.Bucket.Close())
	}
	if p.S3Bucket != nil {
		errs = append(errs, p.S3Bucket.Close())
	}
	if p.FailureLog != nil {
		errs = append(errs, p.FailureLog.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sinks: %w", err)
	}
	return nil
}
