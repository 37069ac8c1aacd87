package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// TestMetricsAndSecrets runs `bhiv consume` against a NATS server that needs
// a password and a Core that needs a token and rejects some events, then
// checks that /metrics counts what happened, /healthz and /readyz answer,
// and that no secret shows in the logs, the metrics or the failure log.
func TestMetricsAndSecrets(t *testing.T) {
	const natsPass, coreToken = "nats-pass-0xDEADBEEF", "core-token-0xFEEDFACE"
	srv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "bhiv", natsPass })
	stub, err := corestub.New(corestub.Config{Token: coreToken})
	if err != nil {
		t.Fatal(err)
	}
	// Core rejects events whose id starts with "bad-" as a bad request.
	core := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Idempotency-Key"), "bad-") {
			http.Error(w, "rejected: schema", http.StatusBadRequest)
			return
		}
		stub.ServeHTTP(w, r)
	}))
	dir := t.TempDir()
	env := map[string]string{
		"NATS_URL":              srv.URL(),
		"NATS_USER":             "bhiv",
		"NATS_PASSWORD":         natsPass,
		"BHIV_CORE_URL":         core + corestub.Path,
		"BHIV_CORE_TOKEN":       coreToken,
		"BHIV_CORE_BACKOFF":     "10ms",
		"BHIV_BUCKET_DIR":       filepath.Join(dir, "bucket"),
		"BHIV_FAILED_LOG":       filepath.Join(dir, "failed.log"),
		"BHIV_ADMIN_ADDR":       "127.0.0.1:0",
		"LOG_FORMAT":            "json",
		"LOG_LEVEL":             "debug",
		"BHIV_SHUTDOWN_TIMEOUT": "5s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), io.Discard, &logs) }()

	const good, bad, invalid = 30, 5, 2
	for i := 0; i < good+bad; i++ {
		id := fmt.Sprintf("ok-%d", i)
		if i >= good {
			id = fmt.Sprintf("bad-%d", i)
		}
		if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "reward", "--team", "t1", "--reward", "1", "--id", id); err != nil {
			t.Fatalf("publish: %v %s", err, errOut)
		}
	}
	nc, err := nats.Connect(srv.URL(), nats.UserInfo("bhiv", natsPass))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := 0; i < invalid; i++ {
		nc.Publish("bhiv.events.execution", []byte("not json "+natsPass[:4]))
	}
	nc.Flush()

	metricsURL := waitForLogField(t, &logs, "admin server listening", "metrics")
	base := strings.TrimSuffix(metricsURL, "/metrics")
	want := map[string]float64{
		`bhiv_events_received_total{kind="reward"}`:                       good + bad,
		`bhiv_events_received_total{kind="invalid"}`:                      invalid,
		`bhiv_events_acked_total`:                                         good + bad,
		`bhiv_events_terminated_total`:                                    invalid,
		`bhiv_sink_deliveries_total{outcome="success",sink="core"}`:       good,
		`bhiv_sink_deliveries_total{outcome="permanent",sink="core"}`:     bad,
		`bhiv_sink_deliveries_total{outcome="success",sink="bucket"}`:     good + bad,
		`bhiv_failure_records_total{class="permanent",sink="core"}`:       bad,
		`bhiv_failure_records_total{class="invalid_input",sink="decode"}`: invalid,
		`bhiv_sink_delivery_duration_seconds_count{sink="core"}`:          good + bad,
		`bhiv_intake_paused`:                                              0,
		`bhiv_core_breaker_state`:                                         0,
		`bhiv_events_in_flight`:                                           0,
		`bhiv_sink_attempts_total{sink="core"}`:                           good + bad,
		`go_goroutines`:                                                   -1, // present
		`process_resident_memory_bytes`:                                   -1,
	}
	var got map[string]float64
	var text string
	deadline := time.Now().Add(30 * time.Second)
	for {
		text = httpGet(t, metricsURL)
		got = parseMetrics(text)
		if matches(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok || (v >= 0 && g != v) {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if body := httpGet(t, base+"/healthz"); !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %q", body)
	}
	if body := httpGet(t, base+"/readyz"); !strings.Contains(body, "ready") {
		t.Errorf("/readyz = %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("consume: %v", err)
	}
	failed, err := os.ReadFile(env["BHIV_FAILED_LOG"])
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(failed), "\n"); n != bad+invalid {
		t.Errorf("failure log has %d records, want %d", n, bad+invalid)
	}
	if !strings.Contains(string(failed), "rejected: schema") {
		t.Errorf("failure records lack Core's body excerpt:\n%s", failed)
	}
	for _, secret := range []string{natsPass, coreToken} {
		for what, s := range map[string]string{"logs": logs.String(), "metrics": text, "failure log": string(failed)} {
			if strings.Contains(s, secret) {
				t.Errorf("the secret %q appears in the %s", secret, what)
			}
		}
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// parseMetrics reads the Prometheus text format into name{labels} → value.
func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		fmt.Sscan(line[i+1:], &v)
		m[line[:i]] = v
	}
	return m
}

func matches(got, want map[string]float64) bool {
	for k, v := range want {
		g, ok := got[k]
		if !ok || (v >= 0 && g != v) {
			return false
		}
	}
	return true
}

// waitForLogField waits for a JSON log line with msg and returns its field.
func waitForLogField(t *testing.T, logs *syncBuffer, msg, field string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
				if s, ok := rec[field].(string); ok {
					return s
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no log line %q with %s; logs:\n%s", msg, field, logs.String())
	return ""
}
