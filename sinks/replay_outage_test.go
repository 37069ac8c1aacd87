package sinks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// statusServer is an httptest Core answering status, counting requests.
func statusServer(t *testing.T, status *atomic.Int32) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestReplayStopsOnAnOpenBreaker: replaying into a Core that is down opens
// its breaker at once; the replay must then wait (a bounded time) and stop,
// leaving every record as it was (its first error intact), instead of
// "failing again" each one with "circuit breaker open" in place of the
// error that sent it to the log. Other sinks' records still go.
func TestReplayStopsOnAnOpenBreaker(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv, requests := statusServer(t, &status)
	core, err := NewCore(CoreConfig{URL: srv.URL, MaxRetries: 1, Backoff: time.Millisecond, BackoffMax: time.Millisecond,
		BreakerFailures: 1, BreakerDelay: time.Minute, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()

	path := filepath.Join(t.TempDir(), "failed.log")
	var recs []bhiv.FailureRecord
	for _, id := range []string{"01A", "01B", "01C", "01D"} {
		r := testRecord(t, "core", id)
		r.Error, r.Status = "core: retryable_exhausted after 4 attempt(s): status 502: the first error", 502
		recs = append(recs, r)
	}
	recs = append(recs, testRecord(t, "bucket", "01BUCKET"))
	appendRecords(t, path, recs...)
	bucket := &fakeSink{}

	began := time.Now()
	res, err := Replay(context.Background(), ReplayConfig{Path: path, Wait: 300 * time.Millisecond,
		Sinks: map[string]bhiv.Sink{"core": core, "bucket": bucket}})
	took := time.Since(began)
	if !errors.Is(err, bhiv.ErrUnavailable) || !strings.Contains(err.Error(), "core") {
		t.Errorf("Replay error %v, want one naming core and wrapping bhiv.ErrUnavailable", err)
	}
	if want := (ReplayResult{Sent: 1, Unavailable: 4}); res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("replay took %s: it should wait about 300ms for the breaker, then stop", took)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("Core got %d requests, want 1 (the one that opened the breaker)", n)
	}
	left, warnings := readAll(t, path)
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if len(left) != 4 {
		t.Fatalf("%d records left, want the 4 core ones", len(left))
	}
	for i, r := range left {
		want := recs[i]
		if r.EventID != want.EventID || r.Error != want.Error || r.Status != want.Status || r.ErrorClass != want.ErrorClass ||
			r.Attempts != want.Attempts || r.LastError != "" || r.Replays != 0 {
			t.Errorf("record %s changed: error %q status %d class %s attempts %d last error %q replays %d; want it as it was",
				r.EventID, r.Error, r.Status, r.ErrorClass, r.Attempts, r.LastError, r.Replays)
		}
	}

	// Core back, its breaker closed: the records go, and leave the log.
	core2, err := NewCore(CoreConfig{URL: srv.URL, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer core2.Close()
	status.Store(http.StatusOK)
	res, err = Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": core2}})
	if err != nil || res != (ReplayResult{Sent: 4}) {
		t.Errorf("replay with Core back: %+v, %v; want 4 sent", res, err)
	}
}

// TestReplayWaitsOutAShortOutage: an open breaker that lets a probe through
// within Wait does not stop the replay.
func TestReplayWaitsOutAShortOutage(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv, _ := statusServer(t, &status)
	core, err := NewCore(CoreConfig{URL: srv.URL, MaxRetries: 1, Backoff: time.Millisecond, BackoffMax: time.Millisecond,
		BreakerFailures: 1, BreakerDelay: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	path := filepath.Join(t.TempDir(), "failed.log")
	appendRecords(t, path, testRecord(t, "core", "01A"), testRecord(t, "core", "01B"))
	time.AfterFunc(100*time.Millisecond, func() { status.Store(http.StatusOK) })
	res, err := Replay(context.Background(), ReplayConfig{Path: path, Wait: 10 * time.Second, Sinks: map[string]bhiv.Sink{"core": core}})
	if err != nil || res != (ReplayResult{Sent: 2}) {
		t.Errorf("replay: %+v, %v; want both sent once the breaker let a probe through", res, err)
	}
}

// TestReplayKeepsTheFirstError: a record that fails again keeps the error
// that sent it to the log (text, class, status); the new failure goes to
// last_error and replays counts the failed replays.
func TestReplayKeepsTheFirstError(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusBadRequest)
	srv, _ := statusServer(t, &status)
	core, err := NewCore(CoreConfig{URL: srv.URL, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	path := filepath.Join(t.TempDir(), "failed.log")
	first := testRecord(t, "core", "01A")
	appendRecords(t, path, first)
	for i := 1; i <= 2; i++ {
		res, err := Replay(context.Background(), ReplayConfig{Path: path, Sinks: map[string]bhiv.Sink{"core": core}})
		if err != nil || res != (ReplayResult{Failed: 1}) {
			t.Fatalf("replay %d: %+v, %v; want 1 failed", i, res, err)
		}
		left, _ := readAll(t, path)
		if len(left) != 1 {
			t.Fatalf("replay %d: %d records left, want 1", i, len(left))
		}
		r := left[0]
		if r.Error != first.Error || r.ErrorClass != first.ErrorClass || r.Status != first.Status {
			t.Errorf("replay %d: error %q class %s status %d; want the first: %q %s %d", i, r.Error, r.ErrorClass, r.Status,
				first.Error, first.ErrorClass, first.Status)
		}
		if !strings.Contains(r.LastError, "permanent") || !strings.Contains(r.LastError, "400") || r.Replays != i || r.Attempts != first.Attempts+i {
			t.Errorf("replay %d: last error %q, replays %d, attempts %d; want the 400, %d, %d", i, r.LastError, r.Replays, r.Attempts, i, first.Attempts+i)
		}
	}
}
