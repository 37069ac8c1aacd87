package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv/internal/audit"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// TestAuditCommand runs a real consume (envelope events, a bare event, an
// invalid message), then breaks the result on purpose — a bucket file
// deleted, an event acked on the durable without reaching any sink — and
// checks that `bhiv audit` passes before and fails after, naming both.
func TestAuditCommand(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	record := filepath.Join(dir, "core.jsonl")
	stub, err := corestub.New(corestub.Config{RecordPath: record})
	if err != nil {
		t.Fatal(err)
	}
	core := httptestServer(t, stub)
	env := map[string]string{
		"NATS_URL": srv.URL(), "BHIV_CORE_URL": core + corestub.Path,
		"BHIV_BUCKET_DIR": filepath.Join(dir, "bucket"), "BHIV_FAILED_LOG": filepath.Join(dir, "failed.log"),
		"BHIV_ADMIN_ADDR": "", "BHIV_BUCKET_FSYNC": "false",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), &syncBuffer{}, &syncBuffer{}) }()
	nc, js := srv.Connect()
	// Publish once the consumer has made the stream and its durable, without
	// updating the stream (nats-server races a stream update with a consumer
	// create).
	waitFor(t, 10*time.Second, func() bool {
		_, err := js.Consumer(context.Background(), "BHIV", "bhiv-sinks")
		return err == nil
	})
	env["BHIV_MANAGE_STREAM"] = "false"
	for i := 0; i < 10; i++ {
		if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t1", "--action", "a", "--id", fmt.Sprintf("au-%d", i)); err != nil {
			t.Fatalf("publish: %v %s", err, errOut)
		}
	}
	// A bare event (derived id BHIV-<seq>) and a message that is no event.
	if err := nc.Publish("bhiv.events.reward", []byte(`{"team_id":"t1","reward":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("bhiv.events.execution", []byte(`{"team_id":`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool {
		return countFiles(t, env["BHIV_BUCKET_DIR"]) == 11 && stub.Stats().Unique == 11 && fileHasData(env["BHIV_FAILED_LOG"])
	})

	// While the consumer runs: it catches up, nothing is lost.
	out, errOut, err := runBhiv(t, context.Background(), env, "audit", "--core-record", record, "--wait", "10s")
	if err != nil || !strings.Contains(out, "lost             0") || !strings.Contains(out, "12 (11 events, 1 invalid input") {
		t.Fatalf("audit of a clean run: %v\n%s%s", err, out, errOut)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stub.Close()

	// Break it: delete a bucket file, and publish an event that the durable
	// acks without any sink seeing it.
	if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "reward", "--team", "t1", "--reward", "1", "--id", "dropped"); err != nil {
		t.Fatalf("publish: %v %s", err, errOut)
	}
	// Not processed yet: pending, not lost; the audit passes with a warning.
	out, errOut, err = runBhiv(t, context.Background(), env, "audit", "--core-record", record, "--bucket-dir", filepath.Join(dir, "bucket"))
	if err != nil || !strings.Contains(out, "pending          1") || strings.Contains(out, `"dropped"`) ||
		!strings.Contains(errOut, "not judged") {
		t.Fatalf("audit with the event pending: %v\n%s%s", err, out, errOut)
	}
	files, _ := filepath.Glob(filepath.Join(env["BHIV_BUCKET_DIR"], "execution", "*", "au-4.json"))
	if len(files) != 1 {
		t.Fatalf("au-4 in the bucket: %v", files)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(context.Background(), "BHIV", "bhiv-sinks")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	acked := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(context.Background()); err != nil {
			t.Fatal(err)
		}
		acked++
	}
	if acked != 1 {
		t.Fatalf("acked %d messages, want the dropped one", acked)
	}

	out, _, err = runBhiv(t, context.Background(), env, "audit", "--core-record", record)
	if err == nil || !strings.Contains(err.Error(), "2 event(s) lost") {
		t.Fatalf("audit after breaking: err %v\n%s", err, out)
	}
	for _, want := range []string{`id "au-4" missing from bucket`, `id "dropped" missing from core, bucket`} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}

	// The JSON report says the same; without the Core record, the dropped
	// event is still found (its bucket file is missing).
	out, _, err = runBhiv(t, context.Background(), env, "audit", "--json")
	if err == nil {
		t.Fatalf("audit --json after breaking passed:\n%s", out)
	}
	var r audit.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, out)
	}
	var lost []string
	for _, l := range r.Lost {
		lost = append(lost, l.ID+":"+strings.Join(l.Missing, "+"))
	}
	if r.CoreKnown || !slices.Equal(lost, []string{"au-4:bucket", "dropped:bucket"}) || r.Invalid != 1 || r.Events != 12 {
		t.Errorf("JSON report: lost %v\n%s", lost, out)
	}
}

// TestAuditExitStatus checks that a loss makes the process exit non-zero,
// and a bad flag exits 2.
func TestAuditExitStatus(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	env := map[string]string{"NATS_URL": srv.URL(), "BHIV_BUCKET_DIR": filepath.Join(dir, "bucket"),
		"BHIV_FAILED_LOG": filepath.Join(dir, "failed.log")}
	// The stream, created by publish, with one event no sink has.
	if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t1", "--action", "a", "--id", "gone-1"); err != nil {
		t.Fatalf("publish: %v %s", err, errOut)
	}
	_, _, err := runBhiv(t, context.Background(), env, "audit", "--consumer", "nobody")
	if err == nil || exitCode(err) == 0 {
		t.Errorf("a lost event: err %v, exit %d", err, exitCode(err))
	}
	_, _, err = runBhiv(t, context.Background(), env, "audit", "--wait", "-1s")
	if exitCode(err) != 2 {
		t.Errorf("negative --wait: err %v, exit %d", err, exitCode(err))
	}
}

func fileHasData(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() > 0
}
