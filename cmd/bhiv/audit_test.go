package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// TestAuditCommand runs a real consume, then breaks the result on purpose —
// a bucket file deleted, an event acked on the durable without reaching any
// sink — and checks that `bhiv audit` passes before and fails after, naming
// both.
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
		"BHIV_ADMIN_ADDR": "off",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), &syncBuffer{}, &syncBuffer{}) }()
	for i := 0; i < 10; i++ {
		if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t1", "--action", "a", "--id", fmt.Sprintf("au-%d", i)); err != nil {
			t.Fatalf("publish: %v %s", err, errOut)
		}
	}
	waitFor(t, 20*time.Second, func() bool { return countFiles(t, env["BHIV_BUCKET_DIR"]) == 10 && stub.Stats().Unique == 10 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stub.Close()

	out, errOut, err := runBhiv(t, context.Background(), env, "audit", "--core-record", record, "--wait", "10s")
	if err != nil || !strings.Contains(out, "lost             0") {
		t.Fatalf("audit of a clean run: %v\n%s%s", err, out, errOut)
	}

	// Break it: delete a bucket file, and publish an event that the durable
	// acks without any sink seeing it.
	files, _ := filepath.Glob(filepath.Join(env["BHIV_BUCKET_DIR"], "execution", "*", "au-4.json"))
	if len(files) != 1 {
		t.Fatalf("au-4 in the bucket: %v", files)
	}
	os.Remove(files[0])
	if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "reward", "--team", "t1", "--reward", "1", "--id", "dropped"); err != nil {
		t.Fatalf("publish: %v %s", err, errOut)
	}
	_, js := srv.Connect()
	cons, err := js.Consumer(context.Background(), "BHIV", "bhiv-sinks")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(context.Background()); err != nil {
			t.Fatal(err)
		}
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
}
