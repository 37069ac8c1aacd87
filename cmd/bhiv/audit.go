package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/audit"
	"github.com/hackaverse/bhiv/sinks"
)

// runAudit reconciles the stream with Core (when its record is given), the
// bucket and the failure log, prints the report, and fails when any event is
// lost. Events the consumer has not processed yet are pending and not
// judged; with --wait it first waits for the consumer to catch up, and then
// fails when it did not.
func runAudit(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("audit", e)
	c := newConfig(fs, e.getenv, natsSettings, bucketSettings, failureSettings, consumerSettings, logSettings)
	coreRecord := fs.String("core-record", "", "JSON Lines record of what Core received (bhiv core-stub --record); without it, Core is inferred from acks and the bucket")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	wait := fs.Duration("wait", 0, "wait up to this long for the consumer to have nothing pending before judging (fails when it still has)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	bucketCfg, s3Cfg := readBucket(c)
	cfg := audit.Config{Stream: n.stream.Name, Durable: c.str("BHIV_CONSUMER"),
		Decode:     bhiv.DecodeOptions{SubjectPrefix: n.stream.SubjectPrefix, MaxBytes: n.maxEventBytes},
		FailureLog: c.str("BHIV_FAILED_LOG"), CoreRecord: *coreRecord, Logger: log}
	if err := c.err(); err != nil {
		return usageError{err}
	}
	if *wait < 0 {
		return usageError{fmt.Errorf("--wait %s: must not be negative", *wait)}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	nc, err := connect(cctx, n, "bhiv audit", log)
	cancel()
	if err != nil {
		return err
	}
	defer nc.Close()
	if cfg.JS, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	bucket, closeBucket, err := openBucketReader(ctx, bucketCfg, s3Cfg, log)
	if err != nil {
		return err
	}
	defer closeBucket()
	cfg.Bucket = bucket
	settled := *wait == 0 || waitIdle(ctx, cfg.JS, cfg.Stream, cfg.Durable, *wait, log)
	r, err := audit.Check(ctx, cfg)
	if err != nil {
		return err
	}
	if err := printReport(e.stdout, r, *asJSON); err != nil {
		return err
	}
	return verdict(r, *wait, settled, log)
}

// openBucketReader opens a reader of the bucket the settings name, on
// local disk or S3, and returns it with the function that closes it.
func openBucketReader(ctx context.Context, dir sinks.BucketConfig, s3 *sinks.S3Config, log *slog.Logger) (sinks.BucketReader, func(), error) {
	if s3 == nil {
		return sinks.NewDirReader(dir.Dir), func() {}, nil
	}
	cfg := *s3
	cfg.Logger = log
	r, err := sinks.NewS3Reader(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return r, func() { r.Close() }, nil
}

// printReport writes the audit's report to w, as a table or as JSON.
func printReport(w io.Writer, r *audit.Report, asJSON bool) error {
	if !asJSON {
		fmt.Fprint(w, r.String())
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("audit: write report: %w", err)
	}
	return nil
}

// verdict fails the audit when an event is lost, or when events were still
// pending after --wait (settled says whether the consumer caught up);
// pending events without --wait only earn a warning.
func verdict(r *audit.Report, wait time.Duration, settled bool, log *slog.Logger) error {
	switch {
	case !r.OK():
		return fmt.Errorf("audit: %d event(s) lost", len(r.Lost))
	case r.Pending > 0 && wait > 0 && !settled:
		return fmt.Errorf("audit: the consumer still had events pending after --wait %s (%d not judged)", wait, r.Pending)
	case r.Pending > 0:
		log.Warn("audit: events the consumer has not processed yet were not judged; run again later or with --wait", "pending", r.Pending)
	}
	return nil
}

// waitIdle waits, up to d, until the durable has nothing pending or
// ack-pending, and reports whether it got there.
func waitIdle(ctx context.Context, js jetstream.JetStream, stream, durable string, d time.Duration, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		cons, err := js.Consumer(ctx, stream, durable)
		if err == nil {
			info, ierr := cons.Info(ctx)
			if ierr == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return true
			}
			err = ierr
		}
		select {
		case <-ctx.Done():
			if err != nil {
				log.Warn("audit: consumer state unknown", "durable", durable, tint.Err(err))
			}
			return false
		case <-tick.C:
		}
	}
}
