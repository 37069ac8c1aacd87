package sinks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// fakeSink records what it is given and fails the events in fail.
type fakeSink struct {
	mu        sync.Mutex
	delivered []string
	fail      map[string]bool
	block     chan struct{} // when set, Deliver waits for it
	entered   chan struct{} // when set, Deliver sends to it first
}

func (s *fakeSink) Deliver(ctx context.Context, ev *bhiv.Event) error {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail[ev.ID] {
		return &bhiv.SinkError{Sink: "core", Class: bhiv.ClassRetryableExhausted, Status: 502, Attempts: 3, Err: errors.New("bad gateway")}
	}
	s.delivered = append(s.delivered, ev.ID)
	return nil
}

func (s *fakeSink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.delivered...)
}

func appendRecords(t *testing.T, path string, recs ...bhiv.FailureRecord) {
	t.Helper()
	l, err := OpenFailureLog(FailureLogConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
}

func TestReplay(t *testing.T) {
	core := func(id string) bhiv.FailureRecord { return testRecord(t, "core", id) }
	bucket := func(id string) bhiv.FailureRecord { return testRecord(t, "bucket", id) }
	execution := func(id string) bhiv.FailureRecord {
		r := testRecord(t, "core", id)
		r.Kind = bhiv.KindExecution
		return r
	}
	old := func(id string) bhiv.FailureRecord {
		r := testRecord(t, "core", id)
		r.Time = testTime.Add(-48 * time.Hour).UTC()
		return r
	}
	invalid := bhiv.FailureRecord{Time: testTime, Sink: bhiv.SinkDecode, Subject: "bhiv.events.reward", Error: "not json",
		ErrorClass: bhiv.ClassInvalidInput, Raw: []byte("{oops"), Headers: map[string][]string{"Nats-Msg-Id": {"x"}}}
	elsewhere := testRecord(t, "elsewhere", "01ELSE")
	all := []bhiv.FailureRecord{core("01C1"), core("01C2"), bucket("01B1"), execution("01E1"), old("01OLD"), invalid, elsewhere, core("01FAILS")}

	tests := []struct {
		name    string
		cfg     ReplayConfig
		want    ReplayResult
		sent    []string // delivered, in order
		remains []string // event ids left in the log, in order ("" for invalid input)
	}{
		{
			name:    "all",
			want:    ReplayResult{Sent: 5, Failed: 1, Skipped: 2},
			sent:    []string{"01C1", "01C2", "01B1", "01E1", "01OLD"},
			remains: []string{"", "01ELSE", "01FAILS"},
		},
		{
			name:    "sink",
			cfg:     ReplayConfig{Sink: "bucket"},
			want:    ReplayResult{Sent: 1},
			sent:    []string{"01B1"},
			remains: []string{"01C1", "01C2", "01E1", "01OLD", "", "01ELSE", "01FAILS"},
		},
		{
			name:    "kind",
			cfg:     ReplayConfig{Kind: bhiv.KindExecution},
			want:    ReplayResult{Sent: 1},
			sent:    []string{"01E1"},
			remains: []string{"01C1", "01C2", "01B1", "01OLD", "", "01ELSE", "01FAILS"},
		},
		{
			name:    "since",
			cfg:     ReplayConfig{Since: testTime.Add(-time.Hour)},
			want:    ReplayResult{Sent: 4, Failed: 1, Skipped: 2},
			sent:    []string{"01C1", "01C2", "01B1", "01E1"},
			remains: []string{"01OLD", "", "01ELSE", "01FAILS"},
		},
		{
			name:    "dry run",
			cfg:     ReplayConfig{DryRun: true},
			want:    ReplayResult{Sent: 6, Skipped: 2},
			remains: []string{"01C1", "01C2", "01B1", "01E1", "01OLD", "", "01ELSE", "01FAILS"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "failed.log")
			appendRecords(t, path, all...)
			sink := &fakeSink{fail: map[string]bool{"01FAILS": true}}
			cfg := tt.cfg
			cfg.Path = path
			cfg.Sinks = map[string]bhiv.Sink{"core": sink, "bucket": sink}
			var progress []int
			total := -1
			cfg.Progress = func(done, t int) { progress = append(progress, done); total = t }
			res, err := Replay(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res != tt.want {
				t.Errorf("result %+v, want %+v", res, tt.want)
			}
			if got := sink.ids(); fmt.Sprint(got) != fmt.Sprint(tt.sent) {
				t.Errorf("delivered %v, want %v", got, tt.sent)
			}
			n := res.Sent + res.Failed + res.Skipped
			if total != n || len(progress) != n {
				t.Errorf("progress called %d times with total %d, want %d", len(progress), total, n)
			}
			recs, warnings := readAll(t, path)
			if len(warnings) > 0 {
				t.Errorf("warnings: %q", warnings)
			}
			if fmt.Sprint(ids(recs)) != fmt.Sprint(tt.remains) {
				t.Fatalf("log holds %v, want %v", ids(recs), tt.remains)
			}
			for _, r := range recs {
				want := 4
				if r.EventID == "01FAILS" && !cfg.DryRun && cfg.Sink != "bucket" && cfg.Kind == "" {
					want = 7 // 4 + the 3 of the failed replay
					if orig := testRecord(t, "core", r.EventID); r.Status != orig.Status || r.Error != orig.Error || r.ErrorClass != orig.ErrorClass {
						t.Errorf("failed again: status %d error %q class %s, want the first failure's", r.Status, r.Error, r.ErrorClass)
					}
					if !strings.Contains(r.LastError, "bad gateway") || r.Replays != 1 {
						t.Errorf("failed again: last error %q replays %d, want the new failure and 1", r.LastError, r.Replays)
					}
				}
				if r.Sink == bhiv.SinkDecode {
					want = 0
					if string(r.Raw) != "{oops" || r.Headers["Nats-Msg-Id"][0] != "x" {
						t.Errorf("invalid input record changed: %+v", r)
					}
				}
				if r.Attempts != want {
					t.Errorf("%s: attempts %d, want %d", r.EventID, r.Attempts, want)
				}
			}
			if _, err := os.Stat(path + ".replay-done"); err == nil {
				t.Error("replay-done file left after a complete replay")
			}
		})
	}
}

// TestReplayToBucket replays into a real Bucket.
func TestReplayToBucket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failed.log")
	appendRecords(t, path, testRecord(t, "bucket", "01R1"), testRecord(t, "bucket", "01R2"))
	b := newTestBucket(t, BucketConfig{})
	res, err := Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"bucket": b}})
	if err != nil || res != (ReplayResult{Sent: 2}) {
		t.Fatalf("Replay = %+v, %v", res, err)
	}
	checkBucketTree(t, b.Dir(), 2)
	if recs, _ := readAll(t, path); len(recs) != 0 {
		t.Errorf("log still holds %v", ids(recs))
	}
}

// TestReplayWithAppender replays again and again while a FailureLog keeps
// appending to the same log: no record of either side may be lost, and none
// delivered may stay.
func TestReplayWithAppender(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failed.log")
	l := openTestLog(t, FailureLogConfig{Path: path, MaxBytes: 16 << 10})
	sink := &fakeSink{fail: map[string]bool{}}
	const n = 600
	for i := 0; i < n; i += 7 {
		sink.fail[fmt.Sprintf("01A%04d", i)] = true // these stay
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				if err := l.Append(ctx, testRecord(t, "core", fmt.Sprintf("01A%04d", i))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	appending := make(chan struct{})
	go func() { wg.Wait(); close(appending) }()
	replays := 0
	for done := false; !done; {
		select {
		case <-appending:
			done = true
		default:
		}
		if _, err := Replay(ctx, ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": sink}}); err != nil {
			t.Fatal(err)
		}
		replays++
	}
	if _, err := Replay(ctx, ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": sink}}); err != nil {
		t.Fatal(err)
	}
	delivered := map[string]int{}
	for _, id := range sink.ids() {
		delivered[id]++
	}
	recs, _ := readAll(t, path)
	remaining := map[string]int{}
	for _, r := range recs {
		remaining[r.EventID]++
	}
	for i := range n {
		id := fmt.Sprintf("01A%04d", i)
		switch {
		case sink.fail[id]:
			if remaining[id] != 1 || delivered[id] != 0 {
				t.Errorf("%s (failing): %d in the log, %d delivered; want 1, 0", id, remaining[id], delivered[id])
			}
		default:
			if delivered[id] != 1 || remaining[id] != 0 {
				t.Errorf("%s: delivered %d times, %d in the log; want 1, 0", id, delivered[id], remaining[id])
			}
		}
	}
	t.Logf("%d replays while appending", replays)
}

func TestReplayRunningTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failed.log")
	appendRecords(t, path, testRecord(t, "core", "01X"))
	sink := &fakeSink{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	errc := make(chan error, 1)
	go func() {
		_, err := Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": sink}})
		errc <- err
	}()
	<-sink.entered // the first replay is sending
	_, err := Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": &fakeSink{}}})
	close(sink.block)
	if !errors.Is(err, ErrReplayRunning) {
		t.Errorf("second Replay: %v, want ErrReplayRunning", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestReplayCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failed.log")
	var recs []bhiv.FailureRecord
	for i := range 20 {
		recs = append(recs, testRecord(t, "core", fmt.Sprintf("01CAN%02d", i)))
	}
	appendRecords(t, path, recs...)
	ctx, cancel := context.WithCancel(context.Background())
	sink := &fakeSink{}
	res, err := Replay(ctx, ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": sink}, Rate: 1000,
		Progress: func(done, _ int) {
			if done == 5 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Replay = %v, want context.Canceled", err)
	}
	left, _ := readAll(t, path)
	if res.Sent != 5 || len(left) != 15 || len(sink.ids()) != 5 {
		t.Fatalf("sent %d (delivered %d), %d left; want 5, 15", res.Sent, len(sink.ids()), len(left))
	}
	// A later replay finishes the job.
	res, err = Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": sink}})
	if err != nil || res.Sent != 15 || len(sink.ids()) != 20 {
		t.Fatalf("second Replay = %+v, %v; delivered %d", res, err, len(sink.ids()))
	}
}

// TestReplayKilled kills a replay with SIGKILL half-way, then replays
// again: every record must be delivered, and at most the one in flight
// twice.
func TestReplayKilled(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "failed.log")
	deliveredPath := filepath.Join(dir, "delivered")
	const n = 200
	var recs []bhiv.FailureRecord
	for i := range n {
		recs = append(recs, testRecord(t, "core", fmt.Sprintf("01K%04d", i)))
	}
	appendRecords(t, path, recs...)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"=replay", "BHIV_TEST_LOG="+path, "BHIV_TEST_DELIVERED="+deliveredPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	seen := 0
	for seen < 50 && sc.Scan() {
		seen++
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if seen < 50 {
		t.Fatalf("the child replayed only %d records before it died", seen)
	}
	first := readLines(t, deliveredPath)
	if len(first) >= n {
		t.Fatalf("the child delivered all %d records before it was killed", len(first))
	}

	sink := &fakeSink{}
	res, err := Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": sink}})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, id := range first {
		count[id]++
	}
	for _, id := range sink.ids() {
		count[id]++
	}
	repeated := 0
	for i := range n {
		id := fmt.Sprintf("01K%04d", i)
		switch count[id] {
		case 0:
			t.Errorf("%s was lost", id)
		case 1:
		default:
			repeated++
		}
	}
	if repeated > 1 {
		t.Errorf("%d records delivered twice, want at most the 1 in flight", repeated)
	}
	if left, _ := readAll(t, path); len(left) != 0 {
		t.Errorf("log still holds %d records", len(left))
	}
	t.Logf("killed after %d deliveries; the second replay sent %d, %d repeated", len(first), res.Sent, repeated)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// fileSink appends the id of every event it is given to a file, durably.
type fileSink struct{ f *os.File }

func (s fileSink) Deliver(_ context.Context, ev *bhiv.Event) error {
	if _, err := s.f.WriteString(ev.ID + "\n"); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	fmt.Println(ev.ID) // the parent counts these
	time.Sleep(2 * time.Millisecond)
	return nil
}

func init() {
	children["replay"] = func() int {
		f, err := os.OpenFile(os.Getenv("BHIV_TEST_DELIVERED"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_, err = Replay(context.Background(), ReplayConfig{Path: os.Getenv("BHIV_TEST_LOG"), Sinks: map[string]bhiv.Sink{"core": fileSink{f}}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
}
