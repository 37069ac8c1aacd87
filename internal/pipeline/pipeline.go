// Package pipeline assembles the consumer with its sinks — Core, Bucket —
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
	_ consumer.Pacer        = (*sinks.Core)(nil)
	_ consumer.FailureLog   = (*sinks.FailureLog)(nil)
	_ sinks.Deliverer       = (*sinks.Core)(nil)
	_ sinks.Deliverer       = (*sinks.Bucket)(nil)
)

// Config configures a Pipeline. Sinks, FailureLog, Logger and Registerer of
// Consumer are filled in by New.
type Config struct {
	Consumer   consumer.Config
	Core       sinks.CoreConfig
	Bucket     sinks.BucketConfig
	FailureLog sinks.FailureLogConfig
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // optional
}

// Pipeline is the consumer with its sinks and failure log.
type Pipeline struct {
	Consumer   *consumer.Consumer
	Core       *sinks.Core
	Bucket     *sinks.Bucket
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
	cfg.Bucket.Logger = log.With("sink", "bucket")
	if p.Bucket, err = sinks.NewBucket(cfg.Bucket); err != nil {
		p.Close()
		return nil, err
	}
	cfg.FailureLog.Logger = log
	if p.FailureLog, err = sinks.OpenFailureLog(cfg.FailureLog); err != nil {
		p.Close()
		return nil, err
	}
	cc := cfg.Consumer
	cc.Sinks = map[string]consumer.Sink{sinks.CoreName: p.Core, sinks.BucketName: p.Bucket}
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
	if p.FailureLog != nil {
		errs = append(errs, p.FailureLog.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sinks: %w", err)
	}
	return nil
}
