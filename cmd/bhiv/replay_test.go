package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/sinks"
)

// TestReplayCommand writes failure records for Core, runs `bhiv replay`
// against a Core stub, and checks that what went through left the log and
// what cannot be replayed stayed.
func TestReplayCommand(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "failed.log")
	flog, err := sinks.OpenFailureLog(sinks.FailureLogConfig{Path: logPath})
	if err != nil {
		t.Fatal(err)
	}
	var recs []bhiv.FailureRecord
	for _, id := range []string{"r-1", "r-2", "r-3"} {
		ev, err := bhiv.New(bhiv.KindReward, "test", id, bhiv.Reward{TeamID: "t1", Reward: 1})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := ev.MarshalJSON()
		recs = append(recs, bhiv.FailureRecord{Time: time.Now(), Sink: "core", EventID: id, Kind: bhiv.KindReward,
			Attempts: 4, Status: 503, Error: "core down", ErrorClass: bhiv.ClassRetryableExhausted, Event: raw})
	}
	recs = append(recs, bhiv.FailureRecord{Time: time.Now(), Sink: bhiv.SinkDecode, StreamSeq: 9,
		Error: "not json", ErrorClass: bhiv.ClassInvalidInput, Raw: []byte("nope")})
	if err := flog.Append(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	flog.Close()

	stub, err := corestub.New(corestub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	core := httptestServer(t, stub)
	env := map[string]string{
		"BHIV_CORE_URL":   core + corestub.Path,
		"BHIV_FAILED_LOG": logPath,
		"BHIV_BUCKET_DIR": filepath.Join(dir, "bucket"),
	}
	out, errOut, err := runBhiv(t, context.Background(), env, "replay", "--dry-run")
	if err != nil || !strings.Contains(out, "would send 3, failed again 0, skipped 1") {
		t.Fatalf("dry run: %v %q %s", err, out, errOut)
	}
	if stub.Stats().Events != 0 {
		t.Fatal("a dry run sent events")
	}
	out, errOut, err = runBhiv(t, context.Background(), env, "replay", "--sink", "core", "--kind", "reward")
	if err != nil || !strings.Contains(out, "sent 3, failed again 0, skipped 0") {
		t.Fatalf("replay: %v %q %s", err, out, errOut)
	}
	if st := stub.Stats(); st.Unique != 3 {
		t.Errorf("Core got %d unique events, want 3", st.Unique)
	}
	var left []bhiv.FailureRecord
	if err := sinks.ReadFailureLog(logPath, nil, func(r bhiv.FailureRecord) error { left = append(left, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].ErrorClass != bhiv.ClassInvalidInput {
		t.Errorf("left in the log: %+v", left)
	}
	if _, _, err := runBhiv(t, context.Background(), env, "replay", "--since", "yesterday"); err == nil || exitCode(err) != 2 {
		t.Errorf("bad --since: %v", err)
	}
}

// TestReplayCommandCoreDown: with Core down, `bhiv replay` waits --wait for
// its breaker, then stops, says so, exits non-zero and leaves every record
// as it was.
func TestReplayCommandCoreDown(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "failed.log")
	flog, err := sinks.OpenFailureLog(sinks.FailureLogConfig{Path: logPath})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"d-1", "d-2", "d-3"} {
		ev, err := bhiv.New(bhiv.KindReward, "test", id, bhiv.Reward{TeamID: "t1", Reward: 1})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := ev.MarshalJSON()
		if err := flog.Append(context.Background(), bhiv.FailureRecord{Time: time.Now(), Sink: "core", EventID: id, Kind: bhiv.KindReward,
			Attempts: 4, Status: 502, Error: "the first error", ErrorClass: bhiv.ClassRetryableExhausted, Event: raw}); err != nil {
			t.Fatal(err)
		}
	}
	flog.Close()
	core := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	env := map[string]string{
		"BHIV_CORE_URL": core + "/bhiv/core", "BHIV_FAILED_LOG": logPath, "BHIV_BUCKET_DIR": filepath.Join(dir, "bucket"),
		"BHIV_CORE_BREAKER_FAILURES": "1", "BHIV_CORE_BREAKER_DELAY": "1m",
	}
	out, errOut, err := runBhiv(t, context.Background(), env, "replay", "--wait", "200ms")
	if err == nil || !strings.Contains(out, "sent 0, failed again 0, skipped 0, left as they were (sink unavailable) 3") ||
		!strings.Contains(err.Error(), "core still unavailable") {
		t.Fatalf("replay with Core down: %v %q %s", err, out, errOut)
	}
	var left []bhiv.FailureRecord
	if err := sinks.ReadFailureLog(logPath, nil, func(r bhiv.FailureRecord) error { left = append(left, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 {
		t.Fatalf("%d records left, want 3", len(left))
	}
	for _, r := range left {
		if r.Error != "the first error" || r.Status != 502 || r.Attempts != 4 || r.Replays != 0 || r.LastError != "" {
			t.Errorf("record %s changed: %+v", r.EventID, r)
		}
	}
}
