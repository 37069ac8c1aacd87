package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
)

// PartEnv is the environment variable that carries a part's spec (JSON) to
// a part process: a process started with Config.PartCmd calls RunPart with
// its value.
const PartEnv = "BHIV_BENCH_PART"

// The bare parts of the pipeline whose CPU per event Config.Parts measures,
// each in its own process.
const (
	// PartConsumeAck consumes a stream's messages with jetstream's Consume
	// and acks each (explicit ack).
	PartConsumeAck = "consume_ack"
	// PartHTTPPost POSTs one event per request to the core stub, keep-alive,
	// PartHTTPConcurrency in flight (client side).
	PartHTTPPost = "http_post"
	// PartFiles writes each event to a temp file and renames it into place,
	// with the Bucket's group commit (a shared syncfs after the writes and
	// after the renames).
	PartFiles = "file_temp_rename_grouped_syncfs"
)

// PartHTTPConcurrency is the requests in flight of PartHTTPPost.
const PartHTTPConcurrency = 64

// PartSpec says what a part process does.
type PartSpec struct {
	Part        string `json:"part"`
	N           int    `json:"n"`           // events
	Size        int    `json:"size"`        // bytes of each event's data, as Config.Size
	Concurrency int    `json:"concurrency"` // requests in flight, or file writers
	NATSURL     string `json:"nats_url,omitempty"`
	Stream      string `json:"stream,omitempty"` // PartConsumeAck: a stream holding N messages
	URL         string `json:"url,omitempty"`    // PartHTTPPost: the core stub
	Dir         string `json:"dir,omitempty"`    // PartFiles: a new directory
}

// PartResult is what a part process measured of itself: its own CPU time
// (getrusage, user + system) over the work, start-up excluded.
type PartResult struct {
	Part        string  `json:"part"`
	Events      int     `json:"events"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"` // events/s
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUPerEvent float64 `json:"cpu_per_event_us"`
}

// RunPart is the body of a part process: it does the part spec (JSON, the
// value of PartEnv) describes and writes its PartResult as JSON to w.
func RunPart(ctx context.Context, spec string, w io.Writer) error {
	var s PartSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return fmt.Errorf("bench part: spec %q: %w", spec, err)
	}
	if s.N < 1 || s.Concurrency < 1 {
		return fmt.Errorf("bench part: spec %q: want n and concurrency of at least 1", spec)
	}
	var work func() error
	switch s.Part {
	case PartConsumeAck:
		nc, err := nats.Connect(s.NATSURL, nats.Name("bhiv bench part"))
		if err != nil {
			return fmt.Errorf("bench part: connect: %w", err)
		}
		defer nc.Close()
		work = func() error { return consumeAck(ctx, nc, s.Stream, s.N) }
	case PartHTTPPost:
		work = func() error { return httpPosts(s.URL, s.N, s.Concurrency, s.Size) }
	case PartFiles:
		work = func() error {
			_, err := fileCeiling(s.Dir, CeilingFilesSyncfs, s.N, s.Concurrency, envelope(s.Size).file())
			return err
		}
	default:
		return fmt.Errorf("bench part: unknown part %q", s.Part)
	}
	cpu0 := selfCPU()
	start := time.Now()
	if err := work(); err != nil {
		return err
	}
	secs, cpu := time.Since(start).Seconds(), (selfCPU() - cpu0).Seconds()
	return json.NewEncoder(w).Encode(PartResult{Part: s.Part, Events: s.N, Seconds: secs, Rate: float64(s.N) / secs,
		CPUSeconds: cpu, CPUPerEvent: cpu / float64(s.N) * 1e6})
}

// selfCPU returns the CPU time this process has used (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// consumeAck consumes n messages of stream with a new durable, acking each,
// and returns once the server has every ack.
func consumeAck(ctx context.Context, nc *nats.Conn, stream string, n int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "part", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return fmt.Errorf("bench part: consumer: %w", err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return fmt.Errorf("bench part: consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("bench part: consumed %d of %d messages within 5 minutes", got.Load(), n)
	}
	// The acks are fire-and-forget: a flush returns once the server has
	// processed everything sent before it.
	return nc.Flush()
}

// httpPosts POSTs n events to url (the core stub's path), each its own
// structured-mode CloudEvent with the data of a bench event of size bytes,
// from concurrency workers on keep-alive connections.
func httpPosts(url string, n, concurrency, size int) error {
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxIdleConns: concurrency}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	env := envelope(size)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) || failed.Load() != nil {
					return
				}
				resp, err := client.Post(url, "application/cloudevents+json", bytes.NewReader(env.body("ceiling-"+strconv.FormatInt(i, 10))))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						err = fmt.Errorf("POST %s: %s", url, resp.Status)
					}
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return fmt.Errorf("bench: http posts: %w", *err)
	}
	return nil
}

// sample is the envelope of an execution event with data like the bench's,
// cut around its id.
type sample struct{ before, after []byte }

// idMark stands for the id in the encoded sample.
const idMark = "bhiv-bench-sample-id"

// envelope returns the JSON envelope of an event like the bench's with
// size bytes of data (without the publish time the bench adds).
func envelope(size int) sample {
	ev, err := bhiv.New(bhiv.KindExecution, "bhiv-bench", idMark, bhiv.Execution{TeamID: "team_0", Action: "bench",
		Status: "ok", Output: strings.Repeat("x", max(0, size-120))})
	if err != nil {
		panic(err) // a constant event
	}
	b, err := ev.MarshalJSON()
	if err != nil {
		panic(err)
	}
	before, after, _ := bytes.Cut(b, []byte(idMark))
	return sample{before, after}
}

// body returns the envelope with id.
func (s sample) body(id string) []byte {
	return append(append(append(make([]byte, 0, len(s.before)+len(id)+len(s.after)), s.before...), id...), s.after...)
}

// file returns the envelope as the Bucket stores it: with a newline.
func (s sample) file() []byte { return append(s.body("0"), '\n') }

// partStream is the scratch stream of PartConsumeAck, deleted afterwards.
const partStream = "BHIV_BENCH_PART"

// measureParts runs each bare part in its own process, one after the
// other, with events like the run's: consume+ack of a scratch stream's
// messages, HTTP POSTs to the core stub, files with grouped syncfs.
func measureParts(ctx context.Context, c Config, js jetstream.JetStream, st *stack) ([]PartResult, error) {
	n := ceilingEvents(c)
	env := envelope(c.Size)
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: partStream, Subjects: []string{"bhivpart.>"}, Storage: jetstream.FileStorage}); err != nil {
		return nil, fmt.Errorf("bench: part stream: %w", err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), partStream)
	for i := range n {
		if _, err := js.PublishAsync("bhivpart.x", env.body("part-"+strconv.Itoa(i))); err != nil {
			return nil, fmt.Errorf("bench: part stream: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return nil, errors.New("bench: part stream: no publish acks within a minute")
	}
	dir, err := os.MkdirTemp(c.Dir, "part-files-")
	if err != nil {
		return nil, fmt.Errorf("bench: part files: %w", err)
	}
	var out []PartResult
	for _, s := range []PartSpec{
		{Part: PartConsumeAck, N: n, Size: c.Size, Concurrency: 1, NATSURL: st.ns.ClientURL(), Stream: partStream},
		{Part: PartHTTPPost, N: n, Size: c.Size, Concurrency: PartHTTPConcurrency, URL: st.url},
		{Part: PartFiles, N: n, Size: c.Size, Concurrency: c.Concurrency, Dir: dir},
	} {
		r, err := runPart(ctx, c, s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// runPart runs one part process and returns what it measured.
func runPart(ctx context.Context, c Config, s PartSpec) (PartResult, error) {
	spec, _ := json.Marshal(s)
	var stdout bytes.Buffer
	p, err := startChild("part "+s.Part, c.PartCmd, []string{PartEnv + "=" + string(spec)}, filepath.Join(c.Dir, "part-"+s.Part+".log"), &stdout)
	if err != nil {
		return PartResult{}, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop(time.Second)
		return PartResult{}, ctx.Err()
	}
	if err := p.stop(0); err != nil {
		return PartResult{}, err
	}
	var r PartResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil || r.Part != s.Part {
		return PartResult{}, fmt.Errorf("bench: part %s printed %q, not its result (%v)%s", s.Part, stdout.String(), err, p.logTail())
	}
	return r, nil
}
