package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/ingest"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// postJSON POSTs body with the headers ("Name: value") and returns the
// status and the decoded answer.
func postJSON(t *testing.T, url, body string, headers ...string) (int, ingest.Answer) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(k, strings.TrimSpace(v))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a ingest.Answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("POST %s: answer is not JSON: %v", url, err)
	}
	return resp.StatusCode, a
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestIngestInProcess runs `bhiv ingest` in-process against an embedded
// JetStream server: it creates the stream, takes a bare POST on the old
// Core path with the token and refuses one without, serves /readyz and
// /metrics on its own port, never logs the token, and stops cleanly with
// its context.
func TestIngestInProcess(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	env := map[string]string{
		"NATS_URL":          srv.URL(),
		"BHIV_INGEST_ADDR":  "127.0.0.1:0",
		"BHIV_INGEST_TOKEN": "tok-ingest-456",
		"LOG_FORMAT":        "json",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "ingest"}, envMap(env), io.Discard, &logs) }()
	re := regexp.MustCompile(`"msg":"ingest listening".*"core":"([^"]+)"`)
	var coreURL string
	waitFor(t, 20*time.Second, func() bool {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			coreURL = m[1]
		}
		return coreURL != ""
	})
	base := strings.TrimSuffix(coreURL, ingest.CorePath)

	payload := `{"team_id":"team_42","action":"analyze_data","status":"ok"}`
	if st, a := postJSON(t, coreURL, payload); st != 401 || a.Reason != "unauthorized" {
		t.Errorf("without the token: %d %+v", st, a)
	}
	st, a := postJSON(t, coreURL, payload, "Authorization: Bearer tok-ingest-456", "Idempotency-Key: cli-1")
	if st != 202 || !slices.Equal(a.IDs, []string{"cli-1"}) {
		t.Fatalf("with the token: %d %+v", st, a)
	}
	if n := streamCount(t, js, "BHIV"); n != 1 {
		t.Errorf("the stream holds %d, want 1", n)
	}
	if st, body := get(t, base+"/readyz"); st != 200 {
		t.Errorf("readyz: %d %s", st, body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{`bhiv_ingest_requests_total{code="202",path="/bhiv/core"} 1`, `bhiv_ingest_events_total{kind="execution",outcome="stored"} 1`, "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ingest returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ingest did not stop")
	}
	if strings.Contains(logs.String(), "tok-ingest-456") {
		t.Errorf("the ingest token appears in the logs")
	}
	for _, want := range []string{"bhiv ingest starting", `"bhiv_ingest_token":"<redacted>"`, "ingest stopped cleanly"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}

// TestIngestBadSettings: bad ingest settings are named before anything
// connects, with exit status 2.
func TestIngestBadSettings(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"BHIV_INGEST_WRITE_TIMEOUT": "3s"}, "BHIV_INGEST_WRITE_TIMEOUT"},
		{map[string]string{"BHIV_INGEST_ADDR": "8082"}, "BHIV_INGEST_ADDR"},
		{map[string]string{"BHIV_INGEST_ADDR": "off"}, "BHIV_INGEST_ADDR"},
		{map[string]string{"BHIV_INGEST_MAX_BYTES": "0"}, "BHIV_INGEST_MAX_BYTES"},
		{map[string]string{"BHIV_INGEST_PUBLISH_TIMEOUT": "soon"}, "BHIV_INGEST_PUBLISH_TIMEOUT"},
		{map[string]string{"BHIV_INGEST_TOKEN": "hunter2", "BHIV_INGEST_READ_TIMEOUT": "0s"}, "BHIV_INGEST_READ_TIMEOUT"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			tt.env["NATS_URL"] = "nats://127.0.0.1:1"
			_, _, err := runBhiv(t, context.Background(), tt.env, "ingest")
			if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != 2 {
				t.Fatalf("err = %v (exit %d), want it to name %s with exit 2", err, exitCode(err), tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

// TestDevIngestEndToEnd runs `bhiv dev` in-process and sends events the
// ways a service without NATS would — the banner's own curl line, the old
// send_to_core body on /bhiv/core, a binary-mode event and a batch — then
// finds every answered id at Core (the stub) and in the bucket: ingest →
// stream → consumer → sinks.
func TestDevIngestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"BHIV_CORE_STUB_ADDR": "127.0.0.1:0", "BHIV_ADMIN_ADDR": "127.0.0.1:0", "BHIV_INGEST_ADDR": "127.0.0.1:0",
		"LOG_FORMAT": "json",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"bhiv", "dev", "--nats-addr", "127.0.0.1:0", "--data", dir}, envMap(env), &out, &logs)
	}()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(out.String(), "Ctrl-C stops") })
	banner := out.String()
	ingestURL := regexp.MustCompile(`HTTP ingest\s+(\S+)`).FindStringSubmatch(banner)
	stubURL := regexp.MustCompile(`Core stub\s+(\S+)`).FindStringSubmatch(banner)
	curlLine := regexp.MustCompile(`(?m)^\s+(curl -i .*)$`).FindStringSubmatch(banner)
	if ingestURL == nil || stubURL == nil || curlLine == nil {
		t.Fatalf("banner lacks the ingest URL, the stub URL or the curl example:\n%s\n%s", banner, logs.String())
	}
	var ids []string
	if _, err := exec.LookPath("curl"); err == nil {
		cmdOut, err := exec.Command("sh", "-c", curlLine[1]+" -sS").CombinedOutput()
		if err != nil || !strings.Contains(string(cmdOut), "HTTP/1.1 202 Accepted") {
			t.Fatalf("the banner's curl line %q: %v\n%s", curlLine[1], err, cmdOut)
		}
		var a ingest.Answer
		if err := json.Unmarshal(cmdOut[strings.LastIndex(string(cmdOut), "\r\n\r\n")+4:], &a); err != nil || len(a.IDs) != 1 {
			t.Fatalf("curl answer %q: %v", cmdOut, err)
		}
		ids = append(ids, a.IDs...)
	} else {
		t.Log("curl is not installed: the banner's curl line is not run")
	}
	core := ingestURL[1] + ingest.CorePath
	for _, tt := range []struct {
		url, body string
		headers   []string
	}{
		{core, `{"team_id": "team_42", "action": "analyze_data", "status": "ok", "duration_ms": 1200}`, nil},
		{core, `{"team_id": "team_42", "execution_id": "e-1", "reward": 10, "reason": "fast"}`, []string{"Idempotency-Key: dev-reward-1"}},
		{ingestURL[1] + "/events/execution", `{"team_id":"team_7","action":"x"}`,
			[]string{"ce-specversion: 1.0", "ce-id: dev-bin-1", "ce-type: bhiv.execution", "ce-source: executor"}},
		{core, fmt.Sprintf(`[{"specversion":"1.0","id":"dev-b-1","source":"s","type":"bhiv.reward","time":"%s","data":{"team_id":"t","reward":1}},`+
			`{"specversion":"1.0","id":"dev-b-2","source":"s","type":"bhiv.execution","time":"%[1]s","data":{"team_id":"t","action":"y"}}]`, time.Now().UTC().Format(time.RFC3339)),
			[]string{"Content-Type: application/cloudevents-batch+json"}},
	} {
		st, a := postJSON(t, tt.url, tt.body, tt.headers...)
		if st != 202 || len(a.IDs) == 0 {
			t.Fatalf("POST %s %s: %d %+v", tt.url, tt.body, st, a)
		}
		ids = append(ids, a.IDs...)
	}
	waitFor(t, 30*time.Second, func() bool {
		_, body := get(t, stubURL[1]+"/stats")
		var st corestub.Stats
		json.Unmarshal([]byte(body), &st)
		return st.Unique == int64(len(ids))
	})
	waitFor(t, 10*time.Second, func() bool {
		for _, id := range ids {
			if m, _ := filepath.Glob(filepath.Join(dir, "bucket", "*", "*", id+".json")); len(m) != 1 {
				return false
			}
		}
		return true
	})
	for _, id := range []string{"dev-reward-1", "dev-bin-1", "dev-b-1"} {
		if !slices.Contains(ids, id) {
			t.Errorf("id %s was not answered", id)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "bucket", "reward", "*", "dev-reward-1.json")); len(m) != 1 {
		t.Errorf("the send_to_core reward is not a reward in the bucket")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev returned %v\n%s", err, logs.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("dev did not stop")
	}
}
