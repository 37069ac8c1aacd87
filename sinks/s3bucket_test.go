package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/s3test"
	"github.com/hackaverse/bhiv/sinks/sinktest"
)

// The S3 bucket's tests run against gofakes3 served over loopback HTTP by
// internal/s3test, with faults injected in front of it: the real minio-go
// client, nothing mocked.

const testS3Bucket = "events"

// testS3Config returns a config for srv with quick retries.
func testS3Config(srv *s3test.Server) S3Config {
	return S3Config{
		Bucket: testS3Bucket, Prefix: "bhiv", Endpoint: srv.URL, Region: s3test.Region, Lookup: S3LookupPath,
		AccessKeyID: s3test.AccessKey, SecretAccessKey: s3test.SecretKey,
		Retries: 2, RetryDelay: time.Millisecond, RetryDelayMax: 5 * time.Millisecond, Timeout: 5 * time.Second,
	}
}

func newTestS3Bucket(t *testing.T, cfg S3Config) *S3Bucket {
	t.Helper()
	b, err := NewS3Bucket(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// storedS3 returns the bodies stored for id under the test prefix.
func storedS3(t *testing.T, srv *s3test.Server, id string) [][]byte {
	t.Helper()
	keys, err := srv.Keys(testS3Bucket, "bhiv/")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, k := range keys {
		if strings.HasSuffix(k, "/"+id+".json") {
			data, err := srv.Object(testS3Bucket, k)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, data)
		}
	}
	return out
}

func newS3Conformance(mode ConditionalWrites) func(t *testing.T) *sinktest.Harness {
	return func(t *testing.T) *sinktest.Harness {
		srv := s3test.Start(t, testS3Bucket)
		cfg := testS3Config(srv)
		cfg.Conditional = mode
		b := newTestS3Bucket(t, cfg)
		fault := func(f s3test.Fault) func() func() {
			return func() func() {
				srv.Set(s3test.Faults{Kind: f})
				return func() { srv.Set(s3test.Faults{}) }
			}
		}
		return &sinktest.Harness{
			Sink:   b,
			Name:   BucketName,
			Stored: func(id string) [][]byte { return storedS3(t, srv, id) },
			Hang:   fault(s3test.Hang),
			Fail:   fault(s3test.SlowDown),
			Close:  func() { _ = b.Close() },
		}
	}
}

func TestConformanceS3Bucket(t *testing.T) {
	t.Run("conditional", func(t *testing.T) { sinktest.Run(t, newS3Conformance(ConditionalOn)) })
	t.Run("read-then-put", func(t *testing.T) { sinktest.Run(t, newS3Conformance(ConditionalOff)) })
}

// The S3 bucket stores the same bytes under the same key as the file
// Bucket, below its prefix, once, whole, with a Content-MD5.
func TestS3BucketSameObjectAsFile(t *testing.T) {
	srv := s3test.Start(t, testS3Bucket)
	b := newTestS3Bucket(t, testS3Config(srv))
	fb := newTestBucket(t, BucketConfig{NoFsync: true})
	for _, ev := range []*bhiv.Event{
		testEvent(t, bhiv.KindExecution, "01SAME", 1000),
		testEvent(t, bhiv.KindReward, "a.b:c-d_e", 10),
	} {
		for _, s := range []bhiv.Sink{b, fb} {
			if err := s.Deliver(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
		p, _ := fb.Path(ev)
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := EventKey(ev)
		got, err := srv.Object(testS3Bucket, "bhiv/"+key)
		if err != nil {
			t.Fatalf("object bhiv/%s: %v", key, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("object holds\n%s\nthe file holds\n%s", got, want)
		}
		if rel, _ := filepath.Rel(fb.Dir(), p); filepath.ToSlash(rel) != key {
			t.Errorf("file at %s, object at %s", rel, key)
		}
	}
	keys, _ := srv.Keys(testS3Bucket, "")
	slices.Sort(keys)
	if want := []string{"bhiv/execution/2026-11-28/01SAME.json", "bhiv/reward/2026-11-28/a.b:c-d_e.json"}; !slices.Equal(keys, want) {
		t.Errorf("the bucket holds %q, want %q (the start-up probe removed)", keys, want)
	}
}

// The first event under an id wins, with conditional writes and without:
// a different event is a permanent ErrConflict and leaves the object; the
// same JSON spelled differently is the same event.
func TestS3BucketConflictingEvent(t *testing.T) {
	for _, mode := range []ConditionalWrites{ConditionalOn, ConditionalOff} {
		t.Run(string(mode), func(t *testing.T) {
			srv := s3test.Start(t, testS3Bucket)
			cfg := testS3Config(srv)
			cfg.Conditional = mode
			b := newTestS3Bucket(t, cfg)
			first := testEvent(t, bhiv.KindExecution, "01CONFLICT", 100)
			if err := b.Deliver(context.Background(), first); err != nil {
				t.Fatal(err)
			}
			want := storedS3(t, srv, first.ID)[0]
			putsBefore := srv.Puts()

			second := testEvent(t, bhiv.KindExecution, "01CONFLICT", 100)
			second.Source = "another-service"
			err := b.Deliver(context.Background(), second)
			var se *bhiv.SinkError
			if !errors.As(err, &se) || se.Class != bhiv.ClassPermanent || se.Sink != BucketName || !errors.Is(err, ErrConflict) {
				t.Fatalf("Deliver of a different event under the same id: %v, want a permanent ErrConflict", err)
			}
			if !strings.Contains(err.Error(), "s3://events/bhiv/execution/2026-11-28/01CONFLICT.json") {
				t.Errorf("error %q does not name the object", err)
			}
			if got := storedS3(t, srv, first.ID); len(got) != 1 || !bytes.Equal(got[0], want) {
				t.Errorf("the object changed: %q, want %q", got, want)
			}
			if mode == ConditionalOff && srv.Puts() != putsBefore {
				t.Errorf("read-then-put sent %d PUTs for an id it found taken", srv.Puts()-putsBefore)
			}

			var v any
			if err := json.Unmarshal(want, &v); err != nil {
				t.Fatal(err)
			}
			indented, _ := json.MarshalIndent(v, "", "  ")
			key, _ := EventKey(first)
			if err := srv.Put(testS3Bucket, "bhiv/"+key, indented); err != nil {
				t.Fatal(err)
			}
			if err := b.Deliver(context.Background(), first); err != nil {
				t.Errorf("the same event, spelled differently in the store: %v", err)
			}
		})
	}
}

func TestClassifyS3(t *testing.T) {
	resp := func(status int, code string) error {
		return fmt.Errorf("put: %w", minio.ErrorResponse{StatusCode: status, Code: code})
	}
	tests := []struct {
		name string
		err  error
		want s3Outcome
	}{
		{"nil", nil, s3OK},
		{"connection refused", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), s3Retry},
		{"attempt timeout", context.DeadlineExceeded, s3Retry},
		{"412 precondition failed", resp(412, "PreconditionFailed"), s3Exists},
		{"501 not implemented", resp(501, "NotImplemented"), s3Unsupported},
		{"503 slow down", resp(503, "SlowDown"), s3Retry},
		{"500 internal error", resp(500, "InternalError"), s3Retry},
		{"502 without a code", resp(502, ""), s3Retry},
		{"429", resp(429, ""), s3Retry},
		{"408", resp(408, ""), s3Retry},
		{"400 request timeout", resp(400, "RequestTimeout"), s3Retry},
		{"409 conditional request conflict", resp(409, "ConditionalRequestConflict"), s3Retry},
		{"400 bad digest", resp(400, "BadDigest"), s3Retry},
		{"the object refusing the write is gone", fmt.Errorf("read: %w", errVanished), s3Retry},
		{"403 access denied", resp(403, "AccessDenied"), s3Config},
		{"403 invalid access key", resp(403, "InvalidAccessKeyId"), s3Config},
		{"403 signature", resp(403, "SignatureDoesNotMatch"), s3Config},
		{"400 expired token", resp(400, "ExpiredToken"), s3Config},
		{"404 no such bucket", resp(404, "NoSuchBucket"), s3Config},
		{"301 wrong region", resp(301, "PermanentRedirect"), s3Config},
		{"400 wrong region", resp(400, "AuthorizationHeaderMalformed"), s3Config},
		{"403 clock skew", resp(403, "RequestTimeTooSkewed"), s3Config},
		{"401", resp(401, ""), s3Config},
		{"400 invalid argument", resp(400, "InvalidArgument"), s3Permanent},
		{"400 entity too large", resp(400, "EntityTooLarge"), s3Permanent},
		{"400 key too long", resp(400, "KeyTooLongError"), s3Permanent},
		{"client-side invalid argument", minio.ErrorResponse{Code: "InvalidArgument"}, s3Permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classifyS3(tt.err); got != tt.want {
				t.Errorf("classifyS3(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// wantUnavailable checks that err is the bucket's outage error.
func wantUnavailable(t *testing.T, err error) {
	t.Helper()
	var se *bhiv.SinkError
	if !errors.As(err, &se) || se.Sink != BucketName || se.Class != bhiv.ClassRetryableExhausted || !errors.Is(err, bhiv.ErrUnavailable) {
		t.Fatalf("Deliver error %v, want a retryable_exhausted bucket SinkError wrapping bhiv.ErrUnavailable", err)
	}
}

// waitS3Available waits until the bucket reports itself available again.
func waitS3Available(t *testing.T, b *S3Bucket) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !b.Available() {
		if time.Now().After(deadline) {
			t.Fatal("the bucket did not become available within 10s of the store coming back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Faults of the store mid-run: a store down (connection refused), slow
// beyond the request timeout, answering 503 SlowDown or 500, or resetting
// connections is an outage once the retries are spent: the error wraps
// bhiv.ErrUnavailable, Available is false until a probe succeeds, and the
// event goes through afterwards. A short fault is ridden out by retries.
func TestS3BucketOutages(t *testing.T) {
	tests := []struct {
		name   string
		faults s3test.Faults
		down   bool // stop the server instead (connection refused)
	}{
		{name: "connection refused", down: true},
		{name: "slow beyond the timeout", faults: s3test.Faults{Kind: s3test.Slow, Delay: 2 * time.Second}},
		{name: "503 SlowDown", faults: s3test.Faults{Kind: s3test.SlowDown}},
		{name: "500 InternalError", faults: s3test.Faults{Kind: s3test.Internal}},
		{name: "connection reset", faults: s3test.Faults{Kind: s3test.Reset}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := s3test.Start(t, testS3Bucket)
			cfg := testS3Config(srv)
			cfg.Timeout = 300 * time.Millisecond
			var logs lockedBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			b := newTestS3Bucket(t, cfg)
			ctx := context.Background()
			if err := b.Deliver(ctx, testEvent(t, bhiv.KindExecution, "01BEFORE", 10)); err != nil {
				t.Fatal(err)
			}
			if tt.down {
				srv.Stop()
			} else {
				srv.Set(tt.faults)
			}
			ev := testEvent(t, bhiv.KindExecution, "01OUTAGE", 10)
			err := b.Deliver(ctx, ev)
			wantUnavailable(t, err)
			var se *bhiv.SinkError
			errors.As(err, &se)
			if se.Attempts != cfg.Retries+1 {
				t.Errorf("%d attempts, want %d (retried first)", se.Attempts, cfg.Retries+1)
			}
			if b.Available() {
				t.Fatal("Available() is true during the outage")
			}
			time.Sleep(2 * bucketProbeEvery)
			t0 := time.Now()
			if b.Available() {
				t.Fatal("Available() is true during the outage, after a probe")
			}
			if took := time.Since(t0); took > 200*time.Millisecond {
				t.Errorf("Available() took %s: it waited for the store", took)
			}
			if !strings.Contains(logs.String(), "bucket: unavailable, events wait") {
				t.Errorf("the outage was not logged:\n%s", logs.String())
			}
			if tt.down {
				if err := srv.Restart(); err != nil {
					t.Fatal(err)
				}
			} else {
				srv.Set(s3test.Faults{})
			}
			waitS3Available(t, b)
			if err := b.Deliver(ctx, ev); err != nil {
				t.Fatalf("after the store came back: %v", err)
			}
			if got := storedS3(t, srv, ev.ID); len(got) != 1 {
				t.Errorf("%d copies stored, want 1", len(got))
			}
			b.Close()
			if keys, _ := srv.Keys(testS3Bucket, "bhiv/.bhiv/"); len(keys) != 0 {
				t.Errorf("probe objects left after Close: %v", keys)
			}
		})
	}
	t.Run("short faults are retried", func(t *testing.T) {
		for _, f := range []s3test.Faults{
			{Kind: s3test.SlowDown, Count: 2},
			{Kind: s3test.Reset, Count: 2},
			{Kind: s3test.Slow, Delay: 50 * time.Millisecond},
		} {
			srv := s3test.Start(t, testS3Bucket)
			b := newTestS3Bucket(t, testS3Config(srv))
			srv.Set(f)
			ev := testEvent(t, bhiv.KindReward, "01SHORT", 10)
			if err := b.Deliver(context.Background(), ev); err != nil {
				t.Errorf("fault %+v: %v", f, err)
			}
			if srv.Injected() == 0 {
				t.Errorf("fault %+v did not bite", f)
			}
			if got := storedS3(t, srv, ev.ID); len(got) != 1 {
				t.Errorf("fault %+v: %d copies stored, want 1", f, len(got))
			}
		}
	})
}

// A refused access that appears after start (a revoked key, a changed
// bucket policy, a deleted bucket) is an outage too, logged as a
// configuration problem.
func TestS3BucketAccessRevoked(t *testing.T) {
	for _, f := range []s3test.Fault{s3test.Denied, s3test.NoBucket} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			srv := s3test.Start(t, testS3Bucket)
			cfg := testS3Config(srv)
			var logs lockedBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			b := newTestS3Bucket(t, cfg)
			srv.Set(s3test.Faults{Kind: f})
			err := b.Deliver(context.Background(), testEvent(t, bhiv.KindExecution, "01DENIED", 10))
			wantUnavailable(t, err)
			var se *bhiv.SinkError
			errors.As(err, &se)
			if se.Attempts != 1 {
				t.Errorf("%d attempts: a refused access is not retried", se.Attempts)
			}
			if !strings.Contains(logs.String(), "a configuration problem") {
				t.Errorf("not logged as a configuration problem:\n%s", logs.String())
			}
			if b.Available() {
				t.Fatal("Available() is true while access is refused")
			}
			srv.Set(s3test.Faults{})
			waitS3Available(t, b)
		})
	}
}

// A request the store refuses for this object alone, while a probe still
// goes through, is the event's own permanent failure: to the failure log,
// the store stays available.
func TestS3BucketObjectRefused(t *testing.T) {
	srv := s3test.Start(t, testS3Bucket)
	b := newTestS3Bucket(t, testS3Config(srv))
	srv.Set(s3test.Faults{Kind: s3test.Invalid, Count: 1})
	err := b.Deliver(context.Background(), testEvent(t, bhiv.KindExecution, "01INVALID", 10))
	var se *bhiv.SinkError
	if !errors.As(err, &se) || se.Class != bhiv.ClassPermanent || errors.Is(err, bhiv.ErrUnavailable) {
		t.Fatalf("Deliver error %v, want a permanent SinkError that is no outage", err)
	}
	if !strings.Contains(err.Error(), "InvalidArgument") && !strings.Contains(err.Error(), "Invalid argument") {
		t.Errorf("error %q does not say what the store answered", err)
	}
	if !b.Available() {
		t.Error("Available() is false after one object was refused")
	}
}

// At start, a bad credential, a missing bucket or an unreachable store is
// a clear error that says what to fix.
func TestNewS3BucketStartErrors(t *testing.T) {
	tests := []struct {
		name   string
		faults s3test.Faults
		cfg    func(*S3Config, *s3test.Server)
		want   []string
	}{
		{"access denied", s3test.Faults{Kind: s3test.Denied}, nil, []string{"access refused", "AWS_ACCESS_KEY_ID", "s3://events/bhiv"}},
		{"write denied", s3test.Faults{Kind: s3test.Denied, Methods: []string{http.MethodPut}}, nil, []string{"write a probe object", "access refused", "AccessDenied"}},
		{"no such bucket", s3test.Faults{}, func(c *S3Config, _ *s3test.Server) { c.Bucket = "missing" }, []string{"s3://missing/bhiv", "does not exist", "create it first"}},
		{"unreachable", s3test.Faults{}, func(c *S3Config, s *s3test.Server) { s.Stop() }, []string{"cannot be reached", "BHIV_S3_ENDPOINT"}},
		{"bad name", s3test.Faults{}, func(c *S3Config, _ *s3test.Server) { c.Bucket = "No_Such" }, []string{"bucket name"}},
		{"half a key", s3test.Faults{}, func(c *S3Config, _ *s3test.Server) { c.SecretAccessKey = "" }, []string{"go together"}},
		{"bad endpoint", s3test.Faults{}, func(c *S3Config, _ *s3test.Server) { c.Endpoint = "minio:9000" }, []string{"want http(s)://host[:port]"}},
		{"missing CA file", s3test.Faults{}, func(c *S3Config, _ *s3test.Server) { c.CAFile = "/nonexistent/ca.pem" }, []string{"CA file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := s3test.Start(t, testS3Bucket)
			cfg := testS3Config(srv)
			if tt.cfg != nil {
				tt.cfg(&cfg, srv)
			}
			srv.Set(tt.faults)
			b, err := NewS3Bucket(context.Background(), cfg)
			if err == nil {
				b.Close()
				t.Fatal("NewS3Bucket succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// With auto, NewS3Bucket finds whether the store honours If-None-Match: a
// store that ignores or refuses it gets read-then-put (and a warning); on
// requires it.
func TestS3BucketDetectsConditionalWrites(t *testing.T) {
	tests := []struct {
		store   s3test.Conditional
		mode    ConditionalWrites
		want    bool // conditional writes used
		startOK bool
	}{
		{s3test.Honour, ConditionalAuto, true, true},
		{s3test.Ignore, ConditionalAuto, false, true},
		{s3test.Refuse, ConditionalAuto, false, true},
		{s3test.Honour, ConditionalOn, true, true},
		{s3test.Ignore, ConditionalOn, false, false},
		{s3test.Refuse, ConditionalOn, false, false},
		{s3test.Honour, ConditionalOff, false, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("store=%d/mode=%s", tt.store, tt.mode), func(t *testing.T) {
			srv := s3test.Start(t, testS3Bucket)
			srv.SetConditional(tt.store)
			cfg := testS3Config(srv)
			cfg.Conditional = tt.mode
			var logs lockedBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			b, err := NewS3Bucket(context.Background(), cfg)
			if !tt.startOK {
				if err == nil {
					b.Close()
					t.Fatal("NewS3Bucket succeeded on a store without conditional writes with conditional writes on")
				}
				if !strings.Contains(err.Error(), "BHIV_S3_CONDITIONAL_WRITES=false") {
					t.Errorf("error %q does not say how to go on", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if got := b.conditional.Load(); got != tt.want {
				t.Errorf("conditional writes %v, want %v", got, tt.want)
			}
			if tt.mode == ConditionalAuto && !tt.want && !strings.Contains(logs.String(), "racy between replicas") {
				t.Errorf("no warning about the race:\n%s", logs.String())
			}
			// Either way the first event wins.
			first := testEvent(t, bhiv.KindExecution, "01FIRST", 10)
			second := testEvent(t, bhiv.KindExecution, "01FIRST", 10)
			second.Source = "other"
			if err := b.Deliver(context.Background(), first); err != nil {
				t.Fatal(err)
			}
			if err := b.Deliver(context.Background(), second); !errors.Is(err, ErrConflict) {
				t.Errorf("second event under the id: %v, want ErrConflict", err)
			}
			keys, _ := srv.Keys(testS3Bucket, "bhiv/.bhiv/")
			if len(keys) != 0 {
				t.Errorf("start-up probes left: %v", keys)
			}
		})
	}
}

// A store that stops honouring If-None-Match after start (501) makes the
// bucket go on with read-then-put instead of failing events.
func TestS3BucketConditionalRefusedLater(t *testing.T) {
	srv := s3test.Start(t, testS3Bucket)
	b := newTestS3Bucket(t, testS3Config(srv))
	srv.SetConditional(s3test.Refuse)
	ev := testEvent(t, bhiv.KindReward, "01LATER", 10)
	if err := b.Deliver(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if b.conditional.Load() {
		t.Error("still sending If-None-Match to a store that refuses it")
	}
	if got := storedS3(t, srv, ev.ID); len(got) != 1 {
		t.Errorf("%d copies stored, want 1", len(got))
	}
}

func TestS3BucketClose(t *testing.T) {
	srv := s3test.Start(t, testS3Bucket)
	b := newTestS3Bucket(t, testS3Config(srv))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01CLOSED", 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Deliver after Close: %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Both readers list the events a bucket holds, by key, and leave out
// temporary files and probes; Read gives the bytes, or fs.ErrNotExist.
func TestBucketReaders(t *testing.T) {
	evs := []*bhiv.Event{
		testEvent(t, bhiv.KindExecution, "01READ1", 10),
		testEvent(t, bhiv.KindReward, "01READ2", 10),
	}
	srv := s3test.Start(t, testS3Bucket)
	sb := newTestS3Bucket(t, testS3Config(srv))
	fb := newTestBucket(t, BucketConfig{})
	for _, ev := range evs {
		for _, s := range []bhiv.Sink{sb, fb} {
			if err := s.Deliver(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Leftovers that are not events.
	writeFile(t, filepath.Join(fb.Dir(), "execution", "2026-11-28", tmpPrefix+"01X.json-123"), "partial")
	if err := sb.probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Another prefix in the same bucket is not this bucket's.
	if err := srv.Put(testS3Bucket, "other/execution/2026-11-28/01NOT.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	s3r, err := NewS3Reader(context.Background(), testS3Config(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer s3r.Close()
	for name, r := range map[string]BucketReader{"dir": NewDirReader(fb.Dir()), "s3": s3r} {
		t.Run(name, func(t *testing.T) {
			var keys []string
			if err := r.List(context.Background(), func(k string) error { keys = append(keys, k); return nil }); err != nil {
				t.Fatal(err)
			}
			slices.Sort(keys)
			want := []string{"execution/2026-11-28/01READ1.json", "reward/2026-11-28/01READ2.json"}
			if !slices.Equal(keys, want) {
				t.Errorf("List: %q, want %q", keys, want)
			}
			for i, k := range want {
				got, err := r.Read(context.Background(), k)
				enc, _ := evs[i].JSON()
				if err != nil || !bytes.Equal(got, append(enc, '\n')) {
					t.Errorf("Read(%s) = %q, %v", k, got, err)
				}
			}
			if _, err := r.Read(context.Background(), "execution/2026-11-28/01NONE.json"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Read of a missing key: %v, want fs.ErrNotExist", err)
			}
			stop := errors.New("stop")
			if err := r.List(context.Background(), func(string) error { return stop }); !errors.Is(err, stop) {
				t.Errorf("List did not stop at fn's error: %v", err)
			}
		})
	}
	if err := NewDirReader(filepath.Join(t.TempDir(), "none")).List(context.Background(), func(string) error { return nil }); err != nil {
		t.Errorf("a missing directory is an empty bucket: %v", err)
	}
}
