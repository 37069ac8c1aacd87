package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/hackaverse/bhiv/internal/bench"
)

// runBench is `bhiv bench`: a load tool for sizing a deployment.
func runBench(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("bench", e)
	c := newConfig(fs, e.getenv, natsSettings, consumerSettings, logSettings)
	embedded := fs.Bool("embedded", false, "run a self-contained stack in-process: embedded NATS, core stub, consumer, durable bucket, failure log")
	events := fs.Int("events", 10000, "events to publish")
	duration := fs.Duration("duration", 0, "publish for this long instead of a count of events")
	rate := fs.Float64("rate", 0, "events per second (0 = as fast as possible)")
	size := fs.Int("size", 256, "approximate size of each event's data, in bytes")
	mix := fs.String("mix", "execution=0.7,reward=0.3", "relative weights of the kinds published")
	coreLatency := fs.Duration("core-latency", 0, "latency of the embedded core stub (--embedded)")
	coreCapacity := fs.Int("core-capacity", 0, "requests the embedded core stub serves at once, the rest queue (--embedded; 0 = no bound)")
	withCeilings := fs.Bool("ceilings", false, "also measure the bare parts (JetStream, HTTP, files) in the same run")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	dir := fs.String("dir", "", "data directory of the embedded stack and the file ceilings (default: a temporary one, removed)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	concurrency := c.int("BHIV_CONCURRENCY", 1)
	durable := c.str("BHIV_CONSUMER")
	if err := c.err(); err != nil {
		return usageError{err}
	}
	m, err := bench.ParseMix(*mix)
	if err != nil {
		return usageError{err}
	}
	cfg := bench.Config{
		Events: *events, Duration: *duration, Rate: *rate, Size: *size, Mix: m,
		Concurrency: concurrency, CoreLatency: *coreLatency, CoreCapacity: *coreCapacity, Ceilings: *withCeilings,
		Embedded: *embedded, Dir: *dir, Stream: n.stream.Name, Durable: durable, Logger: log,
	}
	if *duration > 0 {
		cfg.Events = 0
	}
	if !*embedded {
		cfg.NATSURL = n.url // checked below, once connected
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	if !*embedded {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		nc, err := connect(cctx, n, "bhiv bench", log)
		cancel()
		if err != nil {
			return err
		}
		nc.Close() // the settings and credentials work; the engine connects on its own
		if cfg.NATSOpts, err = natsAuth(n); err != nil {
			return err
		}
	}
	if isTerminal(e.stderr) && !*asJSON {
		var bar *progressbar.ProgressBar
		cfg.Progress = func(published, acked, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(max(total, 1), progressbar.OptionSetWriter(e.stderr), progressbar.OptionShowCount(),
					progressbar.OptionSetDescription("acked"), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
				if total == 0 { // publishing for a duration
					bar.ChangeMax(-1)
				}
			}
			bar.Describe(fmt.Sprintf("published %d, acked", published))
			bar.Set(acked)
			if total > 0 && acked >= total {
				bar.Finish()
			}
		}
	}
	r, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printBench(e.stdout, r, *embedded, *coreLatency)
	return nil
}

func printBench(w io.Writer, r *bench.Result, embedded bool, latency time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "events\t%d\n", r.Events)
	fmt.Fprintf(tw, "publish rate\t%.0f events/s\n", r.PublishRate)
	fmt.Fprintf(tw, "end-to-end\t%.0f events/s\t(first publish → last ack by the consumer, both sinks)\n", r.EndToEndRate)
	if r.CoreLatency != nil {
		fmt.Fprintf(tw, "latency publish → Core\t%s\n", percentiles(r.CoreLatency))
	} else if !embedded {
		fmt.Fprintf(tw, "latency publish → Core\tn/a\t(Core is not the bench's to watch: see publish → ack)\n")
	}
	if r.AckLatency != nil {
		fmt.Fprintf(tw, "latency publish → ack\t%s\t(ack floor polled every 10ms)\n", percentiles(r.AckLatency))
	}
	if r.OtherMessages > 0 {
		fmt.Fprintf(tw, "other publishers\t%d messages\t(published by others during the run: latency to ack is approximate)\n", r.OtherMessages)
	}
	if r.CoreLimit != nil {
		fmt.Fprintf(tw, "core concurrency limit\tmean %.0f  min %d  max %d  at the end %d\t(adaptive: BHIV_CORE_CONCURRENCY=auto)\n",
			r.CoreLimit.Mean, r.CoreLimit.Min, r.CoreLimit.Max, r.CoreLimit.Last)
	}
	if embedded {
		fmt.Fprintf(tw, "failure-log records\t%d\n", r.FailureRecords)
	}
	fmt.Fprintf(tw, "peak RSS\t%.0f MiB\t(this process)\n", float64(r.PeakRSSBytes)/(1<<20))
	if len(r.Ceilings) > 0 {
		fmt.Fprintf(tw, "\nceilings, same run\tevents/s\tend-to-end as a share\n")
		keys := make([]string, 0, len(r.Ceilings))
		for k := range r.Ceilings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c := r.Ceiling(k)
			fmt.Fprintf(tw, "  %s\t%.0f\t%.2f", k, c, r.EndToEndRate/c)
			if after, ok := r.CeilingsAfter[k]; ok {
				fmt.Fprintf(tw, "\t(mean of %.0f before the run and %.0f after)", r.Ceilings[k], after)
			}
			fmt.Fprintln(tw)
		}
		if r.CoreLimit != nil && latency > 0 {
			bound := r.CoreLimit.Mean / latency.Seconds()
			fmt.Fprintf(tw, "  core limit (mean) / core latency\t%.0f\t%.2f\n", bound, r.EndToEndRate/bound)
		}
	}
	tw.Flush()
}

func percentiles(l *bench.Latency) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
