package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

var (
	recTemplateOnce sync.Once
	recTemplate     []byte
)

// testRecord returns a failure record for a valid reward event of the given
// id. It is cheap: tests append tens of thousands.
func testRecord(tb testing.TB, sink, id string) bhiv.FailureRecord {
	tb.Helper()
	recTemplateOnce.Do(func() {
		raw, err := json.Marshal(testEvent(tb, bhiv.KindReward, "01TEMPLATE", 0))
		if err != nil {
			tb.Fatal(err)
		}
		recTemplate = raw
	})
	raw := bytes.Replace(recTemplate, []byte(`"id":"01TEMPLATE"`), []byte(`"id":"`+id+`"`), 1)
	return bhiv.FailureRecord{
		Time:       testTime.UTC(),
		Sink:       sink,
		EventID:    id,
		Kind:       bhiv.KindReward,
		Subject:    "bhiv.events.reward",
		StreamSeq:  7,
		Attempts:   4,
		Status:     503,
		Error:      "core: retryable_exhausted after 4 attempt(s): status 503",
		ErrorClass: bhiv.ClassRetryableExhausted,
		Event:      raw,
	}
}

func openTestLog(t *testing.T, cfg FailureLogConfig) *FailureLog {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "data", "failed_core_sends.log")
	}
	l, err := OpenFailureLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// readAll returns the records of the log and the warnings logged meanwhile.
func readAll(t *testing.T, path string) ([]bhiv.FailureRecord, []string) {
	t.Helper()
	var warnings []string
	logger := slog.New(hookHandler{fn: func(r slog.Record) { warnings = append(warnings, r.Message) }})
	var recs []bhiv.FailureRecord
	if err := ReadFailureLog(path, logger, func(r bhiv.FailureRecord) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return recs, warnings
}

func TestFailureLogConcurrentAppends(t *testing.T) {
	l := openTestLog(t, FailureLogConfig{})
	const goroutines = 32
	each := 1000
	if testing.Short() {
		each = 100
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				rec := testRecord(t, "core", fmt.Sprintf("01G%02dR%04d", g, i))
				if err := l.Append(context.Background(), rec); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Count the lines of the file itself: every one a valid record.
	data, err := os.ReadFile(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != goroutines*each {
		t.Fatalf("%d lines, want %d", len(lines), goroutines*each)
	}
	seen := map[string]bool{}
	for n, line := range lines {
		rec, err := parseRecord([]byte(line))
		if err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		if seen[rec.EventID] {
			t.Fatalf("line %d: event %s twice", n+1, rec.EventID)
		}
		seen[rec.EventID] = true
		if want := testRecord(t, "core", rec.EventID); n%1000 == 0 && !recordsEqual(rec, want) {
			t.Fatalf("line %d: record %+v, want %+v", n+1, rec, want)
		}
	}
	fi, err := os.Stat(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("log mode %v, want 0640", fi.Mode().Perm())
	}
}

func recordsEqual(a, b bhiv.FailureRecord) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestFailureLogTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failed.log")
	l := openTestLog(t, FailureLogConfig{Path: path})
	for i := range 3 {
		if err := l.Append(context.Background(), testRecord(t, "core", fmt.Sprintf("01TORN%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of a write.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"time":"2026-11-28T02:30:00Z","sink":"core","event_id":"01TO`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	recs, warnings := readAll(t, path)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "torn last line") {
		t.Errorf("warnings %q, want one about the torn last line", warnings)
	}

	// A restarted appender does not glue its record to the torn line.
	l2 := openTestLog(t, FailureLogConfig{Path: path})
	if err := l2.Append(context.Background(), testRecord(t, "core", "01AFTER")); err != nil {
		t.Fatal(err)
	}
	recs, warnings = readAll(t, path)
	if len(recs) != 4 || recs[3].EventID != "01AFTER" {
		t.Fatalf("records %v, want 3 then 01AFTER", ids(recs))
	}
	if len(warnings) != 1 {
		t.Errorf("warnings %q, want one about the bad line", warnings)
	}
}

func ids(recs []bhiv.FailureRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.EventID
	}
	return out
}

func TestFailureLogRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "failed.log")
	recSize := func() int64 {
		b, _ := json.Marshal(testRecord(t, "core", "01ROT000"))
		return int64(len(b) + 1)
	}()
	// Two processes' worth of appenders, rotating every 5 records.
	logs := []*FailureLog{
		openTestLog(t, FailureLogConfig{Path: path, MaxBytes: 5 * recSize}),
		openTestLog(t, FailureLogConfig{Path: path, MaxBytes: 5 * recSize}),
	}
	const n = 100
	for i := range n {
		if err := logs[i%2].Append(context.Background(), testRecord(t, "core", fmt.Sprintf("01ROT%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	rotated, err := rotatedFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rotated) < n/5-1 {
		t.Errorf("%d rotated files, want at least %d", len(rotated), n/5-1)
	}
	for _, r := range rotated {
		if fi, err := os.Stat(r); err != nil || fi.Size() > 5*recSize {
			t.Errorf("rotated file %s: %v, size over the limit", r, err)
		}
	}
	recs, warnings := readAll(t, path)
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	// Oldest first: the order of the appends.
	for i, r := range recs {
		if want := fmt.Sprintf("01ROT%03d", i); r.EventID != want {
			t.Fatalf("record %d is %s, want %s", i, r.EventID, want)
		}
	}
}

// TestFailureLogConcurrentLogs has two FailureLogs on one path (as two
// consumer processes would) append from many goroutines while rotating.
func TestFailureLogConcurrentLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failed.log")
	var wg sync.WaitGroup
	const logs, goroutines, each = 2, 8, 100
	for li := range logs {
		l := openTestLog(t, FailureLogConfig{Path: path, MaxBytes: 20 << 10})
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					if err := l.Append(context.Background(), testRecord(t, "core", fmt.Sprintf("01L%dG%dR%03d", li, g, i))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	recs, warnings := readAll(t, path)
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.EventID]++
	}
	if len(recs) != logs*goroutines*each || len(seen) != logs*goroutines*each {
		t.Fatalf("%d records, %d distinct, want %d", len(recs), len(seen), logs*goroutines*each)
	}
}

func TestFailureLogClose(t *testing.T) {
	l := openTestLog(t, FailureLogConfig{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(context.Background(), testRecord(t, "core", "01X")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l2 := openTestLog(t, FailureLogConfig{})
	if err := l2.Append(ctx, testRecord(t, "core", "01X")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
}

func TestFailureLogUnwritable(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "data"), "") // a file where the directory must be
	_, err := OpenFailureLog(FailureLogConfig{Path: filepath.Join(dir, "data", "failed.log")})
	var de *DiskError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), filepath.Join(dir, "data")) {
		t.Fatalf("OpenFailureLog: %v, want a DiskError naming the path", err)
	}
}

func TestReadFailureLogMissing(t *testing.T) {
	recs, _ := readAll(t, filepath.Join(t.TempDir(), "none.log"))
	if len(recs) != 0 {
		t.Fatalf("%d records from a missing log", len(recs))
	}
	stop := errors.New("stop")
	l := openTestLog(t, FailureLogConfig{})
	_ = l.Append(context.Background(), testRecord(t, "core", "01A"), testRecord(t, "core", "01B"))
	calls := 0
	err := ReadFailureLog(l.Path(), nil, func(bhiv.FailureRecord) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ReadFailureLog = %v after %d calls, want stop after 1", err, calls)
	}
}

// BenchmarkFailureLogAppend measures durable appends/s by 32 concurrent
// writers (group commit: one write and one fsync for all the records
// appended meanwhile), next to its ceiling measured in the same run: the
// same writers appending the same lines to an O_APPEND file with no fsync
// at all. It reports appends/s, nofsync-appends/s and ratio, and, for
// scale, fsync-each-appends/s: the same writers each doing write+fsync of
// their own line, with no grouping of ours.
func BenchmarkFailureLogAppend(b *testing.B) {
	const writers = 32
	n := max(b.N, writers)
	recs := make([]bhiv.FailureRecord, n)
	lines := make([][]byte, n)
	for i := range recs {
		recs[i] = testRecord(b, "core", fmt.Sprintf("01BENCH%08d", i))
		l, _ := json.Marshal(&recs[i])
		lines[i] = append(l, '\n')
	}
	root := benchDir(b)
	bare, err := os.OpenFile(filepath.Join(root, "bare.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		b.Fatal(err)
	}
	defer bare.Close()
	each, err := os.OpenFile(filepath.Join(root, "each.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		b.Fatal(err)
	}
	defer each.Close()
	l, err := OpenFailureLog(FailureLogConfig{Path: filepath.Join(root, "failed.log")})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	const chunks = 4
	var bareTime, logTime, eachTime time.Duration
	b.ResetTimer()
	for c := range chunks {
		lo, hi := n*c/chunks, n*(c+1)/chunks
		bareTime += runWriters(b, lo, hi, writers, func(i int) error {
			_, err := bare.Write(lines[i])
			return err
		})
		logTime += runWriters(b, lo, hi, writers, func(i int) error {
			return l.Append(ctx, recs[i])
		})
		eachTime += runWriters(b, lo, hi, writers, func(i int) error {
			if _, err := each.Write(lines[i]); err != nil {
				return err
			}
			return each.Sync()
		})
	}
	b.StopTimer()
	got := float64(n) / logTime.Seconds()
	ceiling := float64(n) / bareTime.Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(got, "appends/s")
	b.ReportMetric(ceiling, "nofsync-appends/s")
	b.ReportMetric(got/ceiling, "ratio")
	b.ReportMetric(float64(n)/eachTime.Seconds(), "fsync-each-appends/s")
}
