package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestBenchEmbedded runs `bhiv bench --embedded` in-process and checks the
// table and the JSON it prints (what is measured, not how fast).
func TestBenchEmbedded(t *testing.T) {
	out, errOut, err := runBhiv(t, context.Background(), map[string]string{"BHIV_CONCURRENCY": "16"},
		"bench", "--embedded", "--events", "2000", "--ceilings", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut)
	}
	for _, want := range []string{"publish rate", "end-to-end", "latency publish → Core", "p99", "peak RSS", "jetstream_publish_async", "file_temp_fsync_rename", "http_post"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`failure-log records\s+0\n`).MatchString(out) {
		t.Errorf("failure-log records not 0:\n%s", out)
	}
	out, errOut, err = runBhiv(t, context.Background(), nil, "bench", "--embedded", "--events", "500", "--json", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench --json: %v\n%s", err, errOut)
	}
	var r struct {
		Events       int     `json:"events"`
		EndToEndRate float64 `json:"end_to_end_rate"`
		Latency      *struct {
			P50 int64 `json:"p50"`
		} `json:"latency"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Events != 500 || r.EndToEndRate <= 0 || r.Latency == nil || r.Latency.P50 <= 0 {
		t.Errorf("JSON %q: %+v %v", out, r, err)
	}
	if _, _, err := runBhiv(t, context.Background(), nil, "bench", "--embedded", "--execution-share", "2"); err == nil || exitCode(err) != 2 {
		t.Errorf("bad share: %v", err)
	}
}
