package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/jsstream"
)

// fullStream is the events stream with room for max messages and
// DiscardNew: once full, JetStream refuses publishes (a 503 API error)
// instead of dropping old events.
func fullStream(max int64) *jetstream.StreamConfig {
	cfg := jsstream.Config(bhiv.StreamConfig{})
	cfg.MaxMsgs, cfg.Discard = max, jetstream.DiscardNew
	return &cfg
}

// setMaxMsgs changes the stream's message limit (-1: none).
func (f *fixture) setMaxMsgs(max int64) {
	f.t.Helper()
	cfg := fullStream(max)
	if _, err := f.js.UpdateStream(context.Background(), *cfg); err != nil {
		f.t.Fatal(err)
	}
}

// check503 checks a 503 answer: Retry-After in whole seconds, the stored
// and not stored ids.
func check503(t *testing.T, r reply, retryAfter string, stored, notStored []string) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", r.status, r.raw)
	}
	if got := r.header.Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After %q, want %q", got, retryAfter)
	}
	if r.Reason != reasonUnavailable || r.Error == "" {
		t.Errorf("answer %s: want reason %q and an error", r.raw, reasonUnavailable)
	}
	if !slices.Equal(r.IDs, stored) || !slices.Equal(r.NotStored, notStored) {
		t.Errorf("answer %s: want ids %v stored, %v not stored", r.raw, stored, notStored)
	}
}

// TestStreamFullThenRetry: JetStream refuses the event (the stream is full
// and discards new messages), the client is told 503 with Retry-After and
// that nothing was stored; once there is room the same request succeeds
// and the event is stored once.
func TestStreamFullThenRetry(t *testing.T) {
	f := newFixture(t, Config{RetryAfter: 1500 * time.Millisecond}, fullStream(1))
	body := `{"team_id":"t1","action":"a"}`
	if r := f.post("/events/execution", body, "Idempotency-Key: first"); r.status != 202 {
		t.Fatalf("first event: %d %s", r.status, r.raw)
	}
	r := f.post("/events/execution", body, "Idempotency-Key: retry-me")
	check503(t, r, "2", nil, []string{"retry-me"})
	if n := f.count(); n != 1 {
		t.Fatalf("stream holds %d, want 1", n)
	}
	f.setMaxMsgs(-1)
	r = f.post("/events/execution", body, "Idempotency-Key: retry-me")
	if r.status != 202 || !slices.Equal(r.IDs, []string{"retry-me"}) || len(r.Duplicates) != 0 {
		t.Fatalf("retry: %d %s", r.status, r.raw)
	}
	r = f.post("/events/execution", body, "Idempotency-Key: retry-me")
	if r.status != 202 || !slices.Equal(r.Duplicates, []string{"retry-me"}) {
		t.Fatalf("second retry: %d %s", r.status, r.raw)
	}
	if n := f.count(); n != 2 {
		t.Errorf("stream holds %d, want 2", n)
	}
	if got := f.metric("bhiv_ingest_requests_total", map[string]string{"code": "503"}); got != 1 {
		t.Errorf("503 answers counted %v, want 1", got)
	}
}

// TestBatchPartlyStored: a batch whose later events JetStream refuses is
// answered 503 naming exactly the ids stored and the ids not stored; the
// whole batch sent again once there is room is answered 202, the stored
// ones flagged duplicates, and every event is in the stream once.
func TestBatchPartlyStored(t *testing.T) {
	f := newFixture(t, Config{}, fullStream(3))
	if r := f.post("/events/reward", `{"team_id":"t0","reward":1}`, "Idempotency-Key: r-0"); r.status != 202 {
		t.Fatalf("first event: %d %s", r.status, r.raw)
	}
	var evs []string
	ids := []string{"r-1", "r-2", "r-3", "r-4"}
	for i, id := range ids {
		evs = append(evs, envelope(id, bhiv.KindReward, "t1", fmt.Sprintf(`"reward":%d`, i)))
	}
	batch := "[" + strings.Join(evs, ",") + "]"
	ct := "Content-Type: application/cloudevents-batch+json"
	r := f.post("/events/reward", batch, ct)
	check503(t, r, "2", ids[:2], ids[2:])
	if !strings.Contains(r.Error, "2 stored") {
		t.Errorf("error %q does not say what was stored", r.Error)
	}
	f.setMaxMsgs(-1)
	r = f.post("/events/reward", batch, ct)
	if r.status != 202 || !slices.Equal(r.IDs, ids) || !slices.Equal(r.Duplicates, ids[:2]) {
		t.Fatalf("retry of the whole batch: %d %s", r.status, r.raw)
	}
	stored := f.stored()
	for _, id := range append([]string{"r-0"}, ids...) {
		if _, ok := stored[id]; !ok {
			t.Errorf("%s is not stored", id)
		}
	}
	if len(stored) != 5 {
		t.Errorf("stream holds %d events, want 5", len(stored))
	}
}

// TestNATSDownThenBack: with the server down, a POST is answered 503 at
// once (nothing buffered to be stored later behind the client's back) and
// /readyz says why; once the server is back the same request is stored.
func TestNATSDownThenBack(t *testing.T) {
	f := newFixture(t, Config{})
	body := `{"team_id":"t1","action":"a"}`
	f.nats.Shutdown()
	waitFor(t, 5*time.Second, "client notices the server is gone", func() bool { return !f.nc.IsConnected() })
	start := time.Now()
	r := f.post("/bhiv/core", body, "Idempotency-Key: during-outage")
	check503(t, r, "2", nil, []string{"during-outage"})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the 503 took %s; it should not wait for a publish timeout", d)
	}
	if rd := f.do("GET", "/readyz", ""); rd.status != 503 || !strings.Contains(rd.raw, "not ready: nats is") {
		t.Errorf("readyz during the outage: %d %q", rd.status, rd.raw)
	}
	if h := f.do("GET", "/healthz", ""); h.status != 200 {
		t.Errorf("healthz during the outage: %d", h.status)
	}
	f.nats.Restart()
	waitFor(t, 10*time.Second, "client reconnects", f.nc.IsConnected)
	if rd := f.do("GET", "/readyz", ""); rd.status != 200 {
		t.Errorf("readyz after the outage: %d %q", rd.status, rd.raw)
	}
	r = f.post("/bhiv/core", body, "Idempotency-Key: during-outage")
	if r.status != 202 || !slices.Equal(r.IDs, []string{"during-outage"}) {
		t.Fatalf("after the outage: %d %s", r.status, r.raw)
	}
	if n := f.count(); n != 1 {
		t.Errorf("stream holds %d, want 1", n)
	}
}

// TestNoStream: with no stream on the subjects nobody acks; 503, and
// /readyz names the missing stream.
func TestNoStream(t *testing.T) {
	f := newFixture(t, Config{}, nil)
	r := f.post("/events/execution", `{"team_id":"t1","action":"a"}`, "Idempotency-Key: k")
	check503(t, r, "2", nil, []string{"k"})
	if rd := f.do("GET", "/readyz", ""); rd.status != 503 || !strings.Contains(rd.raw, "stream BHIV") {
		t.Errorf("readyz without a stream: %d %q", rd.status, rd.raw)
	}
}

// TestOtherStream: a subject that belongs to another stream than the
// configured one is refused by JetStream (the expected-stream check): 500,
// nothing stored where the consumer would never read it.
func TestOtherStream(t *testing.T) {
	cfg := jsstream.Config(bhiv.StreamConfig{Name: "ELSEWHERE"})
	f := newFixture(t, Config{}, &cfg)
	r := f.post("/events/execution", `{"team_id":"t1","action":"a"}`, "Idempotency-Key: k")
	if r.status != 500 || r.Reason != reasonFailed || !slices.Equal(r.NotStored, []string{"k"}) {
		t.Fatalf("%d %s, want 500 with k not stored", r.status, r.raw)
	}
	s, _ := f.js.Stream(context.Background(), "ELSEWHERE")
	if info, _ := s.Info(context.Background()); info.State.Msgs != 0 {
		t.Errorf("the other stream got %d messages", info.State.Msgs)
	}
}

// TestClassifyPublish is the table of answers to a publish JetStream did
// not ack.
func TestClassifyPublish(t *testing.T) {
	apiErr := func(code int, ec jetstream.ErrorCode) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: ec, Description: "x"})
	}
	for _, tt := range []struct {
		name string
		err  error
		want int
	}{
		{"acked", nil, 202},
		{"no stream responding", jetstream.ErrNoStreamResponse, 503},
		{"no responders", nats.ErrNoResponders, 503},
		{"no ack in time", jetstream.ErrAsyncPublishTimeout, 503},
		{"too many acks pending", jetstream.ErrTooManyStalledMsgs, 503},
		{"request timeout", nats.ErrTimeout, 503},
		{"context deadline", context.DeadlineExceeded, 503},
		{"disconnected", nats.ErrDisconnected, 503},
		{"connection closed", nats.ErrConnectionClosed, 503},
		{"connection draining", nats.ErrConnectionDraining, 503},
		{"reconnecting", nats.ErrConnectionReconnecting, 503},
		{"not sent after an earlier failure", errNotSent, 503},
		{"stream full (DiscardNew)", apiErr(503, 10077), 503},
		{"insufficient resources", apiErr(503, 10023), 503},
		{"JetStream temporarily unavailable", apiErr(503, 10008), 503},
		{"request timeout API error", apiErr(408, 10000), 503},
		{"message above the stream's maximum", apiErr(400, 10054), 413},
		{"above the server's max payload", nats.ErrMaxPayload, 413},
		{"another stream", apiErr(400, 10060), 500},
		{"wrong last sequence", apiErr(400, 10071), 500},
		{"unknown client error", errors.New("something odd"), 503},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := classifyPublish(tt.err); got != tt.want {
				t.Errorf("classifyPublish(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}
