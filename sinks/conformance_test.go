package sinks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/sinks/sinktest"
)

// This file runs the sink conformance test (package sinktest) against the
// Bucket, and holds the test helpers the sink tests share: TestMain
// (goleak, subprocess children) and event makers.

// childEnv names the environment variable that makes the test binary run as
// a child process (crash tests) instead of running tests.
const childEnv = "BHIV_SINKS_TEST_CHILD"

// children are the child processes the test binary can be, by name.
var children = map[string]func() int{}

// benchRoots are directories benchmarks leave in place until every
// benchmark is over: deleting many files just before creating many makes
// ext4 several times slower, which would skew the next run's comparison.
var (
	benchRootsMu sync.Mutex
	benchRoots   []string
)

// benchDir returns a fresh directory that is removed only when the test
// binary ends.
func benchDir(b *testing.B) string {
	b.Helper()
	d, err := os.MkdirTemp("", "bhiv-bench-")
	if err != nil {
		b.Fatal(err)
	}
	benchRootsMu.Lock()
	benchRoots = append(benchRoots, d)
	benchRootsMu.Unlock()
	return d
}

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		child, ok := children[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown child %q\n", name)
			os.Exit(2)
		}
		os.Exit(child())
	}
	code := m.Run()
	benchRootsMu.Lock()
	for _, d := range benchRoots {
		_ = os.RemoveAll(d)
	}
	benchRootsMu.Unlock()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testTime is the time of the test events (sinktest.EventTime).
var testTime = sinktest.EventTime

// testEvent returns a valid event (sinktest.Event).
func testEvent(tb testing.TB, kind bhiv.Kind, id string, pad int) *bhiv.Event {
	tb.Helper()
	return sinktest.Event(tb, kind, id, pad)
}

// switchSink delivers to whichever sink it currently points at.
type switchSink struct{ cur atomic.Pointer[Bucket] }

func (s *switchSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	return s.cur.Load().Deliver(ctx, ev)
}

// newBucketConformance builds a Bucket for the conformance test.
func newBucketConformance(noFsync bool) func(t *testing.T) *sinktest.Harness {
	return func(t *testing.T) *sinktest.Harness {
		dir := t.TempDir()
		// Two Buckets on one directory: a patient one for hang, which
		// would retry for 20s, and a quick one for everything else.
		slow, err := NewBucket(BucketConfig{Dir: dir, NoFsync: noFsync, Retries: 1000, RetryDelay: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		fast, err := NewBucket(BucketConfig{Dir: dir, NoFsync: noFsync, Retries: 2, RetryDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		sw := &switchSink{}
		sw.cur.Store(fast)
		// blockKinds puts files where the kind directories must be: every
		// write then fails with ENOTDIR, a retryable disk error.
		blockKinds := func() func() {
			for _, k := range bhiv.Kinds {
				if err := os.WriteFile(filepath.Join(dir, string(k)), nil, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			return func() {
				for _, k := range bhiv.Kinds {
					_ = os.Remove(filepath.Join(dir, string(k)))
				}
			}
		}
		return &sinktest.Harness{
			Sink: sw,
			Name: BucketName,
			Stored: func(id string) [][]byte {
				var out [][]byte
				for _, k := range bhiv.Kinds {
					matches, _ := filepath.Glob(filepath.Join(dir, string(k), "*", id+".json"))
					for _, m := range matches {
						data, err := os.ReadFile(m)
						if err != nil {
							t.Error(err)
							continue
						}
						out = append(out, data)
					}
				}
				return out
			},
			Hang: func() func() {
				sw.cur.Store(slow)
				release := blockKinds()
				return func() { release(); sw.cur.Store(fast) }
			},
			Fail:  blockKinds,
			Close: func() { _ = slow.Close(); _ = fast.Close() },
		}
	}
}

func TestConformanceBucket(t *testing.T) {
	t.Run("durable", func(t *testing.T) { sinktest.Run(t, newBucketConformance(false)) })
	t.Run("nofsync", func(t *testing.T) { sinktest.Run(t, newBucketConformance(true)) })
}

// The Core sink runs the conformance test in TestCoreConformance (core_test.go).
