package bench

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEndToEnd measures publish → acked by the consumer (Core and a
// durable Bucket) at concurrency 64, with the core stub answering at once
// and after 20 ms, next to the ceilings of the parts measured in the same
// run. Targets (issue 4): instant Core ≥ 70% of the bucket ceiling; 20 ms
// Core ≥ 80% of min(concurrency / latency, bucket ceiling).
//
//	go test -run '^$' -bench EndToEnd -benchtime 1x ./internal/bench/
func BenchmarkEndToEnd(b *testing.B) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
	}{{"core=instant", 0}, {"core=20ms", 20 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			events := 10_000
			var last *Result
			for range b.N {
				r, err := Run(context.Background(), Config{Embedded: true, Dir: b.TempDir(), Events: events,
					Concurrency: 64, CoreLatency: tc.latency, Ceilings: true})
				if err != nil {
					b.Fatal(err)
				}
				last = r
			}
			r := last
			b.ReportMetric(r.EndToEndRate, "events/s")
			b.ReportMetric(r.PublishRate, "publish/s")
			if r.Latency != nil {
				b.ReportMetric(float64(r.Latency.P50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(r.Latency.P99.Microseconds())/1000, "p99-ms")
			}
			bucketCeiling := r.Ceilings[CeilingFilesFsync]
			for k, v := range r.Ceilings {
				b.ReportMetric(v, k+"/s")
			}
			target := bucketCeiling
			if tc.latency > 0 {
				target = min(64/tc.latency.Seconds(), bucketCeiling)
			}
			b.ReportMetric(r.EndToEndRate/target, "ratio-to-ceiling")
			b.ReportMetric(float64(r.FailureRecords), "failure-records")
		})
	}
}

// TestRunEmbedded runs a small embedded benchmark and checks what it reports.
func TestRunEmbedded(t *testing.T) {
	r, err := Run(context.Background(), Config{Embedded: true, Dir: t.TempDir(), Events: 500, Concurrency: 16, Ceilings: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != 500 || r.PublishRate <= 0 || r.EndToEndRate <= 0 || r.Latency == nil || r.Latency.P50 <= 0 || r.PeakRSSBytes <= 0 {
		t.Errorf("result = %+v", r)
	}
	if r.FailureRecords != 0 {
		t.Errorf("%d failure records", r.FailureRecords)
	}
	for _, k := range []string{CeilingPublish, CeilingConsume, CeilingHTTP, CeilingFiles, CeilingFilesFsync} {
		if r.Ceilings[k] <= 0 {
			t.Errorf("ceiling %s = %v", k, r.Ceilings[k])
		}
	}
}
