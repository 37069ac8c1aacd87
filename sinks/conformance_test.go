package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hackaverse/bhiv"
)

// This file holds the sink conformance test, which every sink must pass,
// and the test helpers the sink tests share: TestMain (goleak, subprocess
// children) and event makers.

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

// testTime is the time of the test events: late in the evening of
// 2026-11-27 in New York, already the 28th in UTC.
var testTime = time.Date(2026, 11, 27, 21, 30, 0, 0, time.FixedZone("EST", -5*3600))

// testEvent returns a valid event of kind with the given id and time
// testTime, whose data is padded to about pad bytes. The same arguments
// always give the same event.
func testEvent(tb testing.TB, kind bhiv.Kind, id string, pad int) *bhiv.Event {
	tb.Helper()
	data := map[string]any{"team_id": "team-" + id[:min(len(id), 3)]}
	switch kind {
	case bhiv.KindExecution:
		data["action"] = "deploy"
		data["duration_ms"] = 42
	case bhiv.KindReward:
		data["reward"] = 1.5
	}
	if pad > 0 {
		data["pad"] = strings.Repeat("x", pad)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		tb.Fatal(err)
	}
	ev, err := bhiv.New(kind, "test", id, json.RawMessage(raw))
	if err != nil {
		tb.Fatal(err)
	}
	ev.Time = testTime.UTC()
	return &ev
}

// Conformance describes a sink under the conformance test, as built by a
// constructor for one subtest.
type conformance struct {
	sink bhiv.Sink
	name string // the name its SinkErrors carry
	// stored returns the bodies the backend holds or received for the
	// event id, one per distinct stored copy (a sink that stores one copy
	// per event returns one, a sink that receives requests returns the
	// distinct bodies of its requests).
	stored func(id string) [][]byte
	// hang makes the backend slow or failing so that a delivery would take
	// far longer than the test (until release is called).
	hang func() (release func())
	// fail makes the backend fail every delivery quickly (until release).
	fail func() (release func())
	// close releases the sink.
	close func()
}

// runConformance runs the conformance test against the sinks newSink makes.
// Every sink must pass it.
func runConformance(t *testing.T, newSink func(t *testing.T) *conformance) {
	t.Run("idempotent", func(t *testing.T) {
		c := newSink(t)
		defer c.close()
		ev := testEvent(t, bhiv.KindReward, "01IDEMPOTENT", 100)
		for i := range 3 {
			if err := c.sink.Deliver(context.Background(), ev); err != nil {
				t.Fatalf("delivery %d: %v", i+1, err)
			}
		}
		// A copy of the event, as a redelivery would decode it.
		again := *ev
		if err := c.sink.Deliver(context.Background(), &again); err != nil {
			t.Fatalf("delivery of a copy: %v", err)
		}
		got := c.stored(ev.ID)
		if len(got) != 1 {
			t.Fatalf("the backend holds %d distinct copies of the event, want 1", len(got))
		}
		var back bhiv.Event
		if err := json.Unmarshal(got[0], &back); err != nil {
			t.Fatalf("stored body is not an envelope: %v\n%s", err, got[0])
		}
		if back.ID != ev.ID || !back.Time.Equal(ev.Time) || back.Type != ev.Type {
			t.Errorf("stored event %+v, want %+v", back, ev)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		c := newSink(t)
		defer c.close()
		release := c.hang()
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- c.sink.Deliver(ctx, testEvent(t, bhiv.KindExecution, "01CANCEL", 0)) }()
		time.Sleep(100 * time.Millisecond) // let it start
		cancel()
		// The backend would hold the delivery for minutes; a cancelled
		// delivery must return long before that.
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("Deliver returned nil on a hung backend with a cancelled context")
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Deliver error %v does not wrap context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Deliver did not return within 5s of its context being cancelled")
		}
		// An already-cancelled context.
		if err := c.sink.Deliver(ctx, testEvent(t, bhiv.KindExecution, "01CANCEL2", 0)); !errors.Is(err, context.Canceled) {
			t.Errorf("Deliver with a cancelled context: %v, want context.Canceled", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		c := newSink(t)
		defer c.close()
		const callers, each = 64, 8
		var wg sync.WaitGroup
		errs := make(chan error, callers*each)
		for g := range callers {
			wg.Go(func() {
				for i := range each {
					// Callers pair up on the same events: concurrent
					// deliveries of one event must be safe too.
					id := fmt.Sprintf("01CONC-%02d-%d", g/2, i)
					ev := testEvent(t, bhiv.Kinds[(g/2)%2], id, 200)
					if err := c.sink.Deliver(context.Background(), ev); err != nil {
						errs <- fmt.Errorf("caller %d event %s: %w", g, id, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for g := 0; g < callers; g += 2 {
			for i := range each {
				id := fmt.Sprintf("01CONC-%02d-%d", g/2, i)
				if got := c.stored(id); len(got) != 1 {
					t.Errorf("event %s: %d distinct copies stored, want 1", id, len(got))
				}
			}
		}
	})

	t.Run("classifies", func(t *testing.T) {
		c := newSink(t)
		defer c.close()
		release := c.fail()
		err := c.sink.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01FAIL", 0))
		release()
		if err == nil {
			t.Fatal("Deliver on a failing backend returned nil")
		}
		var se *bhiv.SinkError
		if !errors.As(err, &se) {
			t.Fatalf("Deliver error %T %v is not a *bhiv.SinkError", err, err)
		}
		switch se.Class {
		case bhiv.ClassRetryableExhausted, bhiv.ClassPermanent:
		default:
			t.Errorf("class %q, want retryable_exhausted or permanent", se.Class)
		}
		if se.Sink != c.name {
			t.Errorf("SinkError.Sink %q, want %q", se.Sink, c.name)
		}
		if se.Err == nil {
			t.Error("SinkError.Err is nil: the cause is lost")
		}
		// Once the backend is back, the same event goes through.
		if err := c.sink.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01FAIL", 0)); err != nil {
			t.Errorf("Deliver after the backend recovered: %v", err)
		}
	})
}

// switchSink delivers to whichever sink it currently points at.
type switchSink struct{ cur atomic.Pointer[Bucket] }

func (s *switchSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	return s.cur.Load().Deliver(ctx, ev)
}

// newBucketConformance builds a Bucket for the conformance test.
func newBucketConformance(noFsync bool) func(t *testing.T) *conformance {
	return func(t *testing.T) *conformance {
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
		return &conformance{
			sink: sw,
			name: BucketName,
			stored: func(id string) [][]byte {
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
			hang: func() func() {
				sw.cur.Store(slow)
				release := blockKinds()
				return func() { release(); sw.cur.Store(fast) }
			},
			fail:  blockKinds,
			close: func() { _ = slow.Close(); _ = fast.Close() },
		}
	}
}

func TestConformanceBucket(t *testing.T) {
	t.Run("durable", func(t *testing.T) { runConformance(t, newBucketConformance(false)) })
	t.Run("nofsync", func(t *testing.T) { runConformance(t, newBucketConformance(true)) })
}

// The Core sink runs the conformance test in TestCoreConformance (core_test.go).
