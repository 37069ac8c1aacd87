// Package pipeline assembles the consumer with its sinks — Core, Bucket (on
// local disk or S3) —
// and the failure log, for `bhiv consume`, `bhiv dev` and `bhiv bench`.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

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
	_ consumer.Availability = (*sinks.Bucket)(nil)
	_ consumer.Sink         = (*sinks.S3Bucket)(nil)
	_ consumer.Availability = (*sinks.S3Bucket)(nil)
	_ consumer.Pacer        = (*sinks.Core)(nil)
	_ consumer.FailureLog   = (*sinks.FailureLog)(nil)
)

// Config configures a Pipeline. Sinks, FailureLog, Logger and Registerer of
// Consumer are filled in by New.
type Config struct {
	Consumer   consumer.Config
	Core       sinks.CoreConfig
	Bucket     sinks.BucketConfig
	S3         *sinks.S3Config // when set, the bucket is on S3 and Bucket is unused
	FailureLog sinks.FailureLogConfig
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // optional
}

// Pipeline is the consumer with its sinks and failure log.
type Pipeline struct {
	Consumer   *consumer.Consumer
	Core       *sinks.Core
	Bucket     *sinks.Bucket   // the bucket on local disk, or
	S3Bucket   *sinks.S3Bucket // the bucket on S3 (Config.S3)
	FailureLog *sinks.FailureLog
}

// New opens the sinks and the failure log and builds the consumer on js.
func New(js jetstream.JetStream, cfg Config) (*Pipeline, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{}
	var err error
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
	cc := cfg.Consumer
	cc.Sinks = map[string]consumer.Sink{sinks.CoreName: p.Core, sinks.BucketName: bucket}
	cc.FailureLog = p.FailureLog
	cc.Logger = log
	cc.Registerer = cfg.Registerer
	if p.Consumer, err = consumer.New(js, cc); err != nil {
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
