package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/audit"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/hackaverse/bhiv/sinks"
)

var (
	bhivBin string // the real binary, built once
	long    = os.Getenv("BHIV_E2E_LONG") == "1"
)

// size returns the CI size, or the full one with BHIV_E2E_LONG=1.
func size[T any](ci, full T) T {
	if long {
		return full
	}
	return ci
}

func TestMain(m *testing.M) {
	if os.Getenv("BHIV_E2E_ROLE") == "nats-server" {
		runNATSServer()
		return
	}
	dir, err := os.MkdirTemp("", "bhiv-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// BHIV_E2E_BIN runs the suite against a binary built elsewhere (for
	// example from a clean checkout while the tree is being edited).
	bhivBin = os.Getenv("BHIV_E2E_BIN")
	if bhivBin == "" {
		bhivBin = filepath.Join(dir, "bhiv")
		build := exec.Command("go", "build", "-o", bhivBin, "github.com/hackaverse/bhiv/cmd/bhiv")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: build bhiv:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runNATSServer is the nats-server role of this test binary: an embedded
// JetStream server configured from the environment, stopped by SIGTERM.
func runNATSServer() {
	port, _ := strconv.Atoi(os.Getenv("E2E_PORT"))
	o := &server.Options{
		ServerName: os.Getenv("E2E_NAME"), Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: os.Getenv("E2E_STORE"), NoSigs: true, MaxPayload: 8 << 20,
	}
	if cp := os.Getenv("E2E_CLUSTER_PORT"); cp != "" {
		p, _ := strconv.Atoi(cp)
		o.Cluster = server.ClusterOpts{Name: "e2e", Host: "127.0.0.1", Port: p}
		o.Routes = server.RoutesFromStr(os.Getenv("E2E_ROUTES"))
	}
	s, err := server.NewServer(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats-server:", err)
		os.Exit(1)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats-server: not ready")
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
}

// proc is a child process with its output in a log file.
type proc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	cwd  string // working directory; "" for the test's
	log  string
	cmd  *exec.Cmd
	done chan error
}

func start(t *testing.T, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	return startIn(t, dir, "", name, env, bin, args...)
}

// startIn is start with the process in the working directory cwd.
func startIn(t *testing.T, dir, cwd, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: append([]string{bin}, args...), env: env, cwd: cwd, log: filepath.Join(dir, name+".log")}
	p.start()
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Dir = p.cwd
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan error, 1)
	go func() { p.done <- cmd.Wait(); f.Close() }()
}

// kill sends sig and waits (bounded) for the process to end.
func (p *proc) kill(sig syscall.Signal) error {
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.cmd = nil
		return err
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		p.cmd = nil
		return fmt.Errorf("%s did not exit within 60s of %v", p.name, sig)
	}
}

func (p *proc) restart() { p.t.Helper(); p.start() }

// running reports whether the process is still alive; when it has exited
// on its own (a crash), it logs how and forgets the process.
func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case err := <-p.done:
		p.t.Logf("%s exited on its own: %v", p.name, err)
		p.cmd = nil
		return false
	default:
		return true
	}
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// dump logs the tail of the process log when the test failed.
func (p *proc) dump() {
	if !p.t.Failed() {
		return
	}
	b, _ := os.ReadFile(p.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	p.t.Logf("--- %s log (tail) ---\n%s", p.name, b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// stack is one scenario's processes and paths.
type stack struct {
	t         *testing.T
	dir       string
	natsURL   string
	nats      []*proc
	stub      *proc
	stubURL   string
	consumers []*proc
	env       []string
	// bucket, when set, is where the consumers keep the bucket (S3);
	// otherwise it is the directory <dir>/bucket.
	bucket sinks.BucketReader

	mu        sync.Mutex
	want      map[string]string // id of every valid event published → its bucket file (relative)
	pubFailed atomic.Int64      // events the publisher gave up on (a test failure)
}

// newStack starts nats-server (one node, or three with routes) and the core
// stub, and prepares the consumer environment.
func newStack(t *testing.T, nodes int, stubArgs ...string) *stack {
	t.Helper()
	s := &stack{t: t, dir: t.TempDir()}
	self, _ := os.Executable()
	var urls, routes []string
	ports, cports := make([]int, nodes), make([]int, nodes)
	for i := range ports {
		ports[i], cports[i] = freePort(t), freePort(t)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[i]))
	}
	for i := range ports {
		env := []string{"BHIV_E2E_ROLE=nats-server", fmt.Sprintf("E2E_PORT=%d", ports[i]),
			"E2E_STORE=" + filepath.Join(s.dir, fmt.Sprintf("nats%d", i)), fmt.Sprintf("E2E_NAME=n%d", i)}
		if nodes > 1 {
			env = append(env, fmt.Sprintf("E2E_CLUSTER_PORT=%d", cports[i]), "E2E_ROUTES="+strings.Join(routes, ","))
		}
		s.nats = append(s.nats, start(t, s.dir, fmt.Sprintf("nats%d", i), env, self))
	}
	s.natsURL = strings.Join(urls, ",")
	waitFor(t, 30*time.Second, "nats ready", func() bool {
		nc, err := nats.Connect(s.natsURL)
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = jsstream.Ensure(ctx, js, bhiv.StreamConfig{Replicas: nodes})
		return err == nil
	})
	stubAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.stubURL = "http://" + stubAddr + "/bhiv/core"
	s.stub = start(t, s.dir, "core-stub", []string{"BHIV_CORE_STUB_ADDR=" + stubAddr, "LOG_FORMAT=json"}, bhivBin,
		append([]string{"core-stub", "--record", filepath.Join(s.dir, "core.jsonl")}, stubArgs...)...)
	waitFor(t, 10*time.Second, "core stub up", func() bool {
		resp, err := http.Get(s.stubURL + "/stats")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	s.env = []string{
		"NATS_URL=" + s.natsURL, "BHIV_CORE_URL=" + s.stubURL,
		"BHIV_BUCKET_DIR=" + filepath.Join(s.dir, "bucket"), "BHIV_FAILED_LOG=" + filepath.Join(s.dir, "failed.log"),
		"BHIV_ADMIN_ADDR=", "BHIV_CORE_BACKOFF=50ms", "BHIV_CORE_BACKOFF_MAX=1s", "BHIV_CORE_BREAKER_DELAY=1s",
		"BHIV_CORE_TIMEOUT=2s", "BHIV_ACK_WAIT=5s", "BHIV_SHUTDOWN_TIMEOUT=5s", "LOG_FORMAT=json",
		fmt.Sprintf("BHIV_STREAM_REPLICAS=%d", nodes),
	}
	t.Cleanup(func() {
		for _, p := range append(append([]*proc{s.stub}, s.nats...), s.consumers...) {
			p.dump()
		}
		// BHIV_E2E_KEEP=<dir> keeps a failed scenario's logs, failure log
		// and core record there for a closer look.
		if keep := os.Getenv("BHIV_E2E_KEEP"); keep != "" && t.Failed() {
			dst := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
			os.MkdirAll(dst, 0o755)
			files, _ := filepath.Glob(filepath.Join(s.dir, "*.log*"))
			files = append(files, filepath.Join(s.dir, "core.jsonl"))
			for _, f := range files {
				if b, err := os.ReadFile(f); err == nil {
					os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644)
				}
			}
			t.Logf("logs kept in %s", dst)
		}
	})
	return s
}

// consumer starts one more `bhiv consume`.
func (s *stack) consumer(extraEnv ...string) *proc {
	s.t.Helper()
	p := start(s.t, s.dir, fmt.Sprintf("consumer%d", len(s.consumers)), append(append([]string{}, s.env...), extraEnv...), bhivBin, "consume")
	s.consumers = append(s.consumers, p)
	return p
}

// setFaults changes the stub's faults at run time.
func (s *stack) setFaults(faults string) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.stubURL+"/faults", strings.NewReader(faults))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("set faults: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		s.t.Fatalf("set faults: %s", resp.Status)
	}
}

// stubStats reads the core stub's counters (since its last start).
func (s *stack) stubStats() corestub.Stats {
	s.t.Helper()
	var st corestub.Stats
	resp, err := http.Get(s.stubURL + "/stats")
	if err != nil {
		s.t.Fatalf("core stub stats: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("core stub stats: %v", err)
	}
	return st
}

// js returns a JetStream context on the stack's NATS.
func (s *stack) js() (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := nats.Connect(s.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return nc, js
}

// publish publishes n events at about rate a second (0: as fast as it
// goes), retrying each until the stream has it, and returns their ids. It
// runs in the background; wait on the returned channel.
func (s *stack) publish(n int, rate float64) (ids []string, done chan struct{}) {
	s.t.Helper()
	_, js := s.js()
	p, err := publisher.New(context.Background(), js, publisher.Config{Source: "e2e"})
	if err != nil {
		s.t.Fatal(err)
	}
	events := make([]bhiv.Event, n)
	ids = make([]string, n)
	for i := range events {
		kind, data := bhiv.KindExecution, any(bhiv.Execution{TeamID: fmt.Sprintf("team_%d", i%7), Action: "e2e", Status: "ok", DurationMS: int64(i)})
		if i%3 == 0 {
			kind, data = bhiv.KindReward, bhiv.Reward{TeamID: fmt.Sprintf("team_%d", i%7), Reward: float64(i), Reason: "e2e"}
		}
		ev, err := bhiv.New(kind, "e2e", "", data)
		if err != nil {
			s.t.Fatal(err)
		}
		events[i], ids[i] = ev, ev.ID
		s.expect(ev)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		startAt := time.Now()
		deadline := time.Now().Add(5 * time.Minute)
		for i := range events {
			if rate > 0 {
				if d := time.Until(startAt.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
					time.Sleep(d)
				}
			}
			var err error
			for attempt := 0; attempt == 0 || time.Now().Before(deadline); attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err = p.Publish(ctx, events[i])
				cancel()
				if err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				s.pubFailed.Add(1) // reported by account: the run is not what the test thinks
			}
		}
	}()
	return ids, done
}

// expect records a valid event the test published: account checks it is at
// Core and in the bucket, or in the failure log for the sink that lacks it.
func (s *stack) expect(ev bhiv.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.want == nil {
		s.want = map[string]string{}
	}
	s.want[ev.ID] = filepath.Join(string(ev.Kind()), ev.Time.UTC().Format(time.DateOnly), ev.ID+".json")
}

// checkIDs is the test's own accounting, independent of the stream: every id
// it published must be at Core (the stub's record) or in a Core failure
// record, and in the bucket at its exact path or in a Bucket failure record.
// It returns how many of them are missing (each listed as an error).
func (s *stack) checkIDs(core map[string]int) (lost int) {
	s.t.Helper()
	failed := readFailed(s.t, filepath.Join(s.dir, "failed.log"))
	inBucket := func(rel string) bool {
		_, err := os.Stat(filepath.Join(s.dir, "bucket", rel))
		return err == nil
	}
	if s.bucket != nil {
		keys := map[string]bool{}
		if err := s.bucket.List(context.Background(), func(k string) error { keys[k] = true; return nil }); err != nil {
			s.t.Fatal(err)
		}
		inBucket = func(rel string) bool { return keys[filepath.ToSlash(rel)] }
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, rel := range s.want {
		var missing []string
		if core[id] == 0 && !failed[sinks.CoreName][id] {
			missing = append(missing, "core")
		}
		if !inBucket(rel) && !failed[sinks.BucketName][id] {
			missing = append(missing, "bucket")
		}
		if len(missing) > 0 {
			if lost++; lost <= 20 {
				s.t.Errorf("published event %s is lost: not at %s nor in the failure log", id, strings.Join(missing, ", "))
			}
		}
	}
	return lost
}

// consumerInfo returns the durable's info, or nil when it cannot be read.
func (s *stack) consumerInfo(js jetstream.JetStream) *jetstream.ConsumerInfo {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, "BHIV", "bhiv-sinks")
	if err != nil {
		return nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

// readFailed returns sink → event ids of the failure log at path and its
// rotated files (path.<time>). Only the head of each line is decoded: the raw
// bytes of hostile inputs (hundreds of MiB) are cut off, which keeps this
// fast under the race detector.
func readFailed(t *testing.T, path string) map[string]map[string]bool {
	t.Helper()
	files, _ := filepath.Glob(path + ".*")
	files = append(files, path)
	failed := map[string]map[string]bool{}
	for _, name := range files {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if i := bytes.Index(line, []byte(`,"raw":`)); i > 0 {
				line = append(line[:i:i], '}')
			}
			var r struct {
				Sink    string `json:"sink"`
				EventID string `json:"event_id"`
			}
			if json.Unmarshal(line, &r) != nil {
				t.Logf("%s: a line that is not a record: %.100q", name, line)
				continue
			}
			if failed[r.Sink] == nil {
				failed[r.Sink] = map[string]bool{}
			}
			failed[r.Sink][r.EventID] = true
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
	}
	return failed
}

// drained waits until the durable has nothing pending or ack-pending.
func (s *stack) drained(within time.Duration) {
	s.t.Helper()
	_, js := s.js()
	waitFor(s.t, within, "consumer drained", func() bool {
		info := s.consumerInfo(js)
		return info != nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// account stops the consumers and runs the audit; it fails on any loss and
// logs the scenario's counts.
func (s *stack) account(name string, published int) *audit.Report {
	s.t.Helper()
	for _, c := range s.consumers {
		if c.cmd != nil {
			if !c.running() {
				s.t.Errorf("%s crashed: it was not stopped by the test", c.name)
				continue
			}
			if err := c.kill(syscall.SIGTERM); err != nil {
				s.t.Errorf("%s: %v", c.name, err)
			}
		}
	}
	core, err := audit.ReadCoreRecord(filepath.Join(s.dir, "core.jsonl"))
	if err != nil {
		s.t.Fatal(err)
	}
	_, js := s.js()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ta := time.Now()
	r, err := audit.Check(ctx, audit.Config{JS: js, Durable: "bhiv-sinks", Bucket: s.bucket, BucketDir: filepath.Join(s.dir, "bucket"),
		FailureLog: filepath.Join(s.dir, "failed.log"), CoreSeen: core})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("audit.Check took %s", time.Since(ta).Round(time.Millisecond))
	lost := s.checkIDs(core)
	line := fmt.Sprintf("SCENARIO %s published=%d events=%d invalid=%d repeated=%d core=%d dup=%d bucket=%d failed=%d pending=%d lost=%d",
		name, published, r.Events, r.Invalid, r.RepeatedIDs, r.AtCore, r.CoreDuplicates, r.InBucket, r.FailureRecords, r.Pending,
		max(len(r.Lost), lost))
	s.t.Log(line)
	fmt.Println(line)
	if !r.OK() || r.Pending != 0 || len(r.Unexplained) != 0 {
		s.t.Errorf("accounting failed:\n%s", r)
	}
	if r.StreamMessages != published {
		s.t.Errorf("the stream holds %d messages, the test published %d", r.StreamMessages, published)
	}
	if n := s.pubFailed.Load(); n > 0 {
		s.t.Errorf("%d events could not be published within the deadline", n)
	}
	return r
}

// eventually reports whether cond became true within d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runCmd runs a command to its end and returns its error.
func runCmd(name string, args ...string) error { return exec.Command(name, args...).Run() }
