package publisher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkPublishAsync measures the publisher's async rate for events with
// 256 bytes of data against an embedded server and, in the same run and on the
// same stream, the raw jetstream.PublishAsync rate for the very bytes the
// publisher sends (same subject, same Nats-Msg-Id). The two alternate in
// rounds so both see the same store state. It reports both rates and
// publisher/raw (target ≥ 0.8).
//
//	go test -run '^$' -bench PublishAsync -benchtime 200000x ./publisher/
func BenchmarkPublishAsync(b *testing.B) {
	srv := natstest.Start(b)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p, err := publisher.New(ctx, js, publisher.Config{Source: "bench", EnsureStream: true})
	if err != nil {
		b.Fatal(err)
	}
	// 256 bytes of data.
	pad := strings.Repeat("x", 256-len(`{"team_id":"team_42","action":"analyze_data","duration_ms":1234,"pad":""}`))
	data := json.RawMessage(`{"team_id":"team_42","action":"analyze_data","duration_ms":1234,"pad":"` + pad + `"}`)
	if len(data) != 256 {
		b.Fatalf("data is %d bytes", len(data))
	}
	const round = 20_000
	mkEvents := func(n int, tag string) []bhiv.Event {
		evs := make([]bhiv.Event, n)
		for i := range evs {
			ev, err := bhiv.New(bhiv.KindExecution, "bench", fmt.Sprintf("%s-%d", tag, i), data)
			if err != nil {
				b.Fatal(err)
			}
			evs[i] = ev
		}
		return evs
	}
	subject := bhiv.Subject("", bhiv.KindExecution)

	runRaw := func(evs []bhiv.Event) time.Duration {
		bodies := make([][]byte, len(evs))
		for i := range evs {
			bodies[i], _ = json.Marshal(evs[i])
		}
		start := time.Now()
		for i, body := range bodies {
			if _, err := js.PublishAsync(subject, body, jetstream.WithMsgID(evs[i].ID), jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			b.Fatal("raw: acks did not complete")
		}
		return time.Since(start)
	}
	runPub := func(evs []bhiv.Event) time.Duration {
		start := time.Now()
		for _, ev := range evs {
			if err := p.PublishAsync(ev); err != nil {
				b.Fatal(err)
			}
		}
		res, err := p.Wait(ctx)
		if err != nil || res.Published != len(evs) {
			b.Fatalf("publisher: %+v, %v", res, err)
		}
		return time.Since(start)
	}

	// Warm up both paths.
	runRaw(mkEvents(2000, "warm-raw"))
	runPub(mkEvents(2000, "warm-pub"))

	var rawDur, pubDur time.Duration
	var rawN, pubN int
	b.ResetTimer()
	for done, r := 0, 0; done < b.N; r++ {
		n := min(round, b.N-done)
		b.StopTimer()
		rawEvs := mkEvents(n, fmt.Sprintf("raw-%d-%d", b.N, r))
		pubEvs := mkEvents(n, fmt.Sprintf("pub-%d-%d", b.N, r))
		b.StartTimer()
		// Alternate which goes first so neither always meets a fresh block.
		if r%2 == 0 {
			rawDur += runRaw(rawEvs)
			pubDur += runPub(pubEvs)
		} else {
			pubDur += runPub(pubEvs)
			rawDur += runRaw(rawEvs)
		}
		rawN += n
		pubN += n
		done += n
	}
	b.StopTimer()
	rawRate := float64(rawN) / rawDur.Seconds()
	pubRate := float64(pubN) / pubDur.Seconds()
	b.ReportMetric(pubRate, "publisher-events/s")
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(pubRate/rawRate, "publisher/raw")
	b.ReportMetric(0, "ns/op")
}
