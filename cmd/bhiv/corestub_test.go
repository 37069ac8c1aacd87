package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv/internal/corestub"
)

func TestCoreStubFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--capacity", "-1"},
		{"--latency-jitter", "-5ms"},
		{"--latency", "-1s"},
	} {
		_, _, err := runBhiv(t, context.Background(), map[string]string{}, append([]string{"core-stub", "--addr", "127.0.0.1:0"}, args...)...)
		if err == nil || exitCode(err) != 2 {
			t.Errorf("core-stub %v: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}

	// --capacity 1 --latency 200ms --latency-jitter 50ms: three requests at
	// once are served one after the other.
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"bhiv", "core-stub", "--addr", "127.0.0.1:0", "--capacity", "1", "--latency", "200ms", "--latency-jitter", "50ms"},
			envMap(map[string]string{"LOG_FORMAT": "json"}), io.Discard, &logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("core-stub: %v", err)
		}
	}()
	url := waitForLogField(t, &logs, "core stub listening", "url")
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			body := `{"team_id":"t","action":"a"}`
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
			req.Header = http.Header{"Content-Type": {"application/json"}, "Ce-Specversion": {"1.0"}, "Ce-Id": {fmt.Sprintf("flag-%d", i)},
				"Ce-Source": {"test"}, "Ce-Type": {"bhiv.execution"}, "Ce-Time": {"2026-11-28T02:30:00Z"}}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	// One at a time, each held 150-250ms: at least 450ms for three.
	if took := time.Since(start); took < 450*time.Millisecond {
		t.Errorf("3 requests took %s with capacity 1 and latency 200ms ± 50ms", took)
	}
	resp, err := http.Get(url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st corestub.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Unique != 3 || st.MaxQueued < 1 || st.ByMode["binary"] != 3 {
		t.Errorf("stats %+v", st)
	}
}
