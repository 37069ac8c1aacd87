package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestBenchEmbedded runs `bhiv bench --embedded` in-process and checks the
// table and the JSON it prints (what is measured, not how fast).
func TestBenchEmbedded(t *testing.T) {
	out, errOut, err := runBhiv(t, context.Background(), nil,
		"bench", "--embedded", "--events", "2000", "--concurrency", "16", "--ceilings", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^events\s+2000$`),
		regexp.MustCompile(`(?m)^publish rate\s+[1-9]\d* events/s$`),
		regexp.MustCompile(`(?m)^end-to-end\s+[1-9]\d* events/s`),
		regexp.MustCompile(`(?m)^latency publish → Core\s+p50 \d+\.\dms  p90 \d+\.\dms  p99 \d+\.\dms  max \d+\.\dms$`),
		regexp.MustCompile(`(?m)^latency publish → ack\s+p50 \d+\.\dms  p90 \d+\.\dms  p99 \d+\.\dms  max \d+\.\dms`),
		regexp.MustCompile(`(?m)^core concurrency limit\s+mean [1-9]\d*  min [1-9]\d*  max [1-9]\d*  at the end [1-9]\d*\s+\(adaptive`),
		regexp.MustCompile(`(?m)^failure-log records\s+0$`),
		regexp.MustCompile(`(?m)^peak RSS\s+[1-9]\d* MiB`),
	} {
		if !want.MatchString(out) {
			t.Errorf("table lacks %s:\n%s", want, out)
		}
	}
	for _, k := range []string{"jetstream_publish_async", "jetstream_consume_ack", "http_post"} {
		if !regexp.MustCompile(`(?m)^  ` + k + `\s+[1-9]\d*\s+\d+\.\d\d$`).MatchString(out) {
			t.Errorf("table lacks the ceiling %s with its ratio:\n%s", k, out)
		}
	}
	// The file ceilings are measured before and after the run.
	for _, k := range []string{"file_temp_rename", "file_temp_fsync_rename", "file_temp_rename_grouped_syncfs"} {
		if !regexp.MustCompile(`(?m)^  ` + k + `\s+[1-9]\d*\s+\d+\.\d\d\s+\(mean of [1-9]\d* before the run and [1-9]\d* after\)$`).MatchString(out) {
			t.Errorf("table lacks the ceiling %s with its ratio, before and after:\n%s", k, out)
		}
	}
	if strings.Contains(out, "/ core latency") || strings.Contains(out, "CPU bound") {
		t.Errorf("a latency bound without --core-latency:\n%s", out)
	}

	out, errOut, err = runBhiv(t, context.Background(), map[string]string{"BHIV_CONCURRENCY": "8"}, "bench", "--embedded", "--events", "500",
		"--mix", "reward=1", "--core-latency", "2ms", "--core-capacity", "4", "--json", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench --json: %v\n%s", err, errOut)
	}
	var r struct {
		Events         int     `json:"events"`
		PublishRate    float64 `json:"publish_rate"`
		EndToEndRate   float64 `json:"end_to_end_rate"`
		FailureRecords *int    `json:"failure_records"`
		PeakRSS        int64   `json:"peak_rss_bytes"`
		Core, Ack      *struct {
			Count              int
			P50, P90, P99, Max int64
		}
		Ceilings  map[string]float64                      `json:"ceilings"`
		CoreLimit *struct{ Mean, Min, Max, Last float64 } `json:"core_limit"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("JSON %q: %v", out, err)
	}
	var raw map[string]json.RawMessage
	json.Unmarshal([]byte(out), &raw)
	json.Unmarshal(raw["latency_core"], &r.Core)
	json.Unmarshal(raw["latency_ack"], &r.Ack)
	if l := r.CoreLimit; l == nil || l.Min < 1 || l.Max < l.Mean || l.Mean < l.Min || l.Last < l.Min || l.Last > l.Max {
		t.Errorf("core_limit in %s", out)
	}
	if r.Events != 500 || r.PublishRate <= 0 || r.EndToEndRate <= 0 || r.FailureRecords == nil || *r.FailureRecords != 0 || r.PeakRSS <= 0 || r.Ceilings != nil {
		t.Errorf("JSON %s", out)
	}
	// The core stub waits 2 ms before it accepts an event.
	if r.Core == nil || r.Core.Count != 500 || r.Core.P50 < 2e6 || r.Ack == nil || r.Ack.Count != 500 || r.Ack.P50 < r.Core.P50/2 {
		t.Errorf("latencies in %s", out)
	}

	for _, args := range [][]string{
		{"--embedded", "--mix", "execution=0,reward=0"},
		{"--embedded", "--mix", "deploy=1"},
		{"--embedded", "--events", "-1"},
		{"--core-latency", "20ms"}, // a setting of the embedded stub
		{"--core-capacity", "8"},   // another
		{"--embedded", "--core-capacity", "-1"},
	} {
		if _, errOut, err := runBhiv(t, context.Background(), nil, append([]string{"bench"}, args...)...); exitCode(err) != 2 {
			t.Errorf("bench %v: exit %d (%v), want 2\n%s", args, exitCode(err), err, errOut)
		}
	}
}

// TestBenchScenario runs `bhiv bench --scenario` as a subprocess (the real
// binary, so that its consumer is `bhiv consume` and its parts `bhiv bench
// --part`, each its own process) at tiny sizes, and checks the tables and
// the verdicts it prints, then the JSON of the memory scenario.
func TestBenchScenario(t *testing.T) {
	bin, err := exec.LookPath("bhiv")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "bench", "--scenario", "instant", "--runs", "2", "--events", "100", "--concurrency", "16",
		"--dir", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("bench --scenario instant: %v\n%s", err, out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^== run 1 of 2$`),
		regexp.MustCompile(`(?m)^== run 2 of 2$`),
		regexp.MustCompile(`(?m)^load average\s+\d+\.\d\d\s+\(at the start; while the consumer ran the machine's \d+ cores were \d+% busy, \d+\.\d\d cores of it outside the bench and the consumer: kernel threads and interrupts \d+\.\d\d, other processes -?\d+\.\d\d`),
		regexp.MustCompile(`(?m)^Core rate\s+[1-9]\d* events/s\s+\(100 accepted`),
		regexp.MustCompile(`(?m)^latency publish → bucket\s+p50 -?\d+\.\dms .*its ctime, which reads up to \S+ early\)$`),
		regexp.MustCompile(`(?m)^consumer process\s+CPU \d+\.\d\d s = \d+\.\d µs/event, peak RSS \d+\.\d MiB\s+\(pid \d+, its own process`),
		regexp.MustCompile(`(?m)^core concurrency limit\s+mean [1-9]\d*  min [1-9]\d*  max [1-9]\d*  at the end [1-9]\d*\s+\(adaptive`),
		regexp.MustCompile(`(?m)^CPU bound\s+[1-9]\d* events/s\s+\(\d+\.\d\d cores left / \(consumer \d+\.\d \+ NATS, core stub and publisher \d+\.\d µs/event\)`),
		regexp.MustCompile(`(?m)^peak RSS\s+[1-9]\d* MiB\s+\(this process: NATS, the core stub, the publisher\)$`),
		regexp.MustCompile(`(?m)^  consume_ack\s+[1-9]\d*\s+\d+\.\d$`),
		regexp.MustCompile(`(?m)^  http_post\s+[1-9]\d*\s+\d+\.\d$`),
		regexp.MustCompile(`(?m)^  file_temp_rename_grouped_syncfs\s+[1-9]\d*\s+\d+\.\d$`),
		regexp.MustCompile(`(?m)^  consumer / sum\s+\d+\.\d\d\s+\(target ≤ 1\.3\)$`),
		regexp.MustCompile(`(?m)^  file_temp_rename_grouped_syncfs\s+[1-9]\d*\s+\d+\.\d\d\s+\(mean of`),
		regexp.MustCompile(`(?m)^scenario instant: .*\n2 run\(s\), load average at their start \d+\.\d, \d+\.\d, cores used by other processes during them -?\d+\.\d\d, -?\d+\.\d\d$`),
		regexp.MustCompile(`(?m)^end-to-end / grouped-sync bucket ceiling\s+\d+\.\d\d \d+\.\d\d\s+\d+\.\d\d\s+≥ 0\.8\s+(met|MISSED)$`),
		regexp.MustCompile(`(?m)^consumer CPU per event / sum of the parts'\s+\d+\.\d\d \d+\.\d\d\s+\d+\.\d\d\s+≤ 1\.3\s+(met|MISSED)$`),
	} {
		if !want.Match(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}

	// The memory scenario, shortened: a backlog, Core down, the consumer
	// held (for 1s: less than the quiet time that ends a hold early);
	// --max-ack-pending bounds what it takes in.
	out, err = exec.Command(bin, "bench", "--scenario", "memory", "--runs", "1", "--events", "300", "--hold", "1s",
		"--max-ack-pending", "40", "--json", "--dir", t.TempDir()).Output()
	if err != nil {
		t.Fatalf("bench --scenario memory: %v\n%s", err, out)
	}
	var r struct {
		Scenario string
		Runs     []struct {
			Events int
			Hold   struct {
				TakenIn int `json:"taken_in"`
			}
			Consumer struct {
				PeakRSSBytes int64 `json:"peak_rss_bytes"`
			}
		}
		Verdicts []struct {
			Target string
			Values []float64
			Met    bool
		}
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("JSON %s: %v", out, err)
	}
	if r.Scenario != "memory" || len(r.Runs) != 1 || r.Runs[0].Events != 300 || r.Runs[0].Hold.TakenIn <= 0 || r.Runs[0].Hold.TakenIn > 40 ||
		r.Runs[0].Consumer.PeakRSSBytes <= 0 ||
		len(r.Verdicts) != 2 || r.Verdicts[0].Target != "consumer peak RSS, MiB" || len(r.Verdicts[0].Values) != 1 ||
		r.Verdicts[1].Met || len(r.Verdicts[1].Values) != 1 {
		t.Errorf("JSON %s", out)
	}

	for _, args := range [][]string{
		{"--scenario", "nope"},
		{"--scenario", "instant", "--runs", "-1"},
		{"--embedded", "--consumer-cpuprofile", "cpu"}, // needs the consumer process
		{"--embedded", "--core-down"},                  // needs a hold
	} {
		if _, errOut, err := runBhiv(t, context.Background(), nil, append([]string{"bench"}, args...)...); exitCode(err) != 2 {
			t.Errorf("bench %v: exit %d (%v), want 2\n%s", args, exitCode(err), err, errOut)
		}
	}
	// In-process, the binary is a test binary, which must not be run as
	// `bhiv consume`.
	if _, _, err := runBhiv(t, context.Background(), nil, "bench", "--embedded", "--consumer-process", "--events", "10"); err == nil || !strings.Contains(err.Error(), "test binary") {
		t.Errorf("consumer process from a test binary: %v", err)
	}
}
