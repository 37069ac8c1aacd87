package main

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""},
		{"-1", -1, ""},
		{"4096", 4096, ""},
		{"4096B", 4096, ""},
		{"512MiB", 512 << 20, ""},
		{"10GiB", 10 << 30, ""},
		{"10 gib", 10 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"-2", 0, "negative"},
		{"-1GiB", 0, "negative"},
		{"10GB", 0, "not a size"},
		{"ten", 0, "not a size"},
		{"", 0, "not a size"},
		{"99999999999TiB", 0, "too large"},
	} {
		got, err := parseSize(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseSize(%q) = %d, %v; want an error saying %q", tc.in, got, err, tc.err)
		}
	}
}

// TestStreamRetentionSettings: BHIV_STREAM_MAX_AGE and BHIV_STREAM_MAX_BYTES
// reach the stream config; 0 is no age limit, bounded by 10 GiB unless the
// size is set.
func TestStreamRetentionSettings(t *testing.T) {
	for _, tc := range []struct {
		env      map[string]string
		maxAge   time.Duration // after defaults
		maxBytes int64         // after defaults
		err      string
	}{
		{map[string]string{}, 7 * 24 * time.Hour, 0, ""},
		{map[string]string{"BHIV_STREAM_MAX_AGE": "720h"}, 720 * time.Hour, 0, ""},
		{map[string]string{"BHIV_STREAM_MAX_AGE": "0"}, bhiv.NoMaxAge, bhiv.DefaultStreamMaxBytes, ""},
		{map[string]string{"BHIV_STREAM_MAX_AGE": "0", "BHIV_STREAM_MAX_BYTES": "50GiB"}, bhiv.NoMaxAge, 50 << 30, ""},
		{map[string]string{"BHIV_STREAM_MAX_AGE": "0", "BHIV_STREAM_MAX_BYTES": "-1"}, bhiv.NoMaxAge, -1, ""},
		{map[string]string{"BHIV_STREAM_MAX_BYTES": "1GiB"}, 7 * 24 * time.Hour, 1 << 30, ""},
		{map[string]string{"BHIV_STREAM_MAX_AGE": "1m"}, 0, 0, "BHIV_STREAM_MAX_AGE"},
		{map[string]string{"BHIV_STREAM_MAX_AGE": "-1h"}, 0, 0, "BHIV_STREAM_MAX_AGE"},
		{map[string]string{"BHIV_STREAM_MAX_BYTES": "lots"}, 0, 0, "BHIV_STREAM_MAX_BYTES"},
	} {
		c := newConfig(flag.NewFlagSet("test", flag.ContinueOnError), envMap(tc.env), natsSettings)
		n := readNATS(c)
		err := c.err()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err = %v, want one naming %s", tc.env, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		s := n.stream.WithDefaults()
		if s.MaxAge != tc.maxAge || s.MaxBytes != tc.maxBytes {
			t.Errorf("%v: max age %s, max bytes %d; want %s, %d", tc.env, s.MaxAge, s.MaxBytes, tc.maxAge, tc.maxBytes)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("%v: %v", tc.env, err)
		}
	}
}
