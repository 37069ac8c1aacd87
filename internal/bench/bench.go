// Package bench is the load engine behind `bhiv bench` and the end-to-end
// benchmarks: it publishes events at a rate or as fast as it can, and
// measures the publish rate, the end-to-end rate (published → acked by the
// consumer, both sinks) and the latency from publish to Core, next to the
// ceilings of the parts measured in the same run.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
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
	Execution   float64       // share of execution events, the rest rewards (default 0.7)
	Concurrency int           // consumer concurrency (embedded), default 64
	CoreLatency time.Duration // core stub latency (embedded)
	Ceilings    bool          // also measure the ceilings of the parts

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

	Progress func(done, total int) // optional, called as events are published
	Logger   *slog.Logger
}

// Result is what a run measured.
type Result struct {
	Events         int                `json:"events"`
	PublishSeconds float64            `json:"publish_seconds"`
	PublishRate    float64            `json:"publish_rate"`      // events/s
	EndToEndRate   float64            `json:"end_to_end_rate"`   // events/s, first publish → last ack
	Latency        *Latency           `json:"latency,omitempty"` // publish → Core (embedded only)
	FailureRecords int                `json:"failure_records"`
	PeakRSSBytes   int64              `json:"peak_rss_bytes"`
	Ceilings       map[string]float64 `json:"ceilings,omitempty"` // events/s of the bare parts
}

// Latency holds percentiles of publish → Core receipt.
type Latency struct {
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

// The ceilings measured with Config.Ceilings.
const (
	CeilingPublish    = "jetstream_publish_async"
	CeilingConsume    = "jetstream_consume_ack"
	CeilingHTTP       = "http_post"
	CeilingFiles      = "file_temp_rename"
	CeilingFilesFsync = "file_temp_fsync_rename"
)

func (c Config) withDefaults() Config {
	if c.Events == 0 && c.Duration == 0 {
		c.Events = 10_000
	}
	if c.Size == 0 {
		c.Size = 256
	}
	if c.Execution == 0 {
		c.Execution = 0.7
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
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
	if c.Events < 0 || c.Duration < 0 || c.Rate < 0 || c.Size < 0 || c.CoreLatency < 0 {
		errs = append(errs, errors.New("events, duration, rate, size and core latency must not be negative"))
	}
	if c.Execution < 0 || c.Execution > 1 {
		errs = append(errs, fmt.Errorf("execution share %g: want 0..1", c.Execution))
	}
	if !c.Embedded && c.NATSURL == "" {
		errs = append(errs, errors.New("give a NATS URL, or run --embedded"))
	}
	return errors.Join(errs...)
}

// stack is the embedded stack of a run.
type stack struct {
	ns      *server.Server
	stub    *corestub.Stub
	http    *http.Server
	url     string
	pipe    *pipeline.Pipeline
	stop    context.CancelFunc
	done    chan error
	mu      sync.Mutex
	latency []time.Duration
}

// sentField is the data field carrying the publish time, in Unix ns.
const sentField = "bench_sent_unix_nano"

func startStack(ctx context.Context, c Config) (*stack, error) {
	s := &stack{}
	o := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(c.Dir, "nats"), NoSigs: true, NoLog: true}
	ns, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("bench: nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("bench: nats server did not start")
	}
	s.ns = ns
	if s.stub, err = corestub.New(corestub.Config{Faults: corestub.Faults{Latency: c.CoreLatency}}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.url = "http://" + ln.Addr().String() + corestub.Path
	s.http = &http.Server{Handler: http.HandlerFunc(s.serveCore)}
	go s.http.Serve(ln)
	return s, nil
}

// serveCore records publish → Core latency of each event, then lets the
// stub answer.
func (s *stack) serveCore(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		now := time.Now()
		var one struct {
			Data map[string]json.Number `json:"data"`
		}
		var many []struct {
			Data map[string]json.Number `json:"data"`
		}
		var sent []json.Number
		if len(body) > 0 && body[0] == '[' {
			json.Unmarshal(body, &many)
			for _, e := range many {
				sent = append(sent, e.Data[sentField])
			}
		} else {
			json.Unmarshal(body, &one)
			sent = append(sent, one.Data[sentField])
		}
		s.mu.Lock()
		for _, v := range sent {
			if ns, err := v.Int64(); err == nil && ns > 0 {
				s.latency = append(s.latency, now.Sub(time.Unix(0, ns)))
			}
		}
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	s.stub.ServeHTTP(w, r)
}

func (s *stack) startConsumer(c Config, js jetstream.JetStream) error {
	p, err := pipeline.New(js, pipeline.Config{
		Consumer:   consumer.Config{ManageStream: true, Concurrency: c.Concurrency, SummaryInterval: -1},
		Core:       sinks.CoreConfig{URL: s.url, Concurrency: c.Concurrency},
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

// stopConsumer stops the consumer, once.
func (s *stack) stopConsumer() {
	if s.stop != nil {
		s.stop()
		<-s.done
		s.stop = nil
	}
}

func (s *stack) close() {
	s.stopConsumer()
	if s.pipe != nil {
		s.pipe.Close()
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
	url, opts := c.NATSURL, c.NATSOpts
	var st *stack
	if c.Embedded {
		if c.Dir == "" {
			dir, err := os.MkdirTemp("", "bhiv-bench")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			c.Dir = dir
		}
		var err error
		if st, err = startStack(ctx, c); err != nil {
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
		if err := st.startConsumer(c, js); err != nil {
			return nil, err
		}
	}
	pub, err := publisher.New(ctx, js, publisher.Config{Source: "bhiv-bench", EnsureStream: c.Embedded, Stream: bhiv.StreamConfig{Name: c.Stream}})
	if err != nil {
		return nil, err
	}
	// The durable's delivered floor before the run, to know when it caught up.
	startSeq, err := lastSeq(ctx, js, c.Stream)
	if err != nil {
		return nil, err
	}

	padding := strings.Repeat("x", max(0, c.Size-120))
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
		ev, err := benchEvent(n, c.Execution, padding)
		if err != nil {
			return nil, err
		}
		if err := pub.PublishAsync(ev); err != nil {
			return nil, fmt.Errorf("bench: publish: %w", err)
		}
		if c.Progress != nil && n%500 == 0 {
			c.Progress(n, c.Events)
		}
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	ar, werr := pub.Wait(wctx)
	cancel()
	if werr != nil {
		return nil, fmt.Errorf("bench: %d of %d publishes failed: %w", ar.Failed, n, werr)
	}
	res.Events = n
	res.PublishSeconds = time.Since(start).Seconds()
	res.PublishRate = float64(n) / res.PublishSeconds
	if c.Progress != nil {
		c.Progress(n, n)
	}
	// Wait until the consumer acked everything published.
	endSeq := startSeq + uint64(ar.Published)
	if err := waitAcked(ctx, js, c.Stream, c.Durable, endSeq, 10*time.Minute); err != nil {
		return nil, err
	}
	res.EndToEndRate = float64(n) / time.Since(start).Seconds()
	if st != nil {
		st.stopConsumer()
		st.mu.Lock()
		res.Latency = percentiles(st.latency)
		st.mu.Unlock()
		sinks.ReadFailureLog(filepath.Join(c.Dir, "failed.log"), nil, func(bhiv.FailureRecord) error { res.FailureRecords++; return nil })
	}
	res.PeakRSSBytes = peakRSS()
	return res, nil
}

func benchEvent(i int, execShare float64, padding string) (bhiv.Event, error) {
	sent := time.Now().UnixNano()
	if float64(i%100) < execShare*100 {
		return bhiv.New(bhiv.KindExecution, "bhiv-bench", "", bhiv.Execution{TeamID: "team_" + strconv.Itoa(i%50), Action: "bench",
			Status: "ok", Output: padding, DurationMS: int64(i % 1000), Extra: map[string]any{sentField: sent}})
	}
	return bhiv.New(bhiv.KindReward, "bhiv-bench", "", bhiv.Reward{TeamID: "team_" + strconv.Itoa(i%50), Reward: float64(i % 10),
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
		return 0, err
	}
	return info.State.LastSeq, nil
}

// waitAcked waits until the durable's ack floor reaches seq with nothing
// pending.
func waitAcked(ctx context.Context, js jetstream.JetStream, stream, durable string, seq uint64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cons, err := js.Consumer(ctx, stream, durable); err == nil {
			if info, err := cons.Info(ctx); err == nil && info.AckFloor.Stream >= seq && info.NumAckPending == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: the consumer %s did not ack everything within %s", durable, within)
}

func percentiles(d []time.Duration) *Latency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return &Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}

// peakRSS returns this process's peak resident set (VmHWM), or 0.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
