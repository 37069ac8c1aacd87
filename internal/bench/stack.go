package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/pipeline"
	"github.com/hackaverse/bhiv/sinks"
)

// stack is the embedded stack of a run.
type stack struct {
	ns   *server.Server
	stub *corestub.Stub
	http *http.Server
	url  string
	dir  string

	// The consumer: in-process (pipe, on its own connection nc, as in
	// `bhiv consume`), or a process (proc).
	nc   *nats.Conn
	pipe *pipeline.Pipeline
	stop context.CancelFunc
	done chan error
	proc *child

	mu       sync.Mutex
	latency  []time.Duration // publish → accepted by Core, of the run's events
	accepted int
	lastAt   time.Time // last acceptance
}

// sentField is the data field carrying the publish time, in Unix ns.
const sentField = "bench_sent_unix_nano"

func startStack(c Config) (*stack, error) {
	s := &stack{dir: c.Dir}
	o := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(c.Dir, "nats"), NoSigs: true, NoLog: true}
	ns, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("bench: nats server: %w", err)
	}
	go ns.Start()
	s.ns = ns
	if !ns.ReadyForConnections(10 * time.Second) {
		s.close()
		return nil, errors.New("bench: nats server did not start")
	}
	f := corestub.Faults{Latency: c.CoreLatency, LatencyJitter: c.CoreLatencyJitter}
	if c.CoreDown {
		f.FailRate, f.Status = 1, http.StatusServiceUnavailable
	}
	if s.stub, err = corestub.New(corestub.Config{Faults: f, Capacity: c.CoreCapacity}); err != nil {
		s.close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: core stub: %w", err)
	}
	s.url = "http://" + ln.Addr().String() + corestub.Path
	s.http = &http.Server{Handler: http.HandlerFunc(s.serveCore)}
	go s.http.Serve(ln)
	return s, nil
}

// accepted notes whether the stub answered 200: it writes every status
// explicitly, and an answer it did not write (the client went away while
// it waited) accepted nothing.
type accepted struct {
	http.ResponseWriter
	ok bool
}

func (w *accepted) WriteHeader(code int) {
	w.ok = code == http.StatusOK
	w.ResponseWriter.WriteHeader(code)
}

// serveCore lets the stub answer, then, when it accepted the request,
// records publish → accepted by Core for each event of the request that
// carries its publish time.
func (s *stack) serveCore(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.stub.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	aw := &accepted{ResponseWriter: w}
	s.stub.ServeHTTP(aw, r)
	if !aw.ok {
		return
	}
	now := time.Now()
	s.mu.Lock()
	for rest := body; ; {
		ns, tail, ok := sentTime(rest)
		if !ok {
			break
		}
		s.latency = append(s.latency, now.Sub(time.Unix(0, ns)))
		s.accepted++
		s.lastAt = now
		rest = tail
	}
	s.mu.Unlock()
}

var sentKey = []byte(`"` + sentField + `":`)

// sentTime finds the next publish time in b (a cheap scan rather than a
// second JSON decode on the measured path) and returns it with the rest of b.
func sentTime(b []byte) (ns int64, rest []byte, ok bool) {
	i := bytes.Index(b, sentKey)
	if i < 0 {
		return 0, nil, false
	}
	b = b[i+len(sentKey):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	ns, err := strconv.ParseInt(string(b[:j]), 10, 64)
	if err != nil {
		return sentTime(b[j:])
	}
	return ns, b[j:], true
}

// The files of the embedded consumer, under Config.Dir.
func (s *stack) bucketDir() string  { return filepath.Join(s.dir, "bucket") }
func (s *stack) failureLog() string { return filepath.Join(s.dir, "failed.log") }

func (s *stack) startConsumer(c Config) error {
	if c.ConsumerProcess {
		return s.startConsumerProcess(c)
	}
	nc, err := nats.Connect(s.ns.ClientURL(), nats.Name("bhiv bench consumer"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("bench: consumer connection: %w", err)
	}
	s.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	p, err := pipeline.New(js, pipeline.Config{
		Consumer: consumer.Config{ManageStream: true, Stream: bhiv.StreamConfig{Name: c.Stream}, Durable: c.Durable,
			Concurrency: c.Concurrency, MaxAckPending: c.MaxAckPending, SummaryInterval: -1},
		Core:       sinks.CoreConfig{URL: s.url},
		Bucket:     sinks.BucketConfig{Dir: s.bucketDir()},
		FailureLog: sinks.FailureLogConfig{Path: s.failureLog()},
		Logger:     c.Logger,
	})
	if err != nil {
		return err
	}
	s.pipe = p
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan error, 1)
	go func() { s.done <- p.Run(ctx) }()
	return nil
}

// consumerEnv is the environment of the consumer process: the embedded
// stack's addresses and files, every credential and the bucket URL cleared
// (an empty variable reads as unset), its admin server on adminAddr (the
// bench reads Core's limit from /metrics there, and the profiles with
// c.ConsumerProfile), then c.ConsumerEnv.
func (s *stack) consumerEnv(c Config, adminAddr string) []string {
	env := []string{
		"NATS_URL=" + s.ns.ClientURL(), "NATS_CREDS=", "NATS_USER=", "NATS_PASSWORD=", "NATS_TOKEN=", "NATS_NKEY_SEED=",
		"NATS_CA=", "NATS_CERT=", "NATS_KEY=",
		"BHIV_STREAM=" + c.Stream, "BHIV_SUBJECT_PREFIX=", "BHIV_STREAM_REPLICAS=1", "BHIV_MANAGE_STREAM=true",
		"BHIV_CONSUMER=" + c.Durable, "BHIV_CONCURRENCY=" + strconv.Itoa(c.Concurrency),
		"BHIV_CORE_URL=" + s.url, "BHIV_CORE_TOKEN=", "BHIV_CORE_CA_FILE=", "BHIV_CORE_CERT_FILE=", "BHIV_CORE_KEY_FILE=",
		"BHIV_BUCKET_URL=", "BHIV_BUCKET_DIR=" + s.bucketDir(), "BHIV_FAILED_LOG=" + s.failureLog(),
		"BHIV_ADMIN_ADDR=" + adminAddr, "BHIV_ADMIN_PPROF=" + strconv.FormatBool(c.ConsumerProfile != ""),
	}
	if c.MaxAckPending > 0 {
		env = append(env, "BHIV_MAX_ACK_PENDING="+strconv.Itoa(c.MaxAckPending))
	}
	if c.Hold > 0 {
		// Whatever is held at the end of a hold is Nak'ed at once: nothing
		// to wait for.
		env = append(env, "BHIV_SHUTDOWN_TIMEOUT=1s")
	}
	return append(env, c.ConsumerEnv...)
}

func (s *stack) startConsumerProcess(c Config) error {
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := startChild("consumer", c.ConsumerCmd, s.consumerEnv(c, admin), filepath.Join(c.Dir, "consumer.log"), nil)
	if err != nil {
		return err
	}
	s.proc = p
	return nil
}

// adminURL returns the base URL of the consumer process's admin server
// (the last BHIV_ADMIN_ADDR of its environment counts), or "" when off.
func (s *stack) adminURL() string {
	addr := ""
	for _, kv := range s.proc.cmd.Env {
		if v, ok := strings.CutPrefix(kv, "BHIV_ADMIN_ADDR="); ok {
			addr = v
		}
	}
	if addr == "" || addr == "off" {
		return ""
	}
	return "http://" + addr
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// stopConsumer stops the consumer, once, and returns what its Run (or its
// process) returned.
func (s *stack) stopConsumer() error {
	if s.proc != nil {
		p := s.proc
		s.proc = nil
		return p.stop(time.Minute)
	}
	if s.stop == nil {
		return nil
	}
	s.stop()
	err := <-s.done
	s.stop = nil
	if s.nc != nil {
		s.nc.Drain()
	}
	return err
}

func (s *stack) close() {
	s.stopConsumer()
	if s.pipe != nil {
		s.pipe.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.http != nil {
		s.http.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
}
