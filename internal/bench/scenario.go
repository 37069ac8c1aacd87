package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// Scenario is one of issue 13's benchmarks: the settings of a run and the
// targets it is judged by.
type Scenario struct {
	Name    string
	Summary string
	// Config holds the scenario's settings; the caller adds the commands,
	// the directory and anything the user changed.
	Config  Config
	Targets []Target
}

// Target is a figure of a run and the bound it should meet.
type Target struct {
	Name  string  // what is compared, as printed
	Max   bool    // the bound is a maximum (else a minimum)
	Bound float64 //
	// Value returns the figure of a run, false when the run did not
	// measure it.
	Value func(*Result) (float64, bool)
}

// Want returns the target as text, such as "≥ 0.80".
func (t Target) Want() string {
	if t.Max {
		return "≤ " + strconv.FormatFloat(t.Bound, 'f', -1, 64)
	}
	return "≥ " + strconv.FormatFloat(t.Bound, 'f', -1, 64)
}

// Met reports whether v meets the target.
func (t Target) Met(v float64) bool {
	if t.Max {
		return v <= t.Bound
	}
	return v >= t.Bound
}

// Verdict is a target judged over several runs, by their median.
type Verdict struct {
	Target string    `json:"target"`
	Want   string    `json:"want"`
	Values []float64 `json:"values"` // per run that measured it
	Median float64   `json:"median"`
	Met    bool      `json:"met"`
}

// Verdicts judges every target by the median over runs.
func Verdicts(targets []Target, runs []*Result) []Verdict {
	var out []Verdict
	for _, t := range targets {
		v := Verdict{Target: t.Name, Want: t.Want()}
		for _, r := range runs {
			if x, ok := t.Value(r); ok {
				v.Values = append(v.Values, x)
			}
		}
		if len(v.Values) > 0 {
			v.Median = median(v.Values)
			v.Met = t.Met(v.Median)
		}
		out = append(out, v)
	}
	return out
}

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// The targets of issue 13.
var (
	// TargetBucketCeiling: end-to-end ≥ 0.8 of the grouped-sync bucket
	// ceiling measured in the same run (the mean of before and after).
	TargetBucketCeiling = Target{Name: "end-to-end / grouped-sync bucket ceiling", Bound: 0.8, Value: func(r *Result) (float64, bool) {
		c := r.Ceiling(CeilingFilesSyncfs)
		return r.EndToEndRate / c, c > 0 && r.EndToEndRate > 0
	}}
	// TargetCPU: the consumer's CPU per event ≤ 1.3 × the sum of the bare
	// parts' in the same run.
	TargetCPU = Target{Name: "consumer CPU per event / sum of the parts'", Max: true, Bound: 1.3, Value: func(r *Result) (float64, bool) {
		x := r.CPURatio()
		return x, x > 0
	}}
	// TargetCoreRate: Core's rate ≥ 0.85 of what the stub can take
	// (capacity / latency).
	TargetCoreRate = Target{Name: "Core's rate / (capacity / latency)", Bound: 0.85, Value: func(r *Result) (float64, bool) {
		return r.CoreRate / r.CoreBound, r.CoreBound > 0
	}}
	// TargetBucketLag: publish → file in the bucket, p99 ≤ 1 s.
	TargetBucketLag = Target{Name: "bucket lag p99, seconds", Max: true, Bound: 1, Value: func(r *Result) (float64, bool) {
		if r.BucketLag == nil {
			return 0, false
		}
		return r.BucketLag.P99.Seconds(), true
	}}
	// TargetRSS: the consumer process's peak RSS ≤ 64 MiB.
	TargetRSS = Target{Name: "consumer peak RSS, MiB", Max: true, Bound: 64, Value: func(r *Result) (float64, bool) {
		if r.Consumer == nil {
			return 0, false
		}
		return float64(r.Consumer.PeakRSSBytes) / (1 << 20), true
	}}
	// TargetStopped is the memory scenario's premise, not a target of the
	// issue: the consumer's intake had stopped (paused, or MaxAckPending
	// reached) for HoldQuiet at the end of the hold, so that its memory
	// was measured holding all it would take in.
	TargetStopped = Target{Name: "intake stopped at the end for, seconds (premise)", Bound: HoldQuiet.Seconds(), Value: func(r *Result) (float64, bool) {
		if r.Hold == nil {
			return 0, false
		}
		return r.Hold.PausedSeconds, true
	}}
)

// Scenarios are issue 13's benchmarks. Each runs the consumer as its own
// process.
var Scenarios = []Scenario{
	{
		Name:    "instant",
		Summary: "instant Core: end-to-end vs the grouped-sync bucket ceiling, and the consumer's CPU per event vs the bare parts'",
		Config:  Config{Embedded: true, ConsumerProcess: true, Events: 20_000, Ceilings: true, Parts: true},
		Targets: []Target{TargetBucketCeiling, TargetCPU},
	},
	{
		Name:    "core-20ms",
		Summary: "20 ms Core, unlimited capacity: end-to-end vs the grouped-sync bucket ceiling",
		Config:  Config{Embedded: true, ConsumerProcess: true, Events: 20_000, CoreLatency: 20 * time.Millisecond, Ceilings: true},
		Targets: []Target{TargetBucketCeiling},
	},
	{
		Name: "slow-core",
		Summary: "1 s Core serving 256 requests at once, 1,000 events/s published for 10 s (BHIV_MAX_ACK_PENDING 20,000): " +
			"Core's rate vs 256/s, and the bucket's lag while Core catches up",
		Config: Config{Embedded: true, ConsumerProcess: true, Duration: 10 * time.Second, Rate: 1000, CoreLatency: time.Second,
			CoreCapacity: 256, MaxAckPending: 20_000},
		Targets: []Target{TargetCoreRate, TargetBucketLag},
	},
	{
		Name:    "memory",
		Summary: "a backlog of 100,000 events and Core down (503): the consumer's peak RSS once its intake has stopped for 10 s (at most 60 s)",
		Config:  Config{Embedded: true, ConsumerProcess: true, Events: 100_000, Preload: true, CoreDown: true, Hold: time.Minute},
		Targets: []Target{TargetRSS, TargetStopped},
	},
}

// ScenarioNamed returns the scenario called name.
func ScenarioNamed(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// RunN runs c n times, each in a new directory under c.Dir (a temporary
// one when empty, removed at the end; a given one is kept), calling each
// after every run. The directories stay until every run is done: removing
// thousands of files makes the next creations on ext4 several times slower
// for a while.
func RunN(ctx context.Context, c Config, n int, each func(i int, r *Result)) ([]*Result, error) {
	root, cleanup, err := workDir(c.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var out []*Result
	for i := range n {
		rc := c
		if n > 1 {
			d, err := os.MkdirTemp(root, fmt.Sprintf("run-%d-", i+1))
			if err != nil {
				return out, err
			}
			rc.Dir = d
			if c.ConsumerProfile != "" {
				rc.ConsumerProfile = fmt.Sprintf("%s-run%d", c.ConsumerProfile, i+1)
			}
		} else {
			rc.Dir = root
		}
		r, err := Run(ctx, rc)
		if err != nil {
			return out, fmt.Errorf("run %d of %d: %w", i+1, n, err)
		}
		out = append(out, r)
		if each != nil {
			each(i, r)
		}
	}
	return out, nil
}
