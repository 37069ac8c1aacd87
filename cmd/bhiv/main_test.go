package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// envMap returns the getenv run gets from main when the environment is m.
func envMap(m map[string]string) func(string) string {
	return getenvFrom(func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	})
}

// runBhiv runs the binary in-process and returns its output.
func runBhiv(t *testing.T, ctx context.Context, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = run(ctx, append([]string{"bhiv"}, args...), envMap(env), &out, &errb)
	return out.String(), errb.String(), err
}

// streamCount returns how many messages the stream holds.
func streamCount(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestBadSettingsNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"BHIV_CONCURRENCY": "many"}, []string{"consume"}, "BHIV_CONCURRENCY"},
		{map[string]string{"BHIV_CORE_TIMEOUT": "10"}, []string{"consume"}, "BHIV_CORE_TIMEOUT"},
		{map[string]string{"BHIV_CORE_URL": "ftp://x"}, []string{"consume"}, "BHIV_CORE_URL"},
		{map[string]string{"BHIV_CORE_CONCURRENCY": "many"}, []string{"consume"}, "BHIV_CORE_CONCURRENCY"},
		{map[string]string{"BHIV_CORE_CONCURRENCY": "0"}, []string{"consume"}, "BHIV_CORE_CONCURRENCY"},
		{map[string]string{"BHIV_CORE_CONCURRENCY_MIN": "0"}, []string{"consume"}, "BHIV_CORE_CONCURRENCY_MIN"},
		{map[string]string{"BHIV_CORE_CONCURRENCY_MIN": "64", "BHIV_CORE_CONCURRENCY_MAX": "32"}, []string{"consume"}, "BHIV_CORE_CONCURRENCY_MAX"},
		{map[string]string{"BHIV_CORE_CONCURRENCY_MAX": "20000"}, []string{"replay"}, "BHIV_CORE_CONCURRENCY_MAX"},
		{map[string]string{"LOG_LEVEL": "loud"}, []string{"consume"}, "LOG_LEVEL"},
		{map[string]string{"BHIV_BUCKET_FSYNC": "maybe"}, []string{"consume"}, "BHIV_BUCKET_FSYNC"},
		{map[string]string{"BHIV_STREAM": "bad name"}, []string{"publish", "execution", "--team", "t", "--action", "a"}, "BHIV_STREAM"},
		{map[string]string{}, []string{"consume", "--concurrency", "0"}, "--concurrency"},
		{map[string]string{"NATS_PASSWORD": "hunter2"}, []string{"consume"}, "NATS_USER"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			// An unreachable NATS proves the error comes before connecting.
			tt.env["NATS_URL"] = "nats://127.0.0.1:1"
			_, _, err := runBhiv(t, context.Background(), tt.env, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to name %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a secret: %v", err)
			}
			if exitCode(err) != 2 {
				t.Errorf("exit code %d, want 2", exitCode(err))
			}
		})
	}
}

// consumeEnv returns the environment of an in-process `bhiv consume` against
// the NATS server at natsURL and the Core at coreURL, with its files under
// dir.
func consumeEnv(t *testing.T, natsURL, coreURL string) (env map[string]string, dir string) {
	dir = t.TempDir()
	return map[string]string{
		"NATS_URL":        natsURL,
		"BHIV_CORE_URL":   coreURL,
		"BHIV_BUCKET_DIR": filepath.Join(dir, "bucket"),
		"BHIV_FAILED_LOG": filepath.Join(dir, "failed.log"),
		"BHIV_ADMIN_ADDR": "127.0.0.1:0",
		"LOG_FORMAT":      "json",
	}, dir
}

// startConsume runs `bhiv consume` in-process with env until stop is
// called; stop returns its error, or one saying it did not stop within 40s.
func startConsume(t *testing.T, env map[string]string) (logs *syncBuffer, stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	logs = new(syncBuffer)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), io.Discard, logs) }()
	return logs, func() error {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("consume returned %w", err)
			}
			return nil
		case <-time.After(40 * time.Second):
			return errors.New("consume did not stop")
		}
	}
}

// TestConsumeInProcess runs `bhiv consume` in-process against an embedded
// server and the core stub, publishes, and stops it with ctx.
func TestConsumeInProcess(t *testing.T) {
	srv := natstest.Start(t)
	stub, err := corestub.New(corestub.Config{Token: "tok-secret-123"})
	if err != nil {
		t.Fatal(err)
	}
	env, dir := consumeEnv(t, srv.URL(), httptestServer(t, stub)+corestub.Path)
	env["BHIV_CORE_TOKEN"] = "tok-secret-123"
	logs, stop := startConsume(t, env)

	for i := 0; i < 50; i++ {
		if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t1", "--action", "a", "--id", fmt.Sprintf("ip-%d", i)); err != nil {
			t.Fatalf("publish: %v %s", err, errOut)
		}
	}
	waitFor(t, 20*time.Second, func() bool { return stub.Stats().Unique == 50 })
	waitFor(t, 10*time.Second, func() bool { return countFiles(t, filepath.Join(dir, "bucket")) == 50 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "tok-secret-123") {
		t.Errorf("the Core token appears in the logs")
	}
	if !strings.Contains(logs.String(), "bhiv consume starting") {
		t.Errorf("no start-up line in the logs:\n%s", logs.String())
	}
}

// TestDevSubprocess starts `bhiv dev` as a subprocess, publishes with `bhiv
// publish`, finds the event at the core stub and in the bucket, then stops
// it with SIGTERM.
func TestDevSubprocess(t *testing.T) {
	bin, err := exec.LookPath("bhiv")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "dev", "--nats-addr", "127.0.0.1:0", "--data", dir)
	cmd.Env = append(os.Environ(), "BHIV_CORE_STUB_ADDR=127.0.0.1:0", "BHIV_ADMIN_ADDR=127.0.0.1:0", "BHIV_INGEST_ADDR=127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var natsURL, stubURL string
	sc := bufio.NewScanner(stdout)
	reNATS := regexp.MustCompile(`NATS \(JetStream\)\s+(\S+)`)
	reStub := regexp.MustCompile(`Core stub\s+(\S+)`)
	for sc.Scan() && (natsURL == "" || stubURL == "") {
		if m := reNATS.FindStringSubmatch(sc.Text()); m != nil {
			natsURL = m[1]
		}
		if m := reStub.FindStringSubmatch(sc.Text()); m != nil {
			stubURL = m[1]
		}
	}
	go io.Copy(io.Discard, stdout)
	if natsURL == "" || stubURL == "" {
		t.Fatalf("no banner; stderr:\n%s", stderr.String())
	}
	pub := exec.Command(bin, "publish", "execution", "--nats-url", natsURL, "--team", "team_42", "--action", "analyze_data", "--id", "dev-1")
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	waitFor(t, 20*time.Second, func() bool {
		resp, err := http.Get(stubURL + "/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st corestub.Stats
		json.NewDecoder(resp.Body).Decode(&st)
		return st.Unique == 1
	})
	// Core and the bucket take the event concurrently: the file may come
	// a moment after Core has it.
	waitFor(t, 10*time.Second, func() bool {
		matches, _ := filepath.Glob(filepath.Join(dir, "bucket", "execution", "*", "dev-1.json"))
		return len(matches) == 1
	})
	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("bhiv dev exited with %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("bhiv dev did not stop on SIGTERM")
	}
}

func httptestServer(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := listenAdmin("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".json") {
			n++
		}
		return nil
	})
	return n
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
