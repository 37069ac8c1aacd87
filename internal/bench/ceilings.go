package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ceilings measures the bare parts of the pipeline with payloads like the
// run's: JetStream async publish and consume+ack on a scratch stream, HTTP
// POSTs to the same Core stub at the same concurrency (embedded only), and
// file writes with the same concurrency.
func ceilings(ctx context.Context, c Config, js jetstream.JetStream, st *stack) (map[string]float64, error) {
	n := c.Events
	if n == 0 || n > 20_000 {
		n = 20_000
	}
	payload := []byte(`{"specversion":"1.0","data":{"pad":"` + strings.Repeat("x", c.Size) + `"}}`)
	out := map[string]float64{}

	const stream = "BHIV_BENCH_CEILING"
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"bhivbench.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("bench: ceiling stream: %w", err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), stream)
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync("bhivbench.x", payload); err != nil {
			return nil, fmt.Errorf("bench: ceiling publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("bench: ceiling publish: acks did not come")
	}
	out[CeilingPublish] = float64(n) / time.Since(start).Seconds()

	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "ceiling", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return nil, err
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
		return nil, err
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
	out[CeilingConsume] = float64(got.Load()) / time.Since(start).Seconds()
	cc.Stop()

	if st != nil {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c.Concurrency, MaxIdleConns: c.Concurrency}}
		var next atomic.Int64
		var wg sync.WaitGroup
		start = time.Now()
		for w := 0; w < c.Concurrency; w++ {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					body := []byte(`{"id":"ceiling-` + strconv.FormatInt(i, 10) + `","type":"bhiv.execution","data":{"pad":"` + strings.Repeat("x", c.Size) + `"}}`)
					resp, err := client.Post(st.url, "application/json", bytes.NewReader(body))
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			})
		}
		wg.Wait()
		out[CeilingHTTP] = float64(n) / time.Since(start).Seconds()
	}

	for _, fsync := range []bool{false, true} {
		dir, err := os.MkdirTemp(c.Dir, "ceiling-files")
		if err != nil {
			return nil, err
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		start = time.Now()
		for w := 0; w < c.Concurrency; w++ {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					p := filepath.Join(dir, strconv.FormatInt(i, 10)+".json")
					f, err := os.CreateTemp(dir, ".tmp-")
					if err != nil {
						return
					}
					f.Write(payload)
					if fsync {
						f.Sync()
					}
					f.Close()
					os.Rename(f.Name(), p)
				}
			})
		}
		wg.Wait()
		key := CeilingFiles
		if fsync {
			key = CeilingFilesFsync
		}
		out[key] = float64(n) / time.Since(start).Seconds()
	}
	return out, nil
}
