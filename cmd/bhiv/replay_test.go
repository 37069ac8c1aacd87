package main

import (
	"context"
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
