package sinks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// BenchmarkCore measures the Core sink's events/s against a local server,
// next to its ceiling measured in the same run: a bare net/http client
// posting the same bodies, with the same number of events in flight. Bare
// and Core runs alternate in rounds so that both see the same machine load.
// It reports events/s (Core), bare-events/s and ratio (target ≥ 0.8); ns/op
// is Core's alone.
//
// With batch 100, 200 callers feed Core, which sends two POSTs of 100
// events at a time; the bare client posts the same arrays of 100 from 2
// goroutines.
func BenchmarkCore(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	const nEvents = 1024
	events := make([]*bhiv.Event, nEvents)
	bodies := make([][]byte, nEvents)
	for i := range events {
		events[i] = testEvent(b, bhiv.Kinds[i%2], fmt.Sprintf("01BENCH%05d", i), 200)
		var err error
		if bodies[i], err = events[i].MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		callers, batch int
	}{{1, 1}, {16, 1}, {64, 1}, {200, 100}} {
		name := fmt.Sprintf("conc=%d", tc.callers)
		if tc.batch > 1 {
			name += fmt.Sprintf("/batch=%d", tc.batch)
		}
		b.Run(name, func(b *testing.B) {
			benchCore(b, srv.URL+"/bhiv/core", events, bodies, tc.callers, tc.batch)
		})
	}
}

func benchCore(b *testing.B, url string, events []*bhiv.Event, bodies [][]byte, callers, batch int) {
	core, err := NewCore(CoreConfig{URL: url, Concurrency: callers, BatchMax: batch, UserAgent: "bhiv/bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer core.Close()

	// The bare client: one POST per event, or per array of batch events.
	bareConc := max(1, callers/batch)
	type post struct {
		key  string
		body []byte
	}
	posts := make([]post, 0, len(bodies))
	if batch == 1 {
		for i, body := range bodies {
			posts = append(posts, post{events[i].ID, body})
		}
	} else {
		for i := 0; i+batch <= len(bodies); i += batch {
			ids := make([]string, batch)
			for j := range ids {
				ids[j] = events[i+j].ID
			}
			posts = append(posts, post{batchKey(ids), joinArray(bodies[i : i+batch])})
		}
	}
	tr := &http.Transport{MaxIdleConns: 100, MaxIdleConnsPerHost: bareConc + 1}
	defer tr.CloseIdleConnections()
	bare := &http.Client{Transport: tr}
	barePost := func(p post) error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(p.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", p.key)
		req.Header.Set("User-Agent", "bhiv/bench")
		resp, err := bare.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}

	// run calls fn n times from conc goroutines and returns the time taken.
	run := func(conc, n int, fn func(i int) error) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		start := time.Now()
		for range conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					if err := fn(i); err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
				}
			})
		}
		wg.Wait()
		if p := failed.Load(); p != nil {
			b.Fatal(*p)
		}
		return time.Since(start)
	}
	coreFn := func(i int) error { return core.Deliver(context.Background(), events[i%len(events)]) }
	bareFn := func(i int) error { return barePost(posts[i%len(posts)]) }
	// bareEncFn also encodes the events of its body first, as any client
	// holding events must; its time is the ceiling that includes encoding.
	bareEncFn := func(i int) error {
		if batch == 1 {
			ev := events[i%len(events)]
			body, err := ev.MarshalJSON()
			if err != nil {
				return err
			}
			return barePost(post{ev.ID, body})
		}
		j := (i % len(posts)) * batch
		bs := make([][]byte, batch)
		ids := make([]string, batch)
		for k := range bs {
			ev := events[j+k]
			var err error
			if bs[k], err = ev.MarshalJSON(); err != nil {
				return err
			}
			ids[k] = ev.ID
		}
		return barePost(post{batchKey(ids), joinArray(bs)})
	}

	// Warm up: connections, pools.
	run(callers, 4*callers, coreFn)
	run(bareConc, 4*bareConc, bareFn)

	// Many short rounds, alternating, so that all three see the same load
	// from whatever else runs on the machine.
	rounds := min(20, max(1, b.N/(4*callers)))
	var coreTime, bareTime, bareEncTime time.Duration
	var coreEvents, bareEvents int
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - coreEvents
		}
		b.StopTimer()
		bn := max(n/batch, bareConc)
		bareTime += run(bareConc, bn, bareFn)
		bareEncTime += run(bareConc, bn, bareEncFn)
		bareEvents += bn * batch
		b.StartTimer()
		coreTime += run(callers, n, coreFn)
		coreEvents += n
	}
	b.StopTimer()
	coreRate := float64(coreEvents) / coreTime.Seconds()
	bareRate := float64(bareEvents) / bareTime.Seconds()
	bareEncRate := float64(bareEvents) / bareEncTime.Seconds()
	b.ReportMetric(coreRate, "events/s")
	b.ReportMetric(bareRate, "bare-events/s")
	b.ReportMetric(coreRate/bareRate, "ratio")
	b.ReportMetric(bareEncRate, "bare-enc-events/s")
	b.ReportMetric(coreRate/bareEncRate, "ratio-enc")
}

// okTransport answers every request with 200 at once, without a network.
type okTransport struct{}

func (okTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
}

// BenchmarkCoreOverhead measures what the Core sink adds to one delivery
// (encoding, policies, request building) with a transport that answers at
// once, next to a bare client posting pre-encoded bodies the same way.
func BenchmarkCoreOverhead(b *testing.B) {
	ev := testEvent(b, bhiv.KindExecution, "01OVERHEAD", 200)
	body, _ := ev.MarshalJSON()
	b.Run("core", func(b *testing.B) {
		c, err := NewCore(CoreConfig{URL: "http://core.invalid/bhiv/core"})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.client.Transport = &coreTransport{next: okTransport{}, core: c}
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Deliver(context.Background(), ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ev.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bare", func(b *testing.B) {
		client := &http.Client{Transport: okTransport{}}
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, "http://core.invalid/bhiv/core", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", ev.ID)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	})
}
