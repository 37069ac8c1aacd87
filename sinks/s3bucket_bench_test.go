package sinks

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/s3test"
)

// BenchmarkS3Bucket measures the S3Bucket's events/s at 64 deliveries in
// flight next to bare minio-go PutObject loops, by 64 goroutines, of the
// same bodies, to the same in-process S3 server (gofakes3 over loopback),
// in the same run, in short chunks, taking turns: "bare" is a plain PutObject,
// "bare-same-headers" adds what the bucket sends (Content-MD5 and
// If-None-Match: *). Both use a client built as the bucket's (minio-go
// with 256 idle connections per host). It reports events/s,
// bare-events/s, bare-same-headers-events/s, ratio (events/s ÷
// bare-events/s; target ≥ 0.8) and ratio-same-headers (events/s ÷
// bare-same-headers-events/s: what the sink itself costs).
//
//	go test -run '^$' -bench S3Bucket -benchtime 20000x ./sinks/
func BenchmarkS3Bucket(b *testing.B) {
	const inFlight = 64
	srv := s3test.Start(b, testS3Bucket)
	cfg := testS3Config(srv)
	cfg.Retries, cfg.Timeout = -1, 30*time.Second
	sink, err := NewS3Bucket(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	client, tr, err := newS3Client(cfg.WithDefaults())
	if err != nil {
		b.Fatal(err)
	}
	defer tr.CloseIdleConnections()

	n := max(b.N, inFlight)
	evs := make([]*bhiv.Event, n)
	bodies := make([][]byte, n)
	for i := range evs {
		evs[i] = testEvent(b, bhiv.KindExecution, fmt.Sprintf("01BENCH%08d", i), 300)
		enc, err := evs[i].JSON()
		if err != nil {
			b.Fatal(err)
		}
		bodies[i] = append(append([]byte{}, enc...), '\n')
	}
	ctx := context.Background()
	bare := func(prefix string, same bool) func(i int) error {
		return func(i int) error {
			opts := minio.PutObjectOptions{ContentType: "application/json"}
			if same {
				opts.SendContentMd5, opts.DisableMultipart = true, true
				opts.SetMatchETagExcept("*")
			}
			_, err := client.PutObject(ctx, testS3Bucket, fmt.Sprintf("%s/%s.json", prefix, evs[i].ID), bytes.NewReader(bodies[i]), int64(len(bodies[i])), opts)
			return err
		}
	}
	bucket := func(i int) error { return sink.Deliver(ctx, evs[i]) }

	// The three take turns, in chunks of about 500 events, and take turns
	// going first: the server slows down as it fills up, and the load of
	// the machine (shared with others) swings from one second to the next.
	loops := []func(int) error{bare("bare", false), bare("same", true), bucket}
	var took [3]time.Duration
	chunks := max(3, n/500)
	b.ResetTimer()
	for c := range chunks {
		lo, hi := n*c/chunks, n*(c+1)/chunks
		for k := range loops {
			j := (c + k) % len(loops)
			took[j] += runWriters(b, lo, hi, inFlight, loops[j])
		}
	}
	b.StopTimer()
	bareTime, sameTime, bucketTime := took[0], took[1], took[2]
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rate(bucketTime), "events/s")
	b.ReportMetric(rate(bareTime), "bare-events/s")
	b.ReportMetric(rate(sameTime), "bare-same-headers-events/s")
	b.ReportMetric(rate(bucketTime)/rate(bareTime), "ratio")
	b.ReportMetric(rate(bucketTime)/rate(sameTime), "ratio-same-headers")
}
