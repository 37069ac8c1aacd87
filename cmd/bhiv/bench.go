package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/hackaverse/bhiv/internal/bench"
)

// runBench is `bhiv bench`: a load tool for sizing a deployment, and the
// scenarios of issue 13 judged by their targets.
func runBench(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("bench", e)
	c := newConfig(fs, e.getenv, natsSettings, consumerSettings, logSettings)
	f := defineBenchFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *f.part {
		return bench.RunPart(ctx, e.getenv(bench.PartEnv), e.stdout)
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	cfg, sc, err := f.config(c, fs, e, n, log)
	if err != nil {
		return err
	}
	if !cfg.Embedded {
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
	var bar *progressBar
	if isTerminal(e.stderr) && !*f.asJSON {
		bar = &progressBar{w: e.stderr}
		cfg.Progress = bar.update
	}
	results, err := bench.RunN(ctx, cfg, *f.runs, func(i int, r *bench.Result) {
		if *f.asJSON {
			return
		}
		if *f.runs > 1 {
			fmt.Fprintf(e.stdout, "== run %d of %d\n", i+1, *f.runs)
		}
		printBench(e.stdout, r, cfg)
		fmt.Fprintln(e.stdout)
		if bar != nil {
			bar.bar = nil // a new one for the next run
		}
	})
	if err != nil {
		return err
	}
	var verdicts []bench.Verdict
	if sc != nil {
		verdicts = bench.Verdicts(sc.Targets, results)
	}
	if *f.asJSON {
		return printBenchJSON(e.stdout, sc, *f.runs, results, verdicts)
	}
	if sc != nil {
		printVerdicts(e.stdout, sc, verdicts, results)
	}
	return nil
}

// benchFlags are the flags of `bhiv bench`.
type benchFlags struct {
	scenario                                     *string
	runs, events, size, coreCapacity             *int
	embedded, consumerProcess, coreDown, preload *bool
	parts, withCeilings, asJSON, part            *bool
	duration, coreLatency, coreJitter, hold      *time.Duration
	rate                                         *float64
	mix, profile, dir                            *string
}

func defineBenchFlags(fs *flag.FlagSet) *benchFlags {
	return &benchFlags{
		scenario:        fs.String("scenario", "", "run a named benchmark with its settings and targets: "+scenarioNames()+" (flags given change its settings)"),
		runs:            fs.Int("runs", 0, "run this many times and judge the targets by the median (default 3 with --scenario, else 1)"),
		embedded:        fs.Bool("embedded", false, "run a self-contained stack: embedded NATS, core stub, consumer, durable bucket, failure log"),
		consumerProcess: fs.Bool("consumer-process", false, "run the consumer as its own process (`bhiv consume`) and measure its CPU and memory alone (--embedded)"),
		events:          fs.Int("events", 10000, "events to publish"),
		duration:        fs.Duration("duration", 0, "publish for this long instead of a count of events"),
		rate:            fs.Float64("rate", 0, "events per second (0 = as fast as possible)"),
		size:            fs.Int("size", 256, "approximate size of each event's data, in bytes"),
		mix:             fs.String("mix", "execution=0.7,reward=0.3", "relative weights of the kinds published"),
		coreLatency:     fs.Duration("core-latency", 0, "latency of the embedded core stub (--embedded)"),
		coreJitter:      fs.Duration("core-latency-jitter", 0, "vary each latency of the core stub uniformly within ± this (--embedded)"),
		coreCapacity:    fs.Int("core-capacity", 0, "requests the embedded core stub serves at once, the rest queue (--embedded; 0 = no bound)"),
		coreDown:        fs.Bool("core-down", false, "the core stub answers 503 to every event (--embedded, with --hold)"),
		preload:         fs.Bool("preload", false, "publish every event before the consumer starts: a backlog (--embedded)"),
		hold:            fs.Duration("hold", 0, "run the consumer until its intake has stopped for 10s, this long at most, instead of waiting for every ack, and report what it took in (--embedded)"),
		parts:           fs.Bool("parts", false, "also measure the CPU per event of the bare parts, each in its own process: consume+ack, HTTP POST, files with grouped syncfs (--embedded)"),
		profile:         fs.String("consumer-cpuprofile", "", "write CPU profiles of the consumer process to FILE-NN.pprof, back to back over the run (--consumer-process)"),
		withCeilings:    fs.Bool("ceilings", false, "also measure the bare parts (JetStream, HTTP, files) in the same run"),
		asJSON:          fs.Bool("json", false, "print the result as JSON"),
		dir:             fs.String("dir", "", "data directory of the embedded stack and the file ceilings, one new directory per run with --runs (default: a temporary one, removed)"),
		part:            fs.Bool("part", false, "run the bare part described by "+bench.PartEnv+" and print what it measured (the bench's own child processes)"),
	}
}

// config returns the engine's configuration: a scenario's settings changed
// by the flags given, or without one the flags and their defaults; and
// the scenario, if any. It sets --runs' default.
func (f *benchFlags) config(c *config, fs *flag.FlagSet, e env, n natsConfig, log *slog.Logger) (bench.Config, *bench.Scenario, error) {
	concurrency := c.int("BHIV_CONCURRENCY", 1)
	maxAckPending := c.int("BHIV_MAX_ACK_PENDING", 1)
	durable := c.str("BHIV_CONSUMER")
	if err := c.err(); err != nil {
		return bench.Config{}, nil, usageError{err}
	}
	m, err := bench.ParseMix(*f.mix)
	if err != nil {
		return bench.Config{}, nil, usageError{err}
	}
	given := givenFlags(fs)
	cfg := bench.Config{Events: 10000}
	var sc *bench.Scenario
	if *f.scenario != "" {
		s, ok := bench.ScenarioNamed(*f.scenario)
		if !ok {
			return bench.Config{}, nil, usageError{fmt.Errorf("--scenario %q: want one of %s", *f.scenario, scenarioNames())}
		}
		sc, cfg = &s, s.Config
		if *f.runs == 0 {
			*f.runs = 3
		}
	}
	f.apply(&cfg, sc == nil, given)
	if cfg.Embedded && (sc == nil || given["max-ack-pending"] || e.getenv("BHIV_MAX_ACK_PENDING") != "") {
		cfg.MaxAckPending = maxAckPending
	}
	cfg.Mix, cfg.Concurrency, cfg.Dir, cfg.Stream, cfg.Durable, cfg.Logger = m, concurrency, *f.dir, n.stream.Name, durable, log
	cfg.ConsumerProfile = *f.profile
	if *f.runs == 0 {
		*f.runs = 1
	}
	if *f.runs < 1 {
		return bench.Config{}, nil, usageError{fmt.Errorf("--runs %d: want at least 1", *f.runs)}
	}
	if cfg.ConsumerProcess || cfg.Parts {
		exe, err := selfCommand()
		if err != nil {
			return bench.Config{}, nil, err
		}
		cfg.ConsumerCmd = []string{exe, "consume"}
		cfg.PartCmd = []string{exe, "bench", "--part"}
		cfg.ConsumerEnv = consumerFlags(c, given)
	}
	if !cfg.Embedded {
		cfg.NATSURL = n.url // checked by the caller, once connected
	}
	if err := cfg.Validate(); err != nil {
		return bench.Config{}, nil, usageError{err}
	}
	return cfg, sc, nil
}

// apply sets cfg from the flags: every one when all, else (a scenario's
// settings) only those given.
func (f *benchFlags) apply(cfg *bench.Config, all bool, given map[string]bool) {
	set := func(name string, apply func()) {
		if all || given[name] {
			apply()
		}
	}
	set("events", func() { cfg.Events = *f.events })
	set("duration", func() {
		if cfg.Duration = *f.duration; *f.duration > 0 {
			cfg.Events = 0
		}
	})
	set("rate", func() { cfg.Rate = *f.rate })
	set("size", func() { cfg.Size = *f.size })
	set("embedded", func() { cfg.Embedded = *f.embedded })
	set("consumer-process", func() { cfg.ConsumerProcess = *f.consumerProcess })
	set("core-latency", func() { cfg.CoreLatency = *f.coreLatency })
	set("core-latency-jitter", func() { cfg.CoreLatencyJitter = *f.coreJitter })
	set("core-capacity", func() { cfg.CoreCapacity = *f.coreCapacity })
	set("core-down", func() { cfg.CoreDown = *f.coreDown })
	set("preload", func() { cfg.Preload = *f.preload })
	set("hold", func() { cfg.Hold = *f.hold })
	set("parts", func() { cfg.Parts = *f.parts })
	set("ceilings", func() { cfg.Ceilings = *f.withCeilings })
}

// printBenchJSON prints the results as JSON: one result alone, or the runs
// with the scenario's verdicts.
func printBenchJSON(w io.Writer, sc *bench.Scenario, runs int, results []*bench.Result, verdicts []bench.Verdict) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if sc == nil && runs == 1 {
		return enc.Encode(results[0])
	}
	name := ""
	if sc != nil {
		name = sc.Name
	}
	return enc.Encode(struct {
		Scenario string          `json:"scenario,omitempty"`
		Runs     []*bench.Result `json:"runs"`
		Verdicts []bench.Verdict `json:"verdicts,omitempty"`
	}{name, results, verdicts})
}

// scenarioNames lists the scenarios, for help and errors.
func scenarioNames() string {
	var names []string
	for _, s := range bench.Scenarios {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

// givenFlags returns the flags given on the command line.
func givenFlags(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return given
}

// consumerFlags returns the consumer settings given as flags, as the
// environment of the consumer process (those in the environment reach it as
// they are); the durable, the concurrency and the max ack pending go
// through the bench's own settings.
func consumerFlags(c *config, given map[string]bool) []string {
	var env []string
	for _, s := range consumerSettings.settings {
		switch s.env {
		case "BHIV_CONSUMER", "BHIV_CONCURRENCY", "BHIV_MAX_ACK_PENDING":
			continue
		}
		if given[flagName(s.env)] {
			env = append(env, s.env+"="+c.str(s.env))
		}
	}
	return env
}

// selfCommand returns this binary, which the bench runs as `bhiv consume`
// and for its part processes.
func selfCommand() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("bench: find this binary to run the consumer process: %w", err)
	}
	if strings.HasSuffix(filepath.Base(exe), ".test") {
		// A go test binary would run its tests, not `bhiv consume`.
		return "", errors.New("bench: the consumer and part processes need the bhiv binary; this is a test binary")
	}
	return exe, nil
}

// progressBar draws the progress of a run on w.
type progressBar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (p *progressBar) update(published, acked, total int) {
	if p.bar == nil {
		p.bar = progressbar.NewOptions(max(total, 1), progressbar.OptionSetWriter(p.w), progressbar.OptionShowCount(),
			progressbar.OptionSetDescription("acked"), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
		if total == 0 { // publishing for a duration
			p.bar.ChangeMax(-1)
		}
	}
	p.bar.Describe(fmt.Sprintf("published %d, acked", published))
	p.bar.Set(acked)
	if total > 0 && acked >= total {
		p.bar.Finish()
	}
}

func printBench(w io.Writer, r *bench.Result, cfg bench.Config) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printRates(tw, r, cfg)
	printConsumer(tw, r, cfg)
	if len(r.Parts) > 0 {
		printParts(tw, r)
	}
	if len(r.Ceilings) > 0 {
		printCeilings(tw, r, cfg)
	}
	tw.Flush()
}

// printRates prints the machine's load, the rates and the latencies.
func printRates(tw io.Writer, r *bench.Result, cfg bench.Config) {
	busy := ""
	if r.LoadAverage > 3 || r.OtherCPU-r.KernelCPU > 0.5 {
		busy = "; a busy machine: figures are noisy"
	}
	fmt.Fprintf(tw, "load average\t%.2f\t(at the start; while the consumer ran the machine's %d cores were %.0f%% busy, %.2f cores of it outside the bench and the consumer: kernel threads and interrupts %.2f, other processes %.2f%s)\n",
		r.LoadAverage, runtime.NumCPU(), 100*r.MachineBusy, r.OtherCPU, r.KernelCPU, r.OtherCPU-r.KernelCPU, busy)
	fmt.Fprintf(tw, "events\t%d\n", r.Events)
	fmt.Fprintf(tw, "publish rate\t%.0f events/s\n", r.PublishRate)
	if r.Hold == nil {
		from := "first publish"
		if cfg.Preload {
			from = "consumer start"
		}
		fmt.Fprintf(tw, "end-to-end\t%.0f events/s\t(%s → last ack by the consumer, both sinks)\n", r.EndToEndRate, from)
	}
	if cfg.Embedded {
		bound := ""
		if r.CoreBound > 0 {
			bound = fmt.Sprintf("; the stub takes at most %.0f/s: %.2f of it", r.CoreBound, r.CoreRate/r.CoreBound)
		}
		fmt.Fprintf(tw, "Core rate\t%.0f events/s\t(%d accepted, first publish → last accepted%s)\n", r.CoreRate, r.CoreAccepted, bound)
	}
	if r.CoreLatency != nil {
		fmt.Fprintf(tw, "latency publish → Core\t%s\n", percentiles(r.CoreLatency))
	} else if !cfg.Embedded {
		fmt.Fprintf(tw, "latency publish → Core\tn/a\t(Core is not the bench's to watch: see publish → ack)\n")
	}
	if r.BucketLag != nil {
		fmt.Fprintf(tw, "latency publish → bucket\t%s\t(file renamed into the bucket: its ctime, which reads up to %s early)\n", percentiles(r.BucketLag), r.BucketLagTick)
	}
	if r.AckLatency != nil {
		fmt.Fprintf(tw, "latency publish → ack\t%s\t(ack floor polled every 10ms)\n", percentiles(r.AckLatency))
	}
	if r.OtherMessages > 0 {
		fmt.Fprintf(tw, "other publishers\t%d messages\t(published by others during the run: latency to ack is approximate)\n", r.OtherMessages)
	}
	if r.CoreLimit != nil {
		fmt.Fprintf(tw, "core concurrency limit\tmean %.0f  min %d  max %d  at the end %d\t(adaptive unless BHIV_CORE_CONCURRENCY is a number)\n",
			r.CoreLimit.Mean, r.CoreLimit.Min, r.CoreLimit.Max, r.CoreLimit.Last)
	}
	if cfg.CoreCapacity > 0 {
		fmt.Fprintf(tw, "core stub queue\t%d requests at most\t(waiting for one of its %d slots)\n", r.CoreMaxQueued, cfg.CoreCapacity)
	}
	if cfg.Embedded {
		fmt.Fprintf(tw, "failure-log records\t%d\n", r.FailureRecords)
	}
}

// printConsumer prints the hold, the consumer process's CPU and memory,
// the CPU bound, this process's memory and the profiles written.
func printConsumer(tw io.Writer, r *bench.Result, cfg bench.Config) {
	if h := r.Hold; h != nil {
		fmt.Fprintf(tw, "hold\t%.1f s\t(%d events taken in, %d unacked at the end, intake stopped for the last %.1f s)\n",
			h.Seconds, h.TakenIn, h.AckPending, h.PausedSeconds)
	}
	if p := r.Consumer; p != nil {
		fmt.Fprintf(tw, "consumer process\tCPU %.2f s = %.1f µs/event, peak RSS %.1f MiB\t(pid %d, its own process, from ready to the end of the run; RSS at the end %.1f MiB)\n",
			p.CPUSeconds, p.CPUPerEvent, float64(p.PeakRSSBytes)/(1<<20), p.PID, float64(p.RSSBytes)/(1<<20))
	}
	if p := r.Consumer; p != nil && r.Hold == nil && p.CPUPerEvent > 0 {
		per := p.CPUPerEvent + r.BenchCPUPerEvent
		cores := float64(runtime.NumCPU()) - r.OtherCPU
		fmt.Fprintf(tw, "CPU bound\t%.0f events/s\t(%.2f cores left / (consumer %.1f + NATS, core stub and publisher %.1f µs/event); near end-to-end when the CPU bounds it)\n",
			cores/per*1e6, cores, p.CPUPerEvent, r.BenchCPUPerEvent)
	}
	what := "this process"
	if cfg.Embedded {
		what = "this process: NATS, the core stub, the publisher"
		if !cfg.ConsumerProcess {
			what += " and the consumer"
		}
	}
	fmt.Fprintf(tw, "peak RSS\t%.0f MiB\t(%s)\n", float64(r.PeakRSSBytes)/(1<<20), what)
	if len(r.Profiles) > 0 {
		cpu, heap := r.Profiles[:len(r.Profiles)-1], r.Profiles[len(r.Profiles)-1]
		if !strings.HasSuffix(heap, "-heap.pprof") {
			cpu, heap = r.Profiles, ""
		}
		fmt.Fprintf(tw, "consumer profiles\tCPU: go tool pprof -top %s\n", strings.Join(cpu, " "))
		if heap != "" {
			fmt.Fprintf(tw, "\theap at the end: go tool pprof -top -sample_index=inuse_space %s\n", heap)
		}
	}
}

// printParts prints the bare parts' rates and CPU per event.
func printParts(tw io.Writer, r *bench.Result) {
	fmt.Fprintf(tw, "\nbare parts, each its own process\tevents/s\tCPU µs/event\n")
	for _, p := range r.Parts {
		fmt.Fprintf(tw, "  %s\t%.0f\t%.1f\n", p.Part, p.Rate, p.CPUPerEvent)
	}
	fmt.Fprintf(tw, "  sum\t\t%.1f\n", r.PartsCPUPerEvent())
	if x := r.CPURatio(); x > 0 {
		fmt.Fprintf(tw, "  consumer / sum\t\t%.2f\t(target ≤ 1.3)\n", x)
	}
}

// printCeilings prints the ceilings measured in the same run, with the
// end-to-end rate as a share of each.
func printCeilings(tw io.Writer, r *bench.Result, cfg bench.Config) {
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
	if r.CoreLimit != nil && cfg.CoreLatency > 0 {
		bound := r.CoreLimit.Mean / cfg.CoreLatency.Seconds()
		fmt.Fprintf(tw, "  core limit (mean) / core latency\t%.0f\t%.2f\n", bound, r.EndToEndRate/bound)
	}
}

// printVerdicts prints each target of sc with its value in every run, the
// median and whether it is met.
func printVerdicts(w io.Writer, sc *bench.Scenario, verdicts []bench.Verdict, runs []*bench.Result) {
	var loads, others []string
	for _, r := range runs {
		loads = append(loads, fmt.Sprintf("%.1f", r.LoadAverage))
		others = append(others, fmt.Sprintf("%.2f", r.OtherCPU-r.KernelCPU))
	}
	fmt.Fprintf(w, "scenario %s: %s\n%d run(s), load average at their start %s, cores used by other processes during them %s\n",
		sc.Name, sc.Summary, len(runs), strings.Join(loads, ", "), strings.Join(others, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target\tper run\tmedian\twant\tverdict\n")
	for _, v := range verdicts {
		var vals []string
		for _, x := range v.Values {
			vals = append(vals, fmt.Sprintf("%.2f", x))
		}
		verdict := "MISSED"
		switch {
		case len(v.Values) == 0:
			verdict = "not measured"
		case v.Met:
			verdict = "met"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\n", v.Target, strings.Join(vals, " "), v.Median, v.Want, verdict)
	}
	tw.Flush()
}

func percentiles(l *bench.Latency) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
