package ingest

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// pythonLine is one answer as the Python script printed it.
type pythonLine struct {
	Status     int     `json:"status"`
	RetryAfter *string `json:"retry_after"`
	Body       Answer  `json:"body"`
}

// needPython skips the test unless python3 with requests is installed.
func needPython(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	if out, err := exec.Command(py, "-c", "import requests").CombinedOutput(); err != nil {
		t.Skipf("python3 has no requests: %s", out)
	}
	return py
}

// TestPythonSendToCore runs the old connector's send_to_core, unchanged
// (requests.post(BHIV_CORE_URL, json=payload, timeout=5)), against
// /bhiv/core: an execution and a reward payload are stored as events of
// their kind with the payload as data, and the connector's own
// raise_for_status passes. Then the retry path as a careful Python service
// runs it: JetStream cannot take the event (the stream is full), the
// service is told 503 with Retry-After, sleeps that long and sends again
// with the same Idempotency-Key; room is made meanwhile, the retry is
// stored, and sending once more is a duplicate, not a second event.
func TestPythonSendToCore(t *testing.T) {
	py := needPython(t)
	f := newFixture(t, Config{RetryAfter: time.Second}, fullStream(-1))
	script := filepath.Join("testdata", "send_to_core.py")
	python := func(args ...string) *exec.Cmd {
		cmd := exec.Command(py, append([]string{script}, args...)...)
		cmd.Env = append(os.Environ(), "BHIV_CORE_URL="+f.url+CorePath)
		return cmd
	}
	send := func(payload string) pythonLine {
		t.Helper()
		out, err := python("send", payload).Output()
		if err != nil {
			t.Fatalf("send_to_core(%s): %v\n%s", payload, err, stderrOf(err))
		}
		var l pythonLine
		if err := json.Unmarshal(out, &l); err != nil {
			t.Fatalf("send_to_core printed %q: %v", out, err)
		}
		return l
	}
	execution := `{"team_id": "team_42", "action": "analyze_data", "status": "ok", "output": "42 rows", "duration_ms": 1200}`
	reward := `{"team_id": "team_42", "execution_id": "e-1", "reward": 10, "reason": "fast and correct"}`
	kinds := map[string]bhiv.Kind{}
	for payload, kind := range map[string]bhiv.Kind{execution: bhiv.KindExecution, reward: bhiv.KindReward} {
		l := send(payload)
		if l.Status != 202 || len(l.Body.IDs) != 1 {
			t.Fatalf("send_to_core(%s): %+v", payload, l)
		}
		kinds[l.Body.IDs[0]] = kind
	}
	stored := f.stored()
	for id, kind := range kinds {
		ev := stored[id]
		var want string
		if kind == bhiv.KindExecution {
			want = execution
		} else {
			want = reward
		}
		if ev.Kind() != kind || string(ev.Data) != compact(t, want) || ev.TeamID() != "team_42" {
			t.Errorf("event %s: kind %s data %s, want %s %s", id, ev.Kind(), ev.Data, kind, compact(t, want))
		}
	}

	// JetStream cannot take more: the stream is full and discards new.
	f.setMaxMsgs(int64(f.count()))
	cmd := python("retry", execution, "exec-7")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var lines []pythonLine
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var l pythonLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("python printed %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
		if l.Status == 503 && len(lines) == 1 {
			f.setMaxMsgs(-1) // room again, while the service waits Retry-After
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the Python service gave up: %v\n%s", err, stderr.String())
	}
	if len(lines) < 2 {
		t.Fatalf("answers %+v: want a 503, then a 202", lines)
	}
	first, last := lines[0], lines[len(lines)-1]
	if first.Status != 503 || first.RetryAfter == nil || *first.RetryAfter != "1" ||
		len(first.Body.IDs) != 0 || !slices.Equal(first.Body.NotStored, []string{"exec-7"}) {
		t.Errorf("first answer %+v: want 503, Retry-After 1, exec-7 not stored", first)
	}
	if last.Status != 202 || !slices.Equal(last.Body.IDs, []string{"exec-7"}) || len(last.Body.Duplicates) != 0 {
		t.Errorf("last answer %+v: want 202 with exec-7 stored", last)
	}
	out, err := python("retry", execution, "exec-7").Output()
	if err != nil || !strings.Contains(string(out), `"duplicates": ["exec-7"]`) {
		t.Errorf("sending exec-7 again: %v %s; want a 202 flagging it duplicate", err, out)
	}
	if n := f.count(); n != 3 {
		t.Errorf("the stream holds %d events, want 3", n)
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestCurl posts with curl as a person would from a shell: a bare object
// (--json), a binary-mode event, a batch from a file, a body without
// Content-Type (curl -d sends it form-encoded) and an invalid event, and
// checks each status line and what was stored.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	f := newFixture(t, Config{})
	batch := filepath.Join(t.TempDir(), "batch.json")
	os.WriteFile(batch, []byte("["+envelope("c-3", bhiv.KindReward, "t1", `"reward":2`)+","+envelope("c-4", bhiv.KindReward, "t1", `"reward":3`)+"]"), 0o644)
	for _, tt := range []struct {
		name   string
		args   []string
		status string
		body   string // a part of the answer
	}{
		{"bare object with --json", []string{"--json", `{"team_id":"team_42","action":"analyze_data","status":"ok"}`, f.url + "/events/execution"},
			"HTTP/1.1 202 Accepted", `"ids":["`},
		{"binary mode", []string{"-H", "Content-Type: application/json", "-H", "ce-specversion: 1.0", "-H", "ce-id: c-1", "-H", "ce-type: bhiv.reward",
			"-H", "ce-source: grader%20v2", "-d", `{"team_id":"t1","reward":5}`, f.url + "/bhiv/core"},
			"HTTP/1.1 202 Accepted", `{"ids":["c-1"]}`},
		{"batch from a file", []string{"-H", "Content-Type: application/cloudevents-batch+json", "--data-binary", "@" + batch, f.url + "/events/reward"},
			"HTTP/1.1 202 Accepted", `{"ids":["c-3","c-4"]}`},
		{"-d without Content-Type", []string{"-d", `{"team_id":"t1","action":"a"}`, f.url + "/bhiv/core"},
			"HTTP/1.1 415 Unsupported Media Type", `application/x-www-form-urlencoded`},
		{"invalid event", []string{"--json", `{"action":"a"}`, f.url + "/events/execution"},
			"HTTP/1.1 400 Bad Request", `"reason":"missing team id"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(curl, append([]string{"-sS", "-i"}, tt.args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			status, _, _ := strings.Cut(string(out), "\r\n")
			if status != tt.status || !strings.Contains(string(out), tt.body) {
				t.Errorf("curl answered:\n%s\nwant %q and %s", out, tt.status, tt.body)
			}
		})
	}
	stored := f.stored()
	c1 := stored["c-1"]
	if len(stored) != 4 || c1.Source != "grader v2" || c1.Kind() != bhiv.KindReward {
		t.Errorf("stored %d events (c-1: %+v), want 4", len(stored), c1)
	}
}
