package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/sinks"
)

// runReplay re-sends the failure log's records to their sinks, as
// sinks.Replay does, and fails when any failed again.
func runReplay(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("replay", e)
	c := newConfig(fs, e.getenv, coreSettings, bucketSettings, failureSettings, logSettings)
	replayFlags := readReplayFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	sc := readSinks(c)
	cfg := replayFlags(c)
	cfg.Path, cfg.Logger = sc.failed.Path, log
	if err := cfg.Validate(); err != nil {
		c.errs = append(c.errs, err)
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
		cfg.Progress = replayProgress(e.stderr)
	}
	res, err := sinks.Replay(ctx, cfg)
	printReplayResult(e.stdout, res, cfg.DryRun)
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("replay: %d record(s) failed again and stay in %s", res.Failed, sc.failed.Path)
	}
	return nil
}

// readReplayFlags defines the flags of the replay's filters and pace on fs
// and returns a function that gives the config they make, once fs is
// parsed, adding what is wrong with them to c.errs.
func readReplayFlags(fs *flag.FlagSet) func(c *config) sinks.ReplayConfig {
	sinkName := fs.String("sink", "", "replay only records of this sink: core or bucket")
	kindName := fs.String("kind", "", "replay only events of this kind: execution or reward")
	since := fs.String("since", "", "replay only records written at or after this RFC 3339 time")
	dryRun := fs.Bool("dry-run", false, "list what would be replayed; send nothing, change nothing")
	ratePerSec := fs.Float64("rate", 0, "events per second (0 = as fast as possible)")
	wait := fs.Duration("wait", sinks.DefaultReplayWait, "how long to wait for a sink in an outage (Core's breaker open) before leaving its records as they are")
	return func(c *config) sinks.ReplayConfig {
		cfg := sinks.ReplayConfig{Sink: *sinkName, DryRun: *dryRun, Rate: *ratePerSec, Wait: *wait}
		if *sinkName != "" && *sinkName != sinks.CoreName && *sinkName != sinks.BucketName {
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
		if *wait < 0 {
			c.errs = append(c.errs, fmt.Errorf("--wait must not be negative"))
		} else if *wait == 0 {
			cfg.Wait = -1 // no wait
		}
		return cfg
	}
}

// replayProgress returns a Progress function that draws a progress bar on
// w, made at the first call, when the total is known.
func replayProgress(w io.Writer) func(done, total int) {
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("replaying"),
				progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
		}
		bar.Set(done)
	}
}

// printReplayResult writes the one-line summary of a replay.
func printReplayResult(w io.Writer, res sinks.ReplayResult, dryRun bool) {
	verb := "sent"
	if dryRun {
		verb = "would send"
	}
	fmt.Fprintf(w, "%s %d, failed again %d, skipped %d", verb, res.Sent, res.Failed, res.Skipped)
	if res.Unavailable > 0 {
		fmt.Fprintf(w, ", left as they were (sink unavailable) %d", res.Unavailable)
	}
	fmt.Fprintln(w)
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
