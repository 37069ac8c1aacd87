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
	Concurrency int           // the embedded consumer's Concurrency (the Bucket's deliveries at once), default 256
	CoreLatency time.Duration // core stub latency (embedded)
	// CoreCapacity is how many requests the embedded core stub serves at
	// once (the rest queue); 0 is no bound. Core's own concurrency is
	// adaptive (BHIV_CORE_CONCURRENCY=auto).
	CoreCapacity int
	Ceilings     bool // also measure the ceilings of the parts

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
	Events         int     `json:"events"`
	PublishSeconds float64 `json:"publish_seconds"`
	PublishRate    float64 `json:"publish_rate"`    // events/s
	EndToEndRate   float64 `json:"end_to_end_rate"` // events/s, first publish → last ack
	// CoreLatency is publish → accepted by Core (embedded only: the core
	// stub reads the publish time carried in the event).
	CoreLatency *Latency `json:"latency_core,omitempty"`
	// AckLatency is publish → the durable's ack floor passing the event,
	// observed by polling the consumer info (an upper bound, coarse to the
	// poll interval; exact only when the bench is the stream's only
	// publisher during the run).
	AckLatency *Latency `json:"latency_ack,omitempty"`
	// OtherMessages counts messages others published on the stream during
	// the run (they make AckLatency approximate).
	OtherMessages int `json:"other_messages"`
	// CoreLimit is Core's concurrency limit during the run, sampled every
	// 50ms from the first publish to the last ack (embedded only).
	CoreLimit      *LimitStats        `json:"core_limit,omitempty"`
	FailureRecords int                `json:"failure_records"` // embedded only
	PeakRSSBytes   int64              `json:"peak_rss_bytes"`
	Ceilings       map[string]float64 `json:"ceilings,omitempty"` // events/s of the bare parts, before the run
	// CeilingsAfter holds the file ceilings measured again after the run
	// (embedded only): the disk's pace drifts, and the pipeline ran between
	// the two.
	CeilingsAfter map[string]float64 `json:"ceilings_after,omitempty"`
}

// LimitStats summarises samples of a concurrency limit.
type LimitStats struct {
	Mean float64 `json:"mean"`
	Min  int     `json:"min"`
	Max  int     `json:"max"`
	Last int     `json:"last"`
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

func (c Config) withDefaults() Config {
	if c.Events == 0 && c.Duration == 0 {
		c.Events = 10_000
	}
	if c.Size == 0 {
		c.Size = 256
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix
	}
	if c.Concurrency == 0 {
		c.Concurrency = consumer.DefaultConcurrency
	}
	if c.Stream == "" {
		c.Stream = bhiv.DefaultStreamName
	}
	if c.Durable == "" {
		c.Durable = consumer.DefaultDurable
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks c.
func (c Config) Validate() error {
	var errs []error
	if c.Events < 0 || c.Duration < 0 || c.Rate < 0 || c.Size < 0 || c.CoreLatency < 0 || c.Concurrency < 0 || c.CoreCapacity < 0 {
		errs = append(errs, errors.New("events, duration, rate, size, concurrency, core latency and core capacity must not be negative"))
	}
	if c.Mix.Execution < 0 || c.Mix.Reward < 0 || c.Mix != (Mix{}) && c.Mix.Execution+c.Mix.Reward <= 0 {
		errs = append(errs, fmt.Errorf("mix %+v: want weights ≥ 0, not all 0", c.Mix))
	}
	if !c.Embedded && c.NATSURL == "" {
		errs = append(errs, errors.New("give a NATS URL, or run --embedded"))
	}
	if !c.Embedded && (c.CoreLatency > 0 || c.CoreCapacity > 0) {
		errs = append(errs, errors.New("core latency and capacity are settings of the embedded core stub: use them with --embedded"))
	}
	return errors.Join(errs...)
}

// stack is the embedded stack of a run.
type stack struct {
	ns      *server.Server
	stub    *corestub.Stub
	http    *http.Server
	url     string
	nc      *nats.Conn // the consumer's own connection, as in `bhiv consume`
	pipe    *pipeline.Pipeline
	stop    context.CancelFunc
	done    chan error
	mu      sync.Mutex
	latency []time.Duration
}

// sentField is the data field carrying the publish time, in Unix ns.
const sentField = "bench_sent_unix_nano"

func startStack(c Config) (*stack, error) {
	s := &stack{}
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
	if s.stub, err = corestub.New(corestub.Config{Capacity: c.CoreCapacity, Faults: corestub.Faults{Latency: c.CoreLatency}}); err != nil {
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

// serveCore lets the stub answer, then records publish → accepted by Core
// for each event of the request that carries its publish time.
func (s *stack) serveCore(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.stub.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.stub.ServeHTTP(w, r)
	now := time.Now()
	s.mu.Lock()
	for rest := body; ; {
		ns, tail, ok := sentTime(rest)
		if !ok {
			break
		}
		s.latency = append(s.latency, now.Sub(time.Unix(0, ns)))
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

func (s *stack) startConsumer(c Config) error {
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
			Concurrency: c.Concurrency, SummaryInterval: -1},
		Core:       sinks.CoreConfig{URL: s.url},
		Bucket:     sinks.BucketConfig{Dir: filepath.Join(c.Dir, "bucket")},
		FailureLog: sinks.FailureLogConfig{Path: filepath.Join(c.Dir, "failed.log")},
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

// stopConsumer stops the consumer, once, and returns what its Run returned.
func (s *stack) stopConsumer() error {
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
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "bhiv-bench")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		c.Dir = dir
	}
	url, opts := c.NATSURL, c.NATSOpts
	var st *stack
	if c.Embedded {
		var err error
		if st, err = startStack(c); err != nil {
			return nil, err
		}
		defer st.close()
		url = st.ns.ClientURL()
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
	res := &Result{}
	if c.Ceilings {
		if res.Ceilings, err = ceilings(ctx, c, js, st); err != nil {
			return nil, err
		}
	}
	if st != nil {
		if err := st.startConsumer(c); err != nil {
			return nil, err
		}
	}
	pub, err := publisher.New(ctx, js, publisher.Config{Source: "bhiv-bench", EnsureStream: c.Embedded, Stream: bhiv.StreamConfig{Name: c.Stream}})
	if err != nil {
		return nil, err
	}
	// The stream's last sequence before the run: the bench's events follow.
	startSeq, err := lastSeq(ctx, js, c.Stream)
	if err != nil {
		return nil, err
	}
	cons, err := js.Consumer(ctx, c.Stream, c.Durable)
	if err != nil && st != nil {
		// The embedded consumer creates its durable as it starts.
		cons, err = waitConsumer(ctx, js, c.Stream, c.Durable)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: durable %s on stream %s (is `bhiv consume` running?): %w", c.Durable, c.Stream, err)
	}

	w := &watcher{cons: cons, startSeq: startSeq, progress: c.Progress, total: c.Events}
	if c.Duration > 0 {
		w.total = 0
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); w.run(wctx) }()
	defer func() { stopWatch(); <-watchDone }()

	var limits chan *LimitStats
	if st != nil {
		limits = make(chan *LimitStats, 1)
		go func() { limits <- sampleLimit(wctx, st.pipe.Core) }()
	}
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
			return nil, err
		}
		w.published(sent)
		if err := pub.PublishAsync(ev); err != nil {
			return nil, fmt.Errorf("bench: publish: %w", err)
		}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	ar, werr := pub.Wait(actx)
	cancel()
	if werr != nil {
		return nil, fmt.Errorf("bench: %d of %d publishes failed: %w", ar.Failed, n, werr)
	}
	res.Events = n
	res.PublishSeconds = time.Since(start).Seconds()
	res.PublishRate = float64(n) / res.PublishSeconds
	// Wait until the consumer acked everything in the stream now, ours and
	// anyone else's.
	endSeq, err := lastSeq(ctx, js, c.Stream)
	if err != nil {
		return nil, err
	}
	res.OtherMessages = max(0, int(endSeq-startSeq)-ar.Published)
	end, err := w.waitFor(ctx, endSeq, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	res.EndToEndRate = float64(n) / end.Sub(start).Seconds()
	stopWatch()
	<-watchDone
	if limits != nil {
		res.CoreLimit = <-limits
	}
	if c.Progress != nil {
		c.Progress(len(w.sent), int(w.floor), w.total)
	}
	res.AckLatency = percentiles(w.latency)
	if st != nil {
		if err := st.stopConsumer(); err != nil {
			return nil, fmt.Errorf("bench: consumer: %w", err)
		}
		st.mu.Lock()
		res.CoreLatency = percentiles(st.latency)
		st.mu.Unlock()
		if err := st.pipe.FailureLog.Close(); err != nil { // flushed: every record is on disk
			return nil, fmt.Errorf("bench: close failure log: %w", err)
		}
		if err := sinks.ReadFailureLog(filepath.Join(c.Dir, "failed.log"), nil, func(bhiv.FailureRecord) error { res.FailureRecords++; return nil }); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bench: read failure log: %w", err)
		}
	}
	if c.Ceilings && st != nil {
		if res.CeilingsAfter, err = fileCeilings(c); err != nil {
			return nil, err
		}
	}
	res.PeakRSSBytes = peakRSS()
	return res, nil
}

// sampleLimit samples Core's concurrency limit every 50ms until ctx ends.
func sampleLimit(ctx context.Context, core *sinks.Core) *LimitStats {
	l := core.ConcurrencyLimit()
	s, sum, n := &LimitStats{Min: l, Max: l, Last: l}, 0, 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		l = core.ConcurrencyLimit()
		s.Min, s.Max, s.Last = min(s.Min, l), max(s.Max, l), l
		sum, n = sum+l, n+1
		s.Mean = float64(sum) / float64(n)
		select {
		case <-ctx.Done():
			return s
		case <-tick.C:
		}
	}
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

// watcher polls the durable's ack floor: it times each event from its
// publish until the floor passes it, reports progress, and tells when the
// floor reached a sequence with nothing pending.
type watcher struct {
	cons     jetstream.Consumer
	startSeq uint64
	progress func(published, acked, total int)
	total    int

	mu      sync.Mutex
	sent    []int64 // publish times, in publish order (stream order)
	floor   uint64  // events acked so far (of ours, by the floor)
	idleAt  uint64  // a floor seen with nothing pending, and when
	idleT   time.Time
	latency []time.Duration
	changed chan struct{}
}

func (w *watcher) published(sent int64) {
	w.mu.Lock()
	w.sent = append(w.sent, sent)
	w.mu.Unlock()
}

func (w *watcher) run(ctx context.Context) {
	lastProgress := time.Time{}
	for {
		if info, err := w.cons.Info(ctx); err == nil {
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
			return time.Time{}, ctx.Err()
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

// peakRSS returns this process's peak resident set (VmHWM), or 0.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
