package bench

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ceilingStream is the scratch stream of the JetStream ceilings, deleted
// afterwards.
const ceilingStream = "BHIV_BENCH_CEILING"

// ceilings measures the bare parts of the pipeline with payloads like the
// run's, one after the other: JetStream async publish and consume+ack on a
// scratch stream, HTTP POSTs to the same Core stub at the same concurrency
// (embedded only), and file writes into c.Dir at the same concurrency —
// temp + rename without fsync, with an fsync per file, and with the
// Bucket's group commit (a shared syncfs after the write and after the
// rename).
func ceilings(ctx context.Context, c Config, js jetstream.JetStream, st *stack) (map[string]float64, error) {
	n, payload := ceilingEvents(c), envelope(c.Size).file()
	out := map[string]float64{}
	var err error
	if out[CeilingPublish], out[CeilingConsume], err = jetStreamCeilings(ctx, js, n, payload); err != nil {
		return nil, err
	}
	if st != nil {
		if out[CeilingHTTP], err = httpCeiling(st.url, n, c.Concurrency, c.Size); err != nil {
			return nil, err
		}
	}
	files, err := fileCeilings(c)
	if err != nil {
		return nil, err
	}
	maps.Copy(out, files)
	return out, nil
}

// ceilingEvents returns how many messages, requests or files each ceiling
// and each part takes: the run's events, at most 20,000.
func ceilingEvents(c Config) int {
	if c.Events == 0 || c.Events > 20_000 {
		return 20_000
	}
	return c.Events
}

// fileCeilings measures the three file ceilings. A run measures them before
// and again after the pipeline: on these shared disks the rate of file
// creation swings several times within a minute (ext4 without a journal
// skips recently freed inodes on every create, so deletions anywhere nearby
// slow it down for a while), and a ceiling measured once, before, can be
// far from what the pipeline met.
func fileCeilings(c Config) (map[string]float64, error) {
	n, payload := ceilingEvents(c), envelope(c.Size).file()
	out := map[string]float64{}
	for _, mode := range []string{CeilingFiles, CeilingFilesFsync, CeilingFilesSyncfs} {
		var err error
		if out[mode], err = fileCeiling(c.Dir, mode, n, c.Concurrency, payload); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func jetStreamCeilings(ctx context.Context, js jetstream.JetStream, n int, payload []byte) (pub, consume float64, err error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: ceilingStream, Subjects: []string{"bhivbench.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, 0, fmt.Errorf("bench: ceiling stream: %w", err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), ceilingStream)
	start := time.Now()
	for range n {
		if _, err := js.PublishAsync("bhivbench.x", payload); err != nil {
			return 0, 0, fmt.Errorf("bench: ceiling publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, 0, fmt.Errorf("bench: ceiling publish: no acks within a minute")
	}
	pub = float64(n) / time.Since(start).Seconds()

	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "ceiling", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return 0, 0, fmt.Errorf("bench: ceiling consumer: %w", err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	start = time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, 0, fmt.Errorf("bench: ceiling consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-time.After(time.Minute):
		return 0, 0, fmt.Errorf("bench: ceiling consume: %d of %d messages within a minute", got.Load(), n)
	}
	// The acks are fire-and-forget: wait until the server has them all.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if info, err := cons.Info(ctx); err == nil && info.AckFloor.Stream >= uint64(n) {
			break
		}
	}
	return pub, float64(n) / time.Since(start).Seconds(), nil
}

// httpCeiling posts n events to url from concurrency workers, each with a
// keep-alive connection, and returns the requests per second.
func httpCeiling(url string, n, concurrency, size int) (float64, error) {
	start := time.Now()
	if err := httpPosts(url, n, concurrency, size); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// fileCeiling writes n files of payload into a fresh directory under dir
// from concurrency writers: each a temp file renamed into place, with mode
// deciding the durability.
func fileCeiling(dir, mode string, n, concurrency int, payload []byte) (float64, error) {
	d, err := os.MkdirTemp(dir, "ceiling-files-")
	if err != nil {
		return 0, fmt.Errorf("bench: ceiling files: %w", err)
	}
	var g *groupSync
	if mode == CeilingFilesSyncfs {
		if g, err = newGroupSync(d); err != nil {
			return 0, err
		}
		defer g.close()
	}
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if err := writeFile(d, i, payload, mode, g); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return 0, fmt.Errorf("bench: ceiling files (%s): %w", mode, *err)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func writeFile(dir string, i int64, payload []byte, mode string, g *groupSync) error {
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return err
	}
	_, err = f.Write(payload)
	if err == nil && mode == CeilingFilesFsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if g != nil {
		if err := g.wait(); err != nil { // the data, before the rename
			return err
		}
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, strconv.FormatInt(i, 10)+".json")); err != nil {
		return err
	}
	if g != nil {
		return g.wait() // the rename
	}
	return nil
}

// groupSync is a bare group commit: whoever waits is released by the next
// syncfs that starts after it began to wait.
type groupSync struct {
	root    *os.File
	mu      sync.Mutex
	waiters []chan error
	wake    chan struct{}
	done    chan struct{}
}

func newGroupSync(dir string) (*groupSync, error) {
	root, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	g := &groupSync{root: root, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go g.loop()
	return g, nil
}

func (g *groupSync) wait() error {
	ch := make(chan error, 1)
	g.mu.Lock()
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return <-ch
}

func (g *groupSync) loop() {
	for {
		select {
		case <-g.done:
			return
		case <-g.wake:
		}
		g.mu.Lock()
		batch := g.waiters
		g.waiters = nil
		g.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		err := syncfs(g.root)
		for _, ch := range batch {
			ch <- err
		}
	}
}

func (g *groupSync) close() {
	close(g.done)
	g.root.Close()
}
