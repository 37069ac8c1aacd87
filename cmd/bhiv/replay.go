package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/sinks"
)

func runReplay(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("replay", e)
	c := newConfig(fs, e.getenv, coreSettings, bucketSettings, failureSettings, logSettings)
	sinkName := fs.String("sink", "", "replay only records of this sink: core or bucket")
	kindName := fs.String("kind", "", "replay only events of this kind: execution or reward")
	since := fs.String("since", "", "replay only records written at or after this RFC 3339 time")
	dryRun := fs.Bool("dry-run", false, "list what would be replayed; send nothing, change nothing")
	ratePerSec := fs.Float64("rate", 0, "events per second (0 = as fast as possible)")
	wait := fs.Duration("wait", sinks.DefaultReplayWait, "how long to wait for a sink in an outage (Core's breaker open) before leaving its records as they are")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	sc := readSinks(c)
	cfg := sinks.ReplayConfig{Path: sc.failed.Path, Sink: *sinkName, DryRun: *dryRun, Rate: *ratePerSec, Wait: *wait, Logger: log}
	if *sinkName != "" && *sinkName != "core" && *sinkName != "bucket" {
		c.errs = append(c.errs, fmt.Errorf("--sink=%q: want core or bucket", *sinkName))
	}
	if *kindName != "" {
		k, err := bhiv.ParseKind(*kindName)
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("--kind: %w", err))
		}
		cfg.Kind = k
	}
	if *since != "" {
		t, err := time.Parse(time.RFC3339, *since)
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("--since=%q: not an RFC 3339 time such as 2026-11-01T00:00:00Z", *since))
		}
		cfg.Since = t
	}
	if *ratePerSec < 0 {
		c.errs = append(c.errs, fmt.Errorf("--rate must not be negative"))
	}
	if *wait < 0 {
		c.errs = append(c.errs, fmt.Errorf("--wait must not be negative"))
	} else if *wait == 0 {
		cfg.Wait = -1 // no wait
	}
	if err := c.err(); err != nil {
		return usageError{err}
	}
	sc.core.Logger = log.With("sink", "core")
	core, err := sinks.NewCore(sc.core)
	if err != nil {
		return err
	}
	defer core.Close()
	bucket, err := openBucket(ctx, sc, log.With("sink", "bucket"))
	if err != nil {
		return err
	}
	defer bucket.Close()
	cfg.Sinks = map[string]bhiv.Sink{"core": core, "bucket": bucket}
	if isTerminal(e.stderr) {
		var bar *progressbar.ProgressBar
		cfg.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("replaying"),
					progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			}
			bar.Set(done)
		}
	}
	res, err := sinks.Replay(ctx, cfg)
	verb := "sent"
	if *dryRun {
		verb = "would send"
	}
	fmt.Fprintf(e.stdout, "%s %d, failed again %d, skipped %d", verb, res.Sent, res.Failed, res.Skipped)
	if res.Unavailable > 0 {
		fmt.Fprintf(e.stdout, ", left as they were (sink unavailable) %d", res.Unavailable)
	}
	fmt.Fprintln(e.stdout)
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("replay: %d record(s) failed again and stay in %s", res.Failed, sc.failed.Path)
	}
	return nil
}

// bucketSink is the Bucket sink, on local disk or S3.
type bucketSink interface {
	bhiv.Sink
	Close() error
}

// openBucket opens the Bucket sink the settings name.
func openBucket(ctx context.Context, sc sinkConfig, log *slog.Logger) (bucketSink, error) {
	if sc.s3 != nil {
		cfg := *sc.s3
		cfg.Logger = log
		return sinks.NewS3Bucket(ctx, cfg)
	}
	cfg := sc.bucket
	cfg.Logger = log
	return sinks.NewBucket(cfg)
}
