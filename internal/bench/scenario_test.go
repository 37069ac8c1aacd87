package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRunConsumerProcess runs the consumer as its own process (the real
// `bhiv consume`) against a core stub with a capacity, latency and jitter,
// with the bare parts and a CPU profile of the consumer, and checks what it
// reports.
func TestRunConsumerProcess(t *testing.T) {
	defer func(w time.Duration) { profileWindow = w }(profileWindow)
	profileWindow = time.Second
	dir := t.TempDir()
	const events = 300
	r, err := Run(context.Background(), Config{Embedded: true, Dir: dir, Events: events, Concurrency: 16,
		ConsumerProcess: true, ConsumerCmd: consumerCmd(t), ConsumerProfile: filepath.Join(dir, "cpu"),
		Parts: true, PartCmd: partCmd(t),
		CoreLatency: 5 * time.Millisecond, CoreLatencyJitter: 2 * time.Millisecond, CoreCapacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != events || r.EndToEndRate <= 0 || r.FailureRecords != 0 || r.OtherCPU < 0 || r.OtherCPU > float64(runtime.NumCPU()) ||
		r.MachineBusy <= 0 || r.MachineBusy > 1 || r.BenchCPUPerEvent <= 0 || r.KernelCPU < 0 || r.KernelCPU > r.OtherCPU {
		t.Errorf("result %+v", r)
	}
	// The consumer's own figures, measured in its process.
	if p := r.Consumer; p == nil || p.PID <= 0 || p.PID == os.Getpid() || p.CPUSeconds <= 0 || p.CPUPerEvent != p.CPUSeconds/events*1e6 ||
		p.PeakRSSBytes < 1<<20 || p.RSSBytes <= 0 || p.RSSBytes > p.PeakRSSBytes {
		t.Errorf("consumer %+v", r.Consumer)
	}
	// The stub serves 4 requests at once, 5 ms ± 2 ms each: 800/s at most,
	// and the consumer sends more than 4 at once.
	if r.CoreBound != 800 || r.CoreAccepted != events || r.CoreRate <= 0 || r.CoreRate > 1.2*800 || r.CoreMaxQueued <= 0 {
		t.Errorf("core: bound %v, accepted %d, rate %v, max queued %d", r.CoreBound, r.CoreAccepted, r.CoreRate, r.CoreMaxQueued)
	}
	// Core's limit, read from the consumer process's /metrics.
	if l := r.CoreLimit; l == nil || l.Min < 1 || l.Mean < float64(l.Min) || l.Mean > float64(l.Max) || l.Last < l.Min || l.Last > l.Max {
		t.Errorf("core limit %+v", l)
	}
	if l := r.CoreLatency; l == nil || l.Count != events || l.P50 < 3*time.Millisecond {
		t.Errorf("core latency %+v", l)
	}
	if l := r.BucketLag; l == nil || l.Count != events {
		t.Errorf("bucket lag %+v", l)
	}
	// Each part in its own process, at the run's size.
	if len(r.Parts) != 3 {
		t.Fatalf("parts %+v", r.Parts)
	}
	sum := 0.0
	for i, want := range []string{PartConsumeAck, PartHTTPPost, PartFiles} {
		p := r.Parts[i]
		if p.Part != want || p.Events != events || p.CPUSeconds <= 0 || p.Seconds <= 0 || p.Rate <= 0 || p.CPUPerEvent != p.CPUSeconds/events*1e6 {
			t.Errorf("part %d: %+v, want %s", i, p, want)
		}
		sum += p.CPUPerEvent
	}
	if r.PartsCPUPerEvent() != sum || r.CPURatio() != r.Consumer.CPUPerEvent/sum {
		t.Errorf("parts sum %v, ratio %v", r.PartsCPUPerEvent(), r.CPURatio())
	}
	// The profiles are gzipped protocol buffers, as the profiler writes:
	// CPU, then the heap at the end.
	if len(r.Profiles) < 2 || !strings.HasSuffix(r.Profiles[len(r.Profiles)-1], "cpu-heap.pprof") {
		t.Errorf("consumer profiles %v", r.Profiles)
	}
	for _, f := range r.Profiles {
		if b, err := os.ReadFile(f); err != nil || !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			t.Errorf("profile %s: %v, %d bytes", f, err, len(b))
		}
	}
	// Its log is the consumer's.
	if b, err := os.ReadFile(filepath.Join(dir, "consumer.log")); err != nil || !strings.Contains(string(b), "bhiv consume starting") {
		t.Errorf("consumer log: %v\n%s", err, b)
	}
}

// TestRunHold publishes a backlog with Core down and holds the consumer
// process: it takes in at most the durable's MaxAckPending, acks nothing,
// and the bench says so; the hold ends once intake has stopped for the
// quiet time, long before its limit.
func TestRunHold(t *testing.T) {
	defer func(q time.Duration) { holdQuiet = q }(holdQuiet)
	holdQuiet = time.Second
	r, err := Run(context.Background(), Config{Embedded: true, Dir: t.TempDir(), Events: 300, Preload: true, CoreDown: true,
		Hold: time.Minute, MaxAckPending: 50, ConsumerProcess: true, ConsumerCmd: consumerCmd(t)})
	if err != nil {
		t.Fatal(err)
	}
	h := r.Hold
	if h == nil || h.Seconds < 1 || h.Seconds > 30 || h.TakenIn <= 0 || h.TakenIn > 50 || h.AckPending != h.TakenIn ||
		h.PausedSeconds < 1 || h.PausedSeconds > h.Seconds {
		t.Errorf("hold %+v", h)
	}
	if r.Events != 300 || r.EndToEndRate != 0 || r.CoreAccepted != 0 || r.BucketLag != nil {
		t.Errorf("result %+v", r)
	}
	if p := r.Consumer; p == nil || p.PeakRSSBytes <= 0 || h != nil && h.TakenIn > 0 && p.CPUPerEvent != p.CPUSeconds/float64(h.TakenIn)*1e6 {
		t.Errorf("consumer %+v", p)
	}
}

// TestRunN runs twice, each run in its own new directory under the one
// given, kept.
func TestRunN(t *testing.T) {
	dir := t.TempDir()
	var seen []int
	rs, err := RunN(context.Background(), Config{Embedded: true, Dir: dir, Events: 50, Concurrency: 4}, 2, func(i int, r *Result) {
		seen = append(seen, i)
		if r.Events != 50 {
			t.Errorf("run %d: %+v", i, r)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	runs, _ := filepath.Glob(filepath.Join(dir, "run-*", "bucket"))
	if len(rs) != 2 || len(seen) != 2 || seen[1] != 1 || len(runs) != 2 {
		t.Errorf("%d results, calls %v, run directories %v", len(rs), seen, runs)
	}
}

func TestValidate(t *testing.T) {
	cmd := []string{"bhiv", "consume"}
	for _, tc := range []struct {
		c    Config
		want string // in the error; "" = valid
	}{
		{Config{Embedded: true}, ""},
		{Config{Embedded: true, ConsumerProcess: true, ConsumerCmd: cmd, ConsumerProfile: "p", Parts: true, PartCmd: cmd, CoreCapacity: 2}, ""},
		{Config{Embedded: true, Preload: true, CoreDown: true, Hold: time.Second}, ""},
		{Config{NATSURL: "nats://x"}, ""},
		{Config{}, "NATS URL"},
		{Config{Embedded: true, CoreCapacity: -1}, "negative"},
		{Config{Embedded: true, Hold: -1}, "negative"},
		{Config{NATSURL: "nats://x", CoreCapacity: 4}, "embedded core stub"},
		{Config{NATSURL: "nats://x", CoreDown: true, Hold: time.Second}, "embedded core stub"},
		{Config{NATSURL: "nats://x", ConsumerProcess: true, ConsumerCmd: cmd}, "need the embedded stack"},
		{Config{NATSURL: "nats://x", MaxAckPending: 10}, "need the embedded stack"},
		{Config{Embedded: true, ConsumerProcess: true}, "bhiv consume"},
		{Config{Embedded: true, ConsumerProfile: "p"}, "own process"},
		{Config{Embedded: true, Parts: true}, "part process"},
		{Config{Embedded: true, CoreDown: true}, "hold"},
		{Config{Embedded: true, CoreDown: true, Hold: time.Second, Ceilings: true}, "no HTTP ceiling"},
	} {
		err := tc.c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.c, err, tc.want)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		line string
		want time.Duration
		bad  bool
	}{
		// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
		{line: "42 (bhiv) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 9 0", want: 3800 * time.Millisecond},
		{line: "42 (a b) c)) R 1 42 42 0 -1 0 0 0 0 0 1 2 0 0", want: 30 * time.Millisecond},
		{line: "42 (bhiv) S 1 42", bad: true},
		{line: "42 bhiv S 1 42 42 0 -1 0 0 0 0 0 1 2", bad: true},
		{line: "42 (bhiv) S 1 42 42 0 -1 0 0 0 0 0 x 2 0", bad: true},
	} {
		got, err := parseStatCPU([]byte(tc.line))
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, %v; want %v (error: %v)", tc.line, got, err, tc.want, tc.bad)
		}
	}
	// This process's own CPU time, read the same way; the kernel threads'
	// (kthreadd's children: the flag is set) and the machine's.
	if cpu, err := procCPU(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("procCPU(self) = %v, %v", cpu, err)
	}
	if k, busy := kernelCPU(), machineBusy(); k <= 0 || busy <= k {
		t.Errorf("kernel threads and interrupts %v, machine busy %v", k, busy)
	}
}

func TestVerdicts(t *testing.T) {
	min := Target{Name: "rate", Bound: 0.8, Value: func(r *Result) (float64, bool) { return r.EndToEndRate, r.EndToEndRate > 0 }}
	max := Target{Name: "rss", Max: true, Bound: 64, Value: func(r *Result) (float64, bool) {
		return float64(r.PeakRSSBytes), r.PeakRSSBytes > 0
	}}
	runs := []*Result{{EndToEndRate: 0.9, PeakRSSBytes: 70}, {EndToEndRate: 0.7, PeakRSSBytes: 60}, {EndToEndRate: 0.85}}
	got := Verdicts([]Target{min, max}, runs)
	want := []Verdict{
		{Target: "rate", Want: "≥ 0.8", Values: []float64{0.9, 0.7, 0.85}, Median: 0.85, Met: true},
		{Target: "rss", Want: "≤ 64", Values: []float64{70, 60}, Median: 65, Met: false},
	}
	if len(got) != 2 {
		t.Fatalf("verdicts %+v", got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Target != w.Target || g.Want != w.Want || g.Median != w.Median || g.Met != w.Met || len(g.Values) != len(w.Values) {
			t.Errorf("verdict %d = %+v, want %+v", i, g, w)
		}
	}
	if v := Verdicts([]Target{min}, []*Result{{}}); v[0].Met || len(v[0].Values) != 0 {
		t.Errorf("not measured: %+v", v[0])
	}
	for _, s := range Scenarios {
		if got, ok := ScenarioNamed(s.Name); !ok || got.Name != s.Name || len(got.Targets) == 0 || !got.Config.ConsumerProcess {
			t.Errorf("scenario %s: %+v", s.Name, got)
		}
	}
	if _, ok := ScenarioNamed("nope"); ok {
		t.Error("scenario nope found")
	}
}
