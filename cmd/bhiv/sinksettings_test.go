package main

import (
	"flag"
	"testing"

	"github.com/hackaverse/bhiv/sinks"
)

// TestRetrySettingsZero checks that a retry setting of 0 means no retries,
// as .env.example says, and not the sink's default (0 in a sinks Config).
func TestRetrySettingsZero(t *testing.T) {
	for _, tc := range []struct {
		env      map[string]string
		core, s3 int // retries after defaults
	}{
		{map[string]string{}, sinks.DefaultCoreMaxRetries, sinks.DefaultS3Retries},
		{map[string]string{"BHIV_CORE_MAX_RETRIES": "0", "BHIV_S3_MAX_RETRIES": "0"}, 0, 0},
		{map[string]string{"BHIV_CORE_MAX_RETRIES": "5", "BHIV_S3_MAX_RETRIES": "2"}, 5, 2},
	} {
		tc.env["BHIV_BUCKET_URL"] = "s3://events/prod"
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		c := newConfig(fs, envMap(tc.env), coreSettings, bucketSettings, failureSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		sc := readSinks(c)
		if err := c.err(); err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if got := max(sc.core.WithDefaults().MaxRetries, 0); got != tc.core {
			t.Errorf("%v: Core retries %d, want %d", tc.env, got, tc.core)
		}
		if got := max(sc.s3.WithDefaults().Retries, 0); got != tc.s3 {
			t.Errorf("%v: S3 retries %d, want %d", tc.env, got, tc.s3)
		}
	}
}
