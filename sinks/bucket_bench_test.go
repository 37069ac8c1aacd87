package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// BenchmarkBucket measures Bucket events/s at 1, 8 and 64 concurrent
// writers, with durability on and off, next to its ceiling measured in the
// same run: bare temp file + write + close + rename with no fsync, by the
// same number of writers, of the same bodies, into a fresh directory. It
// reports events/s, bare-events/s and ratio (events/s ÷ bare-events/s).
// Target: ratio ≥ 0.6 for durable at 64 writers.
func BenchmarkBucket(b *testing.B) {
	for _, durable := range []bool{true, false} {
		for _, writers := range []int{1, 8, 64} {
			name := fmt.Sprintf("durable=%v/writers=%d", durable, writers)
			b.Run(name, func(b *testing.B) { benchBucket(b, durable, writers) })
		}
	}
}

func benchBucket(b *testing.B, durable bool, writers int) {
	n := max(b.N, writers)
	evs := make([]*bhiv.Event, n)
	bodies := make([][]byte, n)
	for i := range evs {
		evs[i] = testEvent(b, bhiv.KindExecution, fmt.Sprintf("01BENCH%08d", i), 300)
		data, err := json.Marshal(evs[i])
		if err != nil {
			b.Fatal(err)
		}
		bodies[i] = append(data, '\n')
	}
	root := benchDir(b)

	// The ceiling: bare temp+rename, no fsync, same layout.
	bareDir := filepath.Join(root, "bare", "execution", "2026-11-28")
	if err := os.MkdirAll(bareDir, 0o750); err != nil {
		b.Fatal(err)
	}
	bareWrite := func(i int) error {
		final := filepath.Join(bareDir, evs[i].ID+".json")
		tmp := filepath.Join(bareDir, tmpPrefix+evs[i].ID+".json-"+randomSuffix())
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			return err
		}
		if _, err := f.Write(bodies[i]); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, final)
	}
	bk, err := NewBucket(BucketConfig{Dir: filepath.Join(root, "bucket"), NoFsync: !durable})
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	ctx := context.Background()
	bucketWrite := func(i int) error { return bk.Deliver(ctx, evs[i]) }

	// The two alternate in chunks, so that both meet the same state of a
	// disk shared with others. Before each, a sync (not timed) writes back
	// what is dirty, so that a syncfs of the Bucket does not pay for the
	// data the bare run left in the page cache.
	rootDir, err := os.Open(root)
	if err != nil {
		b.Fatal(err)
	}
	defer rootDir.Close()
	settle := func() {
		b.StopTimer()
		if err := syncfs(rootDir); err != nil && haveSyncfs {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	const chunks = 4
	var bareTime, bucketTime time.Duration
	b.ResetTimer()
	for c := range chunks {
		lo, hi := n*c/chunks, n*(c+1)/chunks
		settle()
		bareTime += runWriters(b, lo, hi, writers, bareWrite)
		settle()
		bucketTime += runWriters(b, lo, hi, writers, bucketWrite)
	}
	b.StopTimer()
	bare := float64(n) / bareTime.Seconds()
	got := float64(n) / bucketTime.Seconds()

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(got, "events/s")
	b.ReportMetric(bare, "bare-events/s")
	b.ReportMetric(got/bare, "ratio")
	if durable {
		b.ReportMetric(float64(bk.synced.Load())/2/float64(max(bk.syncs.Load(), 1)), "files/sync")
	}
}

// runWriters calls fn for lo..hi-1 from the given number of goroutines and
// returns the time it took.
func runWriters(b *testing.B, lo, hi, writers int, fn func(i int) error) time.Duration {
	var next atomic.Int64
	next.Store(int64(lo))
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= hi {
					return
				}
				if err := fn(i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return el
}
