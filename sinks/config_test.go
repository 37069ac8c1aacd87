package sinks

import (
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// TestConfigValidate checks, row by row, the Validate of every Config of
// the package but CoreConfig (its own table is in core_test.go): each one
// checks the config after its defaults, so that the zero value of each is
// valid but S3Config's, which needs a bucket name.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // substring of the error; "" for valid
	}{
		{"bucket: zero", BucketConfig{}.Validate(), ""},
		{"bucket: no retries", BucketConfig{Retries: -1}.Validate(), ""},
		{"bucket: negative retry delay", BucketConfig{RetryDelay: -time.Second}.Validate(), "retry delay -1s"},

		{"failure log: zero", FailureLogConfig{}.Validate(), ""},
		{"failure log: never rotated", FailureLogConfig{Path: "x/failed.log", MaxBytes: -1}.Validate(), ""},
		{"failure log: a directory", FailureLogConfig{Path: "data/"}.Validate(), "names a directory"},
		{"failure log: dot", FailureLogConfig{Path: "."}.Validate(), "names a directory"},

		{"replay: zero", ReplayConfig{}.Validate(), ""},
		{"replay: filters", ReplayConfig{Sink: CoreName, Kind: bhiv.KindReward, Rate: 10, Wait: -1}.Validate(), ""},
		{"replay: negative rate", ReplayConfig{Rate: -1}.Validate(), "rate -1"},
		{"replay: unknown kind", ReplayConfig{Kind: "bonus"}.Validate(), `kind "bonus"`},
		{"replay: log path a directory", ReplayConfig{Path: "data/"}.Validate(), "names a directory"},

		{"s3: bucket only", S3Config{Bucket: "events"}.Validate(), ""},
		{"s3: no bucket", S3Config{}.Validate(), "s3 bucket name"},
		{"s3: endpoint with a path", S3Config{Bucket: "events", Endpoint: "http://minio:9000/x"}.Validate(), "s3 endpoint"},
		{"s3: lookup", S3Config{Bucket: "events", Lookup: "dns"}.Validate(), `s3 lookup "dns"`},
		{"s3: conditional", S3Config{Bucket: "events", Conditional: "maybe"}.Validate(), `conditional writes "maybe"`},
		{"s3: half a key", S3Config{Bucket: "events", AccessKeyID: "id"}.Validate(), "go together"},
		{"s3: negative timeout", S3Config{Bucket: "events", Timeout: -time.Second}.Validate(), "must not be negative"},
	}
	for _, tt := range tests {
		switch {
		case tt.want == "" && tt.err != nil:
			t.Errorf("%s: %v", tt.name, tt.err)
		case tt.want != "" && (tt.err == nil || !strings.Contains(tt.err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error containing %q", tt.name, tt.err, tt.want)
		}
	}
	// Every problem at once.
	err := S3Config{Lookup: "dns", AccessKeyID: "id"}.Validate()
	for _, want := range []string{"s3 bucket name", "s3 lookup", "go together"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("S3Config with three problems: %v, want %q among them", err, want)
		}
	}
}

// TestConfigDefaults checks that WithDefaults sets every zero field, and
// leaves a set one alone.
func TestConfigDefaults(t *testing.T) {
	if b := (BucketConfig{}).WithDefaults(); b.Dir != DefaultBucketDir || b.Retries != DefaultBucketRetries || b.RetryDelay != DefaultBucketRetryDelay || b.Logger == nil {
		t.Errorf("bucket defaults %+v", b)
	}
	// Applying the defaults twice changes nothing: a negative Retries (none)
	// must not become 0 (the default) on the way.
	if b := (BucketConfig{Retries: -1}).WithDefaults(); b.WithDefaults() != b {
		t.Errorf("bucket with Retries -1: %+v, then %+v", b, b.WithDefaults())
	}
	if s := (S3Config{Bucket: "events", Retries: -1}).WithDefaults(); s.WithDefaults() != s {
		t.Errorf("s3 with Retries -1: %+v, then %+v", s, s.WithDefaults())
	}
	if f := (FailureLogConfig{}).WithDefaults(); f.Path != DefaultFailureLogPath || f.MaxBytes != DefaultFailureLogMaxBytes || f.Logger == nil {
		t.Errorf("failure log defaults %+v", f)
	}
	if r := (ReplayConfig{}).WithDefaults(); r.Path != DefaultFailureLogPath || r.Wait != DefaultReplayWait || r.Logger == nil {
		t.Errorf("replay defaults %+v", r)
	}
	if r := (ReplayConfig{Wait: -1}).WithDefaults(); r.Wait != -1 {
		t.Errorf("replay with Wait -1 (no wait): Wait %s", r.Wait)
	}
	s := S3Config{Bucket: "events", Prefix: "/prod/"}.WithDefaults()
	if s.Prefix != "prod" || s.Endpoint != DefaultS3Endpoint || s.Lookup != S3LookupAuto || s.Conditional != ConditionalAuto ||
		s.Timeout != DefaultS3Timeout || s.Retries != DefaultS3Retries || s.RetryDelay != DefaultS3RetryDelay || s.MaxConns == 0 || s.Logger == nil {
		t.Errorf("s3 defaults %+v", s)
	}
}

// TestConstructorsValidate checks that the constructors refuse what
// Validate refuses, before they touch anything.
func TestConstructorsValidate(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewBucket(BucketConfig{Dir: dir, RetryDelay: -time.Second}); err == nil {
		t.Error("NewBucket took a negative retry delay")
	}
	if _, err := OpenFailureLog(FailureLogConfig{Path: dir + "/"}); err == nil || !strings.Contains(err.Error(), "names a directory") {
		t.Errorf("OpenFailureLog on a directory path: %v", err)
	}
	if _, err := Replay(t.Context(), ReplayConfig{Path: dir + "/failed.log", Rate: -1}); err == nil {
		t.Error("Replay took a negative rate")
	}
	if _, err := NewS3Reader(t.Context(), S3Config{Bucket: "events", Lookup: "dns"}); err == nil {
		t.Error("NewS3Reader took an unknown lookup")
	}
}
