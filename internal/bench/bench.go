// Package bench is the load engine behind `bhiv bench` and the end-to-end
// benchmarks: it publishes events at a rate or as fast as it can, and
// measures the publish rate, the end-to-end rate (published → acked by the
// consumer, both sinks) and the latencies from publish to Core and to the
// consumer's ack, next to the ceilings of the parts measured in the same
// run.
package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/pipeline"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/hackaverse/bhiv/sinks"
)

// Config configures a run.
type Config struct {
	Events      int           // events to publish (default 10,000 when Duration is 0)
	Duration    time.Duration // publish for this long instead of a count
	Rate        float64       // events per second; 0 = as fast as possible
	Size        int           // approximate bytes of each event's data (default 256)
	Mix         Mix           // kinds published; zero = 70% executions, 30% rewards
	Concurrency int           // the embedded consumer's BHIV_CONCURRENCY (the Bucket's deliveries at once), default 256
	Ceilings    bool          // also measure the ceilings of the parts

	// MaxAckPending is the durable's BHIV_MAX_ACK_PENDING (embedded): how
	// far the Bucket may run ahead of a slow Core; 0 = the consumer's
	// default.
	MaxAckPending int

	// The embedded core stub: the latency of each request (varied
	// uniformly within ± CoreLatencyJitter), the requests it serves at once
	// (CoreCapacity, 0 = no limit; the others queue), and CoreDown: it
	// answers 503 to every event. Core's own concurrency is adaptive
	// (BHIV_CORE_CONCURRENCY=auto).
	CoreLatency       time.Duration
	CoreLatencyJitter time.Duration
	CoreCapacity      int
	CoreDown          bool

	// Preload publishes every event before the consumer starts: a backlog
	// (embedded). Rates then count from the consumer's start.
	Preload bool
	// Hold runs the consumer, once it has started, until its intake has
	// stopped (no new delivery) for HoldQuiet, or for Hold at the longest,
	// instead of waiting until it acked every event, and reports what it
	// took in (Result.Hold); for a Core that is down (embedded).
	Hold time.Duration

	// ConsumerProcess runs the consumer as its own process (embedded):
	// ConsumerCmd (`bhiv consume`), with the settings of the embedded stack
	// in its environment and ConsumerEnv after them. Its CPU time and peak
	// RSS are then measured alone (Result.Consumer).
	ConsumerProcess bool
	ConsumerCmd     []string
	ConsumerEnv     []string
	// ConsumerProfile, when set, takes CPU profiles of the consumer process
	// from its admin server (BHIV_ADMIN_PPROF) over the run, back to back,
	// into ConsumerProfile-NN.pprof (read them together with `go tool pprof
	// FILE-*.pprof`), and a heap profile at the end into
	// ConsumerProfile-heap.pprof.
	ConsumerProfile string

	// Parts measures the CPU per event of the bare parts (embedded), each
	// in a process started with PartCmd and PartEnv set: consume+ack,
	// HTTP POST, files with grouped syncfs.
	Parts   bool
	PartCmd []string

	// Embedded runs the whole stack in-process in Dir (a temporary
	// directory when empty): NATS, the core stub, the consumer with Core,
	// Bucket (durable) and the failure log. Otherwise NATSURL is a running
	// stack's NATS, and Stream/Durable name its stream and consumer.
	Embedded bool
	Dir      string
	NATSURL  string
	NATSOpts []nats.Option
	Stream   string
	Durable  string

	// Progress, when set, is called now and then with the events published
	// and acked so far, and the events to publish (0 when publishing for a
	// duration).
	Progress func(published, acked, total int)
	Logger   *slog.Logger
}

// Mix is the relative weight of each kind of event published.
type Mix struct {
	Execution float64 `json:"execution"`
	Reward    float64 `json:"reward"`
}

// DefaultMix is 70% executions, 30% rewards.
var DefaultMix = Mix{Execution: 0.7, Reward: 0.3}

// ParseMix parses "execution=0.7,reward=0.3" (weights, not necessarily
// summing to 1; a kind left out weighs 0).
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || err != nil || w < 0 {
			return Mix{}, fmt.Errorf("mix %q: want kind=weight pairs such as execution=0.7,reward=0.3", s)
		}
		switch bhiv.Kind(strings.TrimSpace(k)) {
		case bhiv.KindExecution:
			m.Execution = w
		case bhiv.KindReward:
			m.Reward = w
		default:
			return Mix{}, fmt.Errorf("mix %q: unknown kind %q (want execution or reward)", s, k)
		}
	}
	if m.Execution+m.Reward <= 0 {
		return Mix{}, fmt.Errorf("mix %q: weights add up to 0", s)
	}
	return m, nil
}

// executionShare returns the share of executions.
func (m Mix) executionShare() float64 { return m.Execution / (m.Execution + m.Reward) }

// Result is what a run measured.
type Result struct {
	// LoadAverage is the machine's 1-minute load average when the run
	// started: these figures mean little on a busy machine.
	LoadAverage float64 `json:"load_average"`
	// MachineBusy is the share of the machine's CPUs that were busy while
	// the consumer ran (from its start to the end of the run; /proc/stat),
	// and OtherCPU the CPU, in cores, used meanwhile outside the bench's
	// and the consumer's processes: other processes, and kernel threads and
	// interrupts, some of them on the pipeline's behalf (writeback, loopback
	// networking). On a shared machine, a run with OtherCPU near a core is
	// not comparable with one near 0. The load average measures others less
	// well: the previous run's own writers still weigh on it.
	MachineBusy float64 `json:"machine_busy"`
	OtherCPU    float64 `json:"other_cpu"`
	// KernelCPU is the part of OtherCPU that kernel threads and interrupts
	// used; the rest is other processes'.
	KernelCPU float64 `json:"kernel_cpu"`
	// BenchCPUPerEvent is the CPU microseconds per event this process
	// used over the same time: with the consumer in its own process, that
	// is the embedded NATS server, the core stub and the publisher.
	BenchCPUPerEvent float64 `json:"bench_cpu_per_event_us"`
	Events           int     `json:"events"`
	PublishSeconds   float64 `json:"publish_seconds"`
	PublishRate      float64 `json:"publish_rate"`    // events/s
	EndToEndRate     float64 `json:"end_to_end_rate"` // events/s, first publish → last ack
	// CoreLatency is publish → accepted by Core (embedded only: the core
	// stub reads the publish time carried in the event).
	CoreLatency *Latency `json:"latency_core,omitempty"`
	// CoreAccepted counts the run's events the core stub accepted
	// (embedded; a redelivered event counts again), and CoreRate is
	// CoreAccepted per second from the first publish to the last
	// acceptance. CoreBound is what the stub can take,
	// capacity / latency, when both are set; CoreMaxQueued the most
	// requests that waited for a slot at once.
	CoreAccepted  int     `json:"core_accepted"`
	CoreRate      float64 `json:"core_rate"`
	CoreBound     float64 `json:"core_bound,omitempty"`
	CoreMaxQueued int64   `json:"core_max_queued"`
	// CoreLimit is Core's concurrency limit while the consumer ran,
	// sampled every 50 ms in-process, every 500 ms from the consumer
	// process's /metrics (embedded only).
	CoreLimit *LimitStats `json:"core_limit,omitempty"`
	// BucketLag is publish → the event's file renamed into the bucket
	// (embedded; read from the file's ctime after the run), to
	// BucketLagTick: the kernel takes file times from a coarse clock, so
	// each reads up to one tick early.
	BucketLag     *Latency      `json:"latency_bucket,omitempty"`
	BucketLagTick time.Duration `json:"latency_bucket_tick,omitempty"`
	// AckLatency is publish → the durable's ack floor passing the event,
	// observed by polling the consumer info (an upper bound, coarse to the
	// poll interval; exact only when the bench is the stream's only
	// publisher during the run).
	AckLatency *Latency `json:"latency_ack,omitempty"`
	// OtherMessages counts messages others published on the stream during
	// the run (they make AckLatency approximate).
	OtherMessages  int   `json:"other_messages"`
	FailureRecords int   `json:"failure_records"` // embedded only
	PeakRSSBytes   int64 `json:"peak_rss_bytes"`  // of the bench process
	// Consumer is what the consumer process used (Config.ConsumerProcess).
	Consumer *ProcessStats `json:"consumer,omitempty"`
	// Profiles are the files of Config.ConsumerProfile.
	Profiles []string `json:"consumer_profiles,omitempty"`
	// Parts are the bare parts (Config.Parts), measured before the run.
	Parts []PartResult `json:"parts,omitempty"`
	// Hold is what the consumer did during Config.Hold.
	Hold     *HoldResult        `json:"hold,omitempty"`
	Ceilings map[string]float64 `json:"ceilings,omitempty"` // events/s of the bare parts, before the run
	// CeilingsAfter holds the file ceilings measured again after the run
	// (embedded only): the disk's pace drifts, and the pipeline ran between
	// the two.
	CeilingsAfter map[string]float64 `json:"ceilings_after,omitempty"`
}

// ProcessStats is what the consumer process used from the moment it was
// ready (its durable existed) to the end of the run: every event acked, or
// the end of the hold.
type ProcessStats struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPerEvent is CPU microseconds per event of the run (per event
	// taken in, with Config.Hold).
	CPUPerEvent  float64 `json:"cpu_per_event_us"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"` // VmHWM, start-up included
	RSSBytes     int64   `json:"rss_bytes"`      // VmRSS at the end
}

// HoldResult is what the consumer did while held (Config.Hold).
type HoldResult struct {
	Seconds float64 `json:"seconds"`
	// TakenIn counts the events delivered to the consumer; AckPending
	// those not acked at the end.
	TakenIn    int `json:"taken_in"`
	AckPending int `json:"ack_pending"`
	// PausedSeconds is how long no new event had been delivered at the
	// end of the hold (intake paused, or MaxAckPending reached).
	PausedSeconds float64 `json:"paused_seconds"`
}

// CPURatio returns the consumer's CPU per event over the sum of the bare
// parts', or 0 when either was not measured.
func (r *Result) CPURatio() float64 {
	sum := r.PartsCPUPerEvent()
	if r.Consumer == nil || sum == 0 {
		return 0
	}
	return r.Consumer.CPUPerEvent / sum
}

// PartsCPUPerEvent returns the sum of the bare parts' CPU per event, in
// microseconds.
func (r *Result) PartsCPUPerEvent() float64 {
	sum := 0.0
	for _, p := range r.Parts {
		sum += p.CPUPerEvent
	}
	return sum
}

// Latency holds percentiles of a latency, in nanoseconds in JSON.
type Latency struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P90   time.Duration `json:"p90"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// Ceiling returns the ceiling called name: for the file ceilings measured before
// and after the run, the mean of the two; 0 when not measured.
func (r *Result) Ceiling(name string) float64 {
	if after, ok := r.CeilingsAfter[name]; ok {
		return (r.Ceilings[name] + after) / 2
	}
	return r.Ceilings[name]
}

// The ceilings measured with Config.Ceilings.
const (
	CeilingPublish     = "jetstream_publish_async"
	CeilingConsume     = "jetstream_consume_ack"
	CeilingHTTP        = "http_post"
	CeilingFiles       = "file_temp_rename"
	CeilingFilesFsync  = "file_temp_fsync_rename"
	CeilingFilesSyncfs = "file_temp_rename_grouped_syncfs"
)

// pollInterval is how often the durable's ack floor is read.
const pollInterval = 10 * time.Millisecond

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Events == 0 && c.Duration == 0 {
		c.Events = 10_000
	}
	config.Default(&c.Size, 256)
	config.Default(&c.Mix, DefaultMix)
	config.Default(&c.Concurrency, consumer.DefaultConcurrency)
	config.Default(&c.Stream, bhiv.DefaultStreamName)
	config.Default(&c.Durable, consumer.DefaultDurable)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Events < 0 || c.Duration < 0 || c.Rate < 0 || c.Size < 0 || c.CoreLatency < 0 || c.CoreLatencyJitter < 0 ||
		c.CoreCapacity < 0 || c.Concurrency < 0 || c.MaxAckPending < 0 || c.Hold < 0 {
		errs = append(errs, errors.New("events, duration, rate, size, concurrency, max ack pending, hold and the core stub's latency, jitter and capacity must not be negative"))
	}
	if c.Mix.Execution < 0 || c.Mix.Reward < 0 || c.Mix != (Mix{}) && c.Mix.Execution+c.Mix.Reward <= 0 {
		errs = append(errs, fmt.Errorf("mix %+v: want weights ≥ 0, not all 0", c.Mix))
	}
	if !c.Embedded && c.NATSURL == "" {
		errs = append(errs, errors.New("give a NATS URL, or run --embedded"))
	}
	if !c.Embedded && (c.CoreLatency > 0 || c.CoreLatencyJitter > 0 || c.CoreCapacity > 0 || c.CoreDown) {
		errs = append(errs, errors.New("core latency, jitter, capacity and down are settings of the embedded core stub: use them with --embedded"))
	}
	if !c.Embedded && (c.ConsumerProcess || c.Parts || c.Preload || c.Hold > 0 || c.MaxAckPending > 0) {
		errs = append(errs, errors.New("the consumer process, the parts, preload, hold and max ack pending need the embedded stack: use them with --embedded"))
	}
	if c.ConsumerProcess && len(c.ConsumerCmd) == 0 {
		errs = append(errs, errors.New("a consumer process needs the command that runs `bhiv consume`"))
	}
	if c.ConsumerProfile != "" && !c.ConsumerProcess {
		errs = append(errs, errors.New("a consumer profile needs the consumer in its own process"))
	}
	if c.Parts && len(c.PartCmd) == 0 {
		errs = append(errs, errors.New("the parts need the command that runs a part process"))
	}
	if c.CoreDown && c.Hold == 0 {
		errs = append(errs, errors.New("with Core down nothing is ever acked: give a hold time"))
	}
	if c.CoreDown && (c.Ceilings || c.Parts) {
		errs = append(errs, errors.New("with Core down there is no HTTP ceiling or part to measure: leave out ceilings and parts"))
	}
	return errors.Join(errs...)
}

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

// Run runs the benchmark.
func Run(ctx context.Context, c Config) (*Result, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	res := &Result{LoadAverage: loadAverage()}
	dir, cleanup, err := workDir(c.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	c.Dir = dir
	url, opts := c.NATSURL, c.NATSOpts
	var st *stack
	if c.Embedded {
		if st, err = startStack(c); err != nil {
			return nil, err
		}
		defer st.close()
		url = st.ns.ClientURL()
		if c.CoreCapacity > 0 && c.CoreLatency > 0 {
			res.CoreBound = float64(c.CoreCapacity) / c.CoreLatency.Seconds()
		}
	}
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("bhiv bench"), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("bench: connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if c.Ceilings {
		if res.Ceilings, err = ceilings(ctx, c, js, st); err != nil {
			return nil, err
		}
	}
	if c.Parts {
		if res.Parts, err = measureParts(ctx, c, js, st); err != nil {
			return nil, err
		}
	}
	r := &run{c: c, st: st, js: js, res: res}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	if c.Ceilings && st != nil {
		if res.CeilingsAfter, err = fileCeilings(c); err != nil {
			return nil, err
		}
	}
	_, res.PeakRSSBytes, _ = procMem("self")
	return res, nil
}

// workDir returns dir, made if missing, or a new temporary directory when
// dir is empty; cleanup removes the temporary one.
func workDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", nil, fmt.Errorf("bench: %w", err)
		}
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "bhiv-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("bench: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// run is the measured part of a Run: the consumer, the events published,
// what the consumer did with them.
type run struct {
	c   Config
	st  *stack // nil against a running stack
	js  jetstream.JetStream
	res *Result

	w        *watcher
	sentByID map[string]int64   // publish times, embedded: for the bucket lag
	ready    time.Time          // the consumer's durable exists
	cpu0     time.Duration      // the consumer process's CPU time then
	self0    time.Duration      // this process's
	busy0    time.Duration      // the machine's (every CPU)
	kernel0  time.Duration      // kernel threads' and interrupts'
	profiles func() []string    // stops the consumer's profiles (Config.ConsumerProfile)
	limit    func() *LimitStats // stops sampling Core's limit
}

func (r *run) run(ctx context.Context) error {
	c, st := r.c, r.st
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer func() { // on an early return
		if r.profiles != nil {
			r.profiles()
		}
		if r.limit != nil {
			r.limit()
		}
	}()
	if !c.Preload {
		if err := r.startConsumer(ctx, cancel); err != nil {
			return err
		}
	}
	pub, err := publisher.New(ctx, r.js, publisher.Config{Source: "bhiv-bench", EnsureStream: c.Embedded, Stream: bhiv.StreamConfig{Name: c.Stream}})
	if err != nil {
		return err
	}
	// The stream's last sequence before the run: the bench's events follow.
	startSeq, err := lastSeq(ctx, r.js, c.Stream)
	if err != nil {
		return err
	}
	r.w = &watcher{startSeq: startSeq, progress: c.Progress, total: c.Events}
	if c.Duration > 0 {
		r.w.total = 0
	}
	defer r.w.stop()
	if !c.Preload {
		if err := r.watch(ctx); err != nil {
			return err
		}
	}
	if st != nil {
		r.sentByID = map[string]int64{}
	}
	start, n, endSeq, err := r.publishAll(ctx, pub, startSeq)
	if err != nil {
		return err
	}
	if c.Preload {
		if err := r.startConsumer(ctx, cancel); err != nil {
			return err
		}
		if err := r.watch(ctx); err != nil {
			return err
		}
		start = r.ready // rates count from the consumer's start
	}
	end, err := r.awaitEnd(ctx, endSeq)
	if err != nil {
		return err
	}
	return r.results(start, end, n)
}

// results fills in what the run measured, once its n events (published
// from start) are acked at end.
func (r *run) results(start, end time.Time, n int) error {
	c, res := r.c, r.res
	if c.Hold == 0 {
		res.EndToEndRate = float64(n) / end.Sub(start).Seconds()
	}
	if err := r.cpuStats(end); err != nil {
		return err
	}
	res.Profiles, res.CoreLimit = r.profiles(), r.limit()
	r.w.stop()
	if c.Progress != nil {
		c.Progress(n, int(r.w.floor), r.w.total)
	}
	res.AckLatency = percentiles(r.w.latency)
	if r.st == nil {
		return nil
	}
	return r.embeddedResults(start)
}

// embeddedResults stops the embedded consumer and reads what the embedded
// stack saw: Core's latency and rate (from start), the core stub's queue,
// the failure records and the bucket's lag.
func (r *run) embeddedResults(start time.Time) error {
	c, st, res := r.c, r.st, r.res
	if err := st.stopConsumer(); err != nil {
		return fmt.Errorf("bench: consumer: %w", err)
	}
	st.mu.Lock()
	res.CoreLatency = percentiles(st.latency)
	res.CoreAccepted = st.accepted
	if st.accepted > 0 {
		res.CoreRate = float64(st.accepted) / st.lastAt.Sub(start).Seconds()
	}
	st.mu.Unlock()
	res.CoreMaxQueued = st.stub.Stats().MaxQueued
	if st.pipe != nil {
		if err := st.pipe.FailureLog.Close(); err != nil { // flushed: every record is on disk
			return fmt.Errorf("bench: close failure log: %w", err)
		}
	}
	if err := sinks.ReadFailureLog(st.failureLog(), nil, func(bhiv.FailureRecord) error { res.FailureRecords++; return nil }); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bench: read failure log: %w", err)
	}
	if !c.Preload {
		var err error
		if res.BucketLag, err = bucketLag(st.bucketDir(), r.sentByID); err != nil {
			return err
		}
		if res.BucketLag != nil {
			res.BucketLagTick = changeTimeTick()
		}
	}
	return nil
}

// publishAll publishes the run's events and waits for their acks; it
// returns when publishing started, how many were published and the
// stream's last sequence then, and records the publish rate and what
// others published meanwhile.
func (r *run) publishAll(ctx context.Context, pub *publisher.Publisher, startSeq uint64) (start time.Time, n int, endSeq uint64, err error) {
	res := r.res
	start, n, err = r.publish(ctx, pub)
	if err != nil {
		return start, n, 0, err
	}
	actx, cancelWait := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	ar, werr := pub.Wait(actx)
	cancelWait()
	if werr != nil {
		return start, n, 0, fmt.Errorf("bench: %d of %d publishes failed: %w", ar.Failed, n, werr)
	}
	res.Events = n
	res.PublishSeconds = time.Since(start).Seconds()
	res.PublishRate = float64(n) / res.PublishSeconds
	if endSeq, err = lastSeq(ctx, r.js, r.c.Stream); err != nil {
		return start, n, 0, err
	}
	res.OtherMessages = max(0, int(endSeq-startSeq)-ar.Published)
	return start, n, endSeq, nil
}

// awaitEnd waits for the end of the run: the hold (Config.Hold), or the
// consumer having acked everything in the stream up to endSeq, ours and
// anyone else's.
func (r *run) awaitEnd(ctx context.Context, endSeq uint64) (time.Time, error) {
	if r.c.Hold > 0 {
		return r.hold(ctx)
	}
	return r.w.waitFor(ctx, endSeq, 10*time.Minute)
}

// startConsumer starts the embedded consumer, if any, and cancels ctx with
// the reason should its process exit before the run ends.
func (r *run) startConsumer(ctx context.Context, cancel context.CancelCauseFunc) error {
	if r.st == nil {
		return nil
	}
	if err := r.st.startConsumer(r.c); err != nil {
		return err
	}
	if p := r.st.proc; p != nil {
		go func() {
			select {
			case <-p.done:
				cancel(p.exited())
			case <-ctx.Done():
			}
		}()
	}
	return nil
}

// watch finds the durable (the embedded consumer creates it as it
// starts) and starts watching it.
func (r *run) watch(ctx context.Context) error {
	cons, err := r.js.Consumer(ctx, r.c.Stream, r.c.Durable)
	if err != nil && r.st != nil {
		cons, err = waitConsumer(ctx, r.js, r.c.Stream, r.c.Durable)
	}
	if err != nil {
		return fmt.Errorf("bench: durable %s on stream %s (is `bhiv consume` running?): %w", r.c.Durable, r.c.Stream, err)
	}
	r.ready, r.self0, r.busy0, r.kernel0 = time.Now(), selfCPU(), machineBusy(), kernelCPU()
	if r.st != nil && r.st.proc != nil {
		if r.cpu0, err = procCPU(r.st.proc.pid()); err != nil {
			return err
		}
	}
	r.profiles, r.limit = r.profile(ctx), r.sampleLimit(ctx)
	r.w.start(ctx, cons)
	return nil
}

// publish publishes the run's events and returns when it started and how
// many it published.
func (r *run) publish(ctx context.Context, pub *publisher.Publisher) (time.Time, int, error) {
	c := r.c
	padding := strings.Repeat("x", max(0, c.Size-120))
	share := c.Mix.executionShare()
	start := time.Now()
	n := 0
	for ; ; n++ {
		if c.Duration > 0 && time.Since(start) >= c.Duration || c.Duration == 0 && n >= c.Events || ctx.Err() != nil {
			break
		}
		if c.Rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(n) / c.Rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		sent := time.Now().UnixNano()
		ev, err := benchEvent(n, share, padding, sent)
		if err != nil {
			return start, n, err
		}
		r.w.published(sent)
		if r.sentByID != nil {
			r.sentByID[ev.ID] = sent
		}
		if err := pub.PublishAsync(ev); err != nil {
			return start, n, fmt.Errorf("bench: publish: %w", err)
		}
	}
	if err := context.Cause(ctx); err != nil {
		return start, n, err
	}
	return start, n, nil
}

// HoldQuiet is how long the consumer's intake must have stopped for a hold
// to end before Config.Hold.
const HoldQuiet = 10 * time.Second

// holdQuiet is HoldQuiet, shorter in tests.
var holdQuiet = HoldQuiet

// hold lets the consumer run until its intake stopped for HoldQuiet, or
// for Config.Hold from its start, and reports what it did.
func (r *run) hold(ctx context.Context) (time.Time, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Time{}, context.Cause(ctx)
		}
		r.w.mu.Lock()
		quiet := r.w.delivered > r.w.startSeq && time.Since(r.w.deliveredAt) >= holdQuiet
		r.w.mu.Unlock()
		if quiet || time.Since(r.ready) >= r.c.Hold {
			break
		}
	}
	end := time.Now()
	r.w.mu.Lock()
	h := &HoldResult{Seconds: end.Sub(r.ready).Seconds(), TakenIn: int(r.w.delivered - r.w.startSeq),
		AckPending: r.w.ackPending, PausedSeconds: end.Sub(r.w.deliveredAt).Seconds()}
	if r.w.delivered <= r.w.startSeq {
		h.TakenIn, h.PausedSeconds = 0, h.Seconds
	}
	r.w.mu.Unlock()
	r.res.Hold = h
	return end, nil
}

// cpuStats reads what the consumer process used since it was ready, and
// what other processes used of the machine meanwhile.
func (r *run) cpuStats(end time.Time) error {
	self, busy, kernel := selfCPU(), machineBusy(), kernelCPU()
	events := r.res.Events
	if r.res.Hold != nil {
		events = r.res.Hold.TakenIn
	}
	var consumer time.Duration
	if r.st != nil && r.st.proc != nil {
		pid := r.st.proc.pid()
		cpu, err := procCPU(pid)
		if err != nil {
			return err
		}
		rss, peak, err := procMem(strconv.Itoa(pid))
		if err != nil {
			return err
		}
		consumer = cpu - r.cpu0
		ps := &ProcessStats{PID: pid, CPUSeconds: consumer.Seconds(), PeakRSSBytes: peak, RSSBytes: rss}
		if events > 0 {
			ps.CPUPerEvent = ps.CPUSeconds / float64(events) * 1e6
		}
		r.res.Consumer = ps
	}
	if events > 0 {
		r.res.BenchCPUPerEvent = (self - r.self0).Seconds() / float64(events) * 1e6
	}
	if wall := end.Sub(r.ready).Seconds(); busy > 0 && wall > 0 {
		r.res.MachineBusy = min(1, (busy-r.busy0).Seconds()/wall/float64(runtime.NumCPU()))
		r.res.OtherCPU = max(0, (busy-r.busy0-(self-r.self0)-consumer).Seconds()/wall)
		// A kernel thread that ended meanwhile takes its CPU time with it.
		r.res.KernelCPU = min(r.res.OtherCPU, max(0, (kernel-r.kernel0).Seconds()/wall))
	}
	return nil
}

func benchEvent(i int, execShare float64, padding string, sent int64) (bhiv.Event, error) {
	team := "team_" + strconv.Itoa(i%50)
	// Spread the kinds evenly: event i is an execution while the executions
	// so far are behind their share.
	if int(float64(i+1)*execShare) > int(float64(i)*execShare) {
		return bhiv.New(bhiv.KindExecution, "bhiv-bench", "", bhiv.Execution{TeamID: team, Action: "bench",
			Status: "ok", Output: padding, DurationMS: int64(i % 1000), Extra: map[string]any{sentField: sent}})
	}
	return bhiv.New(bhiv.KindReward, "bhiv-bench", "", bhiv.Reward{TeamID: team, Reward: float64(i % 10),
		Reason: padding, Extra: map[string]any{sentField: sent}})
}

func lastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("bench: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bench: stream %s: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

func waitConsumer(ctx context.Context, js jetstream.JetStream, stream, durable string) (jetstream.Consumer, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cons, err := js.Consumer(ctx, stream, durable)
		if err == nil || time.Now().After(deadline) {
			return cons, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// watcher polls the durable's info: it times each event from its publish
// until the ack floor passes it, reports progress, tells when the floor
// reached a sequence with nothing pending, and notes when intake last
// moved.
type watcher struct {
	startSeq uint64
	progress func(published, acked, total int)
	total    int
	cancel   context.CancelFunc
	done     chan struct{}

	mu          sync.Mutex
	sent        []int64 // publish times, in publish order (stream order)
	floor       uint64  // events acked so far (of ours, by the floor)
	idleAt      uint64  // a floor seen with nothing pending, and when
	idleT       time.Time
	delivered   uint64    // the last stream sequence delivered, and since when
	deliveredAt time.Time //
	ackPending  int
	latency     []time.Duration
	changed     chan struct{}
}

func (w *watcher) published(sent int64) {
	w.mu.Lock()
	w.sent = append(w.sent, sent)
	w.mu.Unlock()
}

// start starts polling cons until stop.
func (w *watcher) start(ctx context.Context, cons jetstream.Consumer) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	w.mu.Lock()
	w.deliveredAt = time.Now()
	w.mu.Unlock()
	go func() { defer close(w.done); w.run(ctx, cons) }()
}

// stop stops polling, if started, and waits until it has.
func (w *watcher) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

func (w *watcher) run(ctx context.Context, cons jetstream.Consumer) {
	lastProgress := time.Time{}
	for {
		if info, err := cons.Info(ctx); err == nil {
			now := time.Now()
			w.mu.Lock()
			acked := uint64(0)
			if info.AckFloor.Stream > w.startSeq {
				acked = min(info.AckFloor.Stream-w.startSeq, uint64(len(w.sent)))
			}
			for ; w.floor < acked; w.floor++ {
				w.latency = append(w.latency, now.Sub(time.Unix(0, w.sent[w.floor])))
			}
			if info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream > w.idleAt {
				w.idleAt, w.idleT = info.AckFloor.Stream, now
				if w.changed != nil {
					close(w.changed)
					w.changed = nil
				}
			}
			if info.Delivered.Stream != w.delivered {
				w.delivered, w.deliveredAt = info.Delivered.Stream, now
			}
			w.ackPending = info.NumAckPending
			published, floor := len(w.sent), int(w.floor)
			w.mu.Unlock()
			if w.progress != nil && now.Sub(lastProgress) >= 100*time.Millisecond {
				w.progress(published, floor, w.total)
				lastProgress = now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollInterval):
		}
	}
}

// waitFor waits until the ack floor reached seq with nothing pending, and
// returns when that was first seen.
func (w *watcher) waitFor(ctx context.Context, seq uint64, within time.Duration) (time.Time, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		if w.idleAt >= seq {
			t := w.idleT
			w.mu.Unlock()
			return t, nil
		}
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, context.Cause(ctx)
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("bench: the consumer did not ack everything up to stream sequence %d within %s", seq, within)
		}
	}
}

func percentiles(d []time.Duration) *Latency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return &Latency{Count: len(d), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}
