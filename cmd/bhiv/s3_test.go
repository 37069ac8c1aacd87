package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/hackaverse/bhiv/internal/s3test"
	"github.com/hackaverse/bhiv/sinks"
)

// s3Env returns the settings that put the bucket on srv.
func s3Env(srv *s3test.Server) map[string]string {
	return map[string]string{
		"BHIV_BUCKET_URL": "s3://events/bhiv", "BHIV_S3_ENDPOINT": srv.URL, "BHIV_S3_PATH_STYLE": "true",
		"AWS_REGION": s3test.Region, "AWS_ACCESS_KEY_ID": s3test.AccessKey, "AWS_SECRET_ACCESS_KEY": s3test.SecretKey,
		"BHIV_S3_MAX_RETRIES": "1", "BHIV_S3_TIMEOUT": "2s",
	}
}

// TestBucketURL checks how BHIV_BUCKET_URL and the S3 settings are read.
func TestBucketURL(t *testing.T) {
	read := func(env map[string]string) (sinks.BucketConfig, *sinks.S3Config, error) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		c := newConfig(fs, envMap(env), bucketSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		b, s3 := readBucket(c)
		return b, s3, c.err()
	}
	b, s3, err := read(map[string]string{})
	if err != nil || s3 != nil || b.Dir != "./data/bucket" {
		t.Errorf("default: %+v %+v %v", b, s3, err)
	}
	b, s3, err = read(map[string]string{"BHIV_BUCKET_URL": "file:///srv/bucket", "BHIV_BUCKET_DIR": "/elsewhere"})
	if err != nil || s3 != nil || b.Dir != "/srv/bucket" {
		t.Errorf("file:///srv/bucket: %+v %+v %v", b, s3, err)
	}
	b, _, err = read(map[string]string{"BHIV_BUCKET_URL": "file:data/bucket"})
	if err != nil || b.Dir != "data/bucket" {
		t.Errorf("file:data/bucket: %+v %v", b, err)
	}
	_, s3, err = read(map[string]string{"BHIV_BUCKET_URL": "s3://events/prod/bhiv/", "BHIV_S3_ENDPOINT": "http://minio:9000",
		"BHIV_S3_PATH_STYLE": "true", "BHIV_S3_CONDITIONAL_WRITES": "false", "AWS_REGION": "eu-west-3",
		"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "BHIV_S3_MAX_RETRIES": "0"})
	if err != nil || s3 == nil {
		t.Fatalf("s3: %+v %v", s3, err)
	}
	want := sinks.S3Config{Bucket: "events", Prefix: "/prod/bhiv/", Endpoint: "http://minio:9000", Region: "eu-west-3",
		Lookup: sinks.S3LookupPath, AccessKeyID: "id", SecretAccessKey: "secret", Conditional: sinks.ConditionalOff,
		Timeout: 10 * time.Second, Retries: -1}
	if fmt.Sprintf("%+v", *s3) != fmt.Sprintf("%+v", want) {
		t.Errorf("s3 config\n%+v\nwant\n%+v", *s3, want)
	}
	if s3.Location() != "s3://events/prod/bhiv" {
		t.Errorf("location %q", s3.Location())
	}
	_, s3, _ = read(map[string]string{"BHIV_BUCKET_URL": "s3://events", "BHIV_S3_REGION": "us-west-2", "AWS_REGION": "eu-west-3"})
	if s3.Region != "us-west-2" || s3.Lookup != sinks.S3LookupAuto || s3.Conditional != sinks.ConditionalAuto || s3.Retries != 3 {
		t.Errorf("defaults: %+v", *s3)
	}

	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"BHIV_BUCKET_URL": "gs://events"}, "BHIV_BUCKET_URL"},
		{map[string]string{"BHIV_BUCKET_URL": "file://host/x"}, "BHIV_BUCKET_URL"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://Bad_Name/x"}, "BHIV_BUCKET_URL"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://key:hunter2@events/x"}, "BHIV_BUCKET_URL"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://events", "BHIV_S3_ENDPOINT": "minio:9000"}, "BHIV_S3_ENDPOINT"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://events", "BHIV_S3_PATH_STYLE": "sometimes"}, "BHIV_S3_PATH_STYLE"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://events", "BHIV_S3_CONDITIONAL_WRITES": "yes"}, "BHIV_S3_CONDITIONAL_WRITES"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://events", "BHIV_S3_TIMEOUT": "10"}, "BHIV_S3_TIMEOUT"},
		{map[string]string{"BHIV_BUCKET_URL": "s3://events", "AWS_SECRET_ACCESS_KEY": "hunter2"}, "AWS_ACCESS_KEY_ID"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			// Through the binary: a usage error, before anything connects.
			tt.env["NATS_URL"] = "nats://127.0.0.1:1"
			_, _, err := runBhiv(t, context.Background(), tt.env, "consume")
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Fatalf("err = %v, want a usage error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

// TestConsumeS3 runs `bhiv consume` in-process with the bucket on an S3
// server, then `bhiv audit` reading it, breaks it (an object deleted) and
// has `bhiv replay` put back a bucket failure record into S3.
func TestConsumeS3(t *testing.T) {
	srv := natstest.Start(t)
	s3 := s3test.Start(t, "events")
	stub, err := corestub.New(corestub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	core := httptestServer(t, stub)
	dir := t.TempDir()
	env := s3Env(s3)
	for k, v := range map[string]string{
		"NATS_URL": srv.URL(), "BHIV_CORE_URL": core + corestub.Path, "BHIV_ADMIN_ADDR": "",
		"BHIV_BUCKET_DIR": filepath.Join(dir, "bucket"), "BHIV_FAILED_LOG": filepath.Join(dir, "failed.log"), "LOG_FORMAT": "json",
	} {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), &syncBuffer{}, &logs) }()
	_, js := srv.Connect()
	waitFor(t, 10*time.Second, func() bool {
		_, err := js.Consumer(context.Background(), "BHIV", "bhiv-sinks")
		return err == nil
	})
	for i := range 20 {
		if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t1", "--action", "a", "--id", fmt.Sprintf("s3-%d", i)); err != nil {
			t.Fatalf("publish: %v %s", err, errOut)
		}
	}
	objects := func() []string {
		keys, err := s3.Keys("events", "bhiv/execution/")
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	waitFor(t, 20*time.Second, func() bool { return len(objects()) == 20 && stub.Stats().Unique == 20 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("consume: %v\n%s", err, logs.String())
	}
	if _, err := os.Stat(env["BHIV_BUCKET_DIR"]); !os.IsNotExist(err) {
		t.Errorf("the local bucket directory was made: %v", err)
	}
	if !strings.Contains(logs.String(), `"location":"s3://events/bhiv"`) || strings.Contains(logs.String(), s3test.SecretKey) {
		t.Errorf("start-up log lacks the bucket or shows the secret key:\n%s", logs.String())
	}

	out, errOut, err := runBhiv(t, context.Background(), env, "audit")
	if err != nil || !strings.Contains(out, "in bucket        20") || !strings.Contains(out, "lost             0") {
		t.Fatalf("audit of the S3 bucket: %v\n%s%s", err, out, errOut)
	}
	gone := objects()[3]
	id := strings.TrimSuffix(filepath.Base(gone), ".json")
	if _, err := s3.Backend.DeleteObject("events", gone); err != nil {
		t.Fatal(err)
	}
	out, _, err = runBhiv(t, context.Background(), env, "audit")
	if err == nil || !strings.Contains(out, fmt.Sprintf("id %q missing from bucket", id)) {
		t.Fatalf("audit after deleting %s: %v\n%s", gone, err, out)
	}

	// The missing event as a bucket failure record, replayed into S3.
	ev, err := bhiv.New(bhiv.KindExecution, "bhiv-cli", id, bhiv.Execution{TeamID: "t1", Action: "a"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := ev.MarshalJSON()
	flog, err := sinks.OpenFailureLog(sinks.FailureLogConfig{Path: env["BHIV_FAILED_LOG"]})
	if err != nil {
		t.Fatal(err)
	}
	if err := flog.Append(context.Background(), bhiv.FailureRecord{Time: time.Now(), Sink: "bucket", EventID: id,
		Kind: bhiv.KindExecution, Attempts: 1, Error: "s3 down", ErrorClass: bhiv.ClassRetryableExhausted, Event: raw}); err != nil {
		t.Fatal(err)
	}
	flog.Close()
	out, errOut, err = runBhiv(t, context.Background(), env, "replay", "--sink", "bucket")
	if err != nil || !strings.Contains(out, "sent 1, failed again 0") {
		t.Fatalf("replay into S3: %v %q %s", err, out, errOut)
	}
	key, _ := sinks.EventKey(&ev)
	if _, err := s3.Object("events", "bhiv/"+key); err != nil {
		t.Errorf("the replayed event is not in S3: %v", err)
	}
}

// A refused access at start is a clear error, and nothing is consumed.
func TestConsumeS3AccessDenied(t *testing.T) {
	srv := natstest.Start(t)
	s3 := s3test.Start(t, "events")
	s3.Set(s3test.Faults{Kind: s3test.Denied})
	env := s3Env(s3)
	env["NATS_URL"] = srv.URL()
	env["BHIV_ADMIN_ADDR"] = ""
	env["BHIV_FAILED_LOG"] = filepath.Join(t.TempDir(), "failed.log")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err := runBhiv(t, ctx, env, "consume")
	if err == nil || !strings.Contains(err.Error(), "access refused") || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") || exitCode(err) != 1 {
		t.Fatalf("consume with access denied: %v", err)
	}
	if strings.Contains(err.Error(), s3test.SecretKey) {
		t.Errorf("the error shows the secret key: %v", err)
	}
}
