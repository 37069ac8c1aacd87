package publisher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// setup starts a server, connects and returns a publisher that ensured the
// stream.
func setup(t *testing.T, cfg publisher.Config) (*natstest.Server, *nats.Conn, jetstream.JetStream, *publisher.Publisher) {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect()
	if cfg.Source == "" {
		cfg.Source = "executor"
	}
	cfg.EnsureStream = true
	p, err := publisher.New(ctxT(t, 10*time.Second), js, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return srv, nc, js, p
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(ctxT(t, 5*time.Second), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestConfig(t *testing.T) {
	c := publisher.Config{Source: "x"}.WithDefaults()
	if c.MaxPending != publisher.DefaultMaxPending || c.AckTimeout != publisher.DefaultAckTimeout || c.Logger == nil ||
		c.Stream.Name != "BHIV" || c.Stream.SubjectPrefix != "bhiv.events" {
		t.Errorf("defaults %+v", c)
	}
	for name, bad := range map[string]publisher.Config{
		"no source":        {},
		"bad stream":       {Source: "x", Stream: bhiv.StreamConfig{Name: "a.b"}},
		"bad prefix":       {Source: "x", Stream: bhiv.StreamConfig{SubjectPrefix: "a.>"}},
		"negative pending": {Source: "x", MaxPending: -1},
		"negative timeout": {Source: "x", AckTimeout: -time.Second},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	srv := natstest.Start(t)
	_, js := srv.Connect()
	if _, err := publisher.New(ctxT(t, time.Second), js, publisher.Config{}); err == nil || !strings.Contains(err.Error(), "source") {
		t.Errorf("New without source: %v", err)
	}
	if _, err := publisher.New(ctxT(t, time.Second), nil, publisher.Config{Source: "x"}); err == nil {
		t.Error("New with nil jetstream: no error")
	}
}

func TestPublishStoresEnvelope(t *testing.T) {
	_, _, js, p := setup(t, publisher.Config{Source: "executor"})
	ctx := ctxT(t, 10*time.Second)
	stream, err := js.Stream(ctx, "BHIV")
	if err != nil {
		t.Fatal(err)
	}
	withExt, err := bhiv.New(bhiv.KindReward, "reward-svc", "given-id-1", json.RawMessage(`{"team_id":"t2","reward":7,"bonus":{"why":"fast"}}`))
	if err != nil {
		t.Fatal(err)
	}
	withExt.Extensions = map[string]json.RawMessage{"traceparent": json.RawMessage(`"00-ab"`)}

	tests := []struct {
		name        string
		publish     func() (publisher.Result, error)
		wantSubject string
		wantID      string // "" means any ULID
		wantSource  string
		wantTeam    string
		wantData    map[string]any
		wantExt     string
	}{
		{
			name: "execution",
			publish: func() (publisher.Result, error) {
				return p.Execution(ctx, bhiv.Execution{TeamID: "team_42", Action: "analyze_data", Status: "ok",
					Output: map[string]any{"rows": 3}, DurationMS: 1500, Extra: map[string]any{"gpu": "a100"}})
			},
			wantSubject: "bhiv.events.execution", wantSource: "executor", wantTeam: "team_42",
			wantData: map[string]any{"team_id": "team_42", "action": "analyze_data", "status": "ok",
				"output": map[string]any{"rows": 3.0}, "duration_ms": 1500.0, "gpu": "a100"},
		},
		{
			name: "reward with a given id",
			publish: func() (publisher.Result, error) {
				return p.Reward(ctx, bhiv.Reward{TeamID: "team_42", ExecutionID: "exec-9", Reward: 10, Reason: "fast"}, publisher.WithID("exec-9-reward"))
			},
			wantSubject: "bhiv.events.reward", wantID: "exec-9-reward", wantSource: "executor", wantTeam: "team_42",
			wantData: map[string]any{"team_id": "team_42", "execution_id": "exec-9", "reward": 10.0, "reason": "fast"},
		},
		{
			name:        "generic event keeps its source, id and extensions",
			publish:     func() (publisher.Result, error) { return p.Publish(ctx, withExt) },
			wantSubject: "bhiv.events.reward", wantID: "given-id-1", wantSource: "reward-svc", wantTeam: "t2",
			wantData: map[string]any{"team_id": "t2", "reward": 7.0, "bonus": map[string]any{"why": "fast"}},
			wantExt:  `"00-ab"`,
		},
		{
			name: "generic event with attributes left out",
			publish: func() (publisher.Result, error) {
				return p.Publish(ctx, bhiv.Event{Type: bhiv.KindExecution.Type(), Data: json.RawMessage(`{"team_id":"t3"}`)})
			},
			wantSubject: "bhiv.events.execution", wantSource: "executor", wantTeam: "t3",
			wantData: map[string]any{"team_id": "t3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Add(-time.Second)
			res, err := tt.publish()
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			if res.Stream != "BHIV" || res.Sequence == 0 || res.Duplicate {
				t.Errorf("result %+v", res)
			}
			if tt.wantID != "" && res.ID != tt.wantID {
				t.Errorf("id %q, want %q", res.ID, tt.wantID)
			}
			if !bhiv.ValidID(res.ID) {
				t.Errorf("id %q is invalid", res.ID)
			}
			raw, err := stream.GetMsg(ctx, res.Sequence)
			if err != nil {
				t.Fatalf("get msg %d: %v", res.Sequence, err)
			}
			if raw.Subject != tt.wantSubject {
				t.Errorf("subject %q, want %q", raw.Subject, tt.wantSubject)
			}
			if got := raw.Header.Get("Nats-Msg-Id"); got != res.ID {
				t.Errorf("Nats-Msg-Id %q, want %q", got, res.ID)
			}
			if len(raw.Header) != 1 {
				t.Errorf("headers %v, want only Nats-Msg-Id", raw.Header)
			}
			// The body is a structured-mode envelope the consumer decodes.
			var env map[string]json.RawMessage
			if err := json.Unmarshal(raw.Data, &env); err != nil {
				t.Fatalf("body %s: %v", raw.Data, err)
			}
			if string(env["specversion"]) != `"1.0"` {
				t.Errorf("body has no specversion: %s", raw.Data)
			}
			ev, err := bhiv.Decode(bhiv.Message{Subject: raw.Subject, Header: raw.Header, Data: raw.Data, Stream: "BHIV", Sequence: raw.Sequence, Timestamp: raw.Time}, bhiv.DecodeOptions{})
			if err != nil {
				t.Fatalf("decode stored body: %v\n%s", err, raw.Data)
			}
			if ev.ID != res.ID || ev.Source != tt.wantSource || ev.TeamID() != tt.wantTeam || ev.Time.Before(before) ||
				ev.DataContentType != "application/json" || ev.Type != "bhiv."+strings.TrimPrefix(tt.wantSubject, "bhiv.events.") {
				t.Errorf("stored event %+v", ev)
			}
			var data map[string]any
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(data) != fmt.Sprint(tt.wantData) {
				t.Errorf("data %v, want %v", data, tt.wantData)
			}
			if got := string(ev.Extensions["traceparent"]); got != tt.wantExt && !(tt.wantExt == "" && got == "") {
				t.Errorf("extension traceparent %q, want %q", got, tt.wantExt)
			}
		})
	}
}

func TestPublishDuplicate(t *testing.T) {
	_, _, js, p := setup(t, publisher.Config{Source: "executor"})
	ctx := ctxT(t, 10*time.Second)
	ev, err := bhiv.New(bhiv.KindExecution, "executor", "", bhiv.Execution{TeamID: "t", Action: "a"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := p.Publish(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	second, err := p.Publish(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate {
		t.Errorf("duplicate flags: first %v, second %v", first.Duplicate, second.Duplicate)
	}
	if first.ID != ev.ID || second.ID != ev.ID || second.Sequence != first.Sequence {
		t.Errorf("first %+v, second %+v", first, second)
	}
	// A retry through Execution with a stable id is deduplicated too.
	x := bhiv.Execution{TeamID: "t", Action: "b"}
	r1, err := p.Execution(ctx, x, publisher.WithID("exec-1"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := p.Execution(ctx, x, publisher.WithID("exec-1"))
	if err != nil {
		t.Fatal(err)
	}
	if r1.Duplicate || !r2.Duplicate {
		t.Errorf("Execution retry: %+v then %+v", r1, r2)
	}
	if n := streamMsgs(t, js, "BHIV"); n != 2 {
		t.Errorf("stream holds %d messages, want 2", n)
	}
}

func TestPublishAsyncAllAcked(t *testing.T) {
	const n = 10_000
	_, _, js, p := setup(t, publisher.Config{Source: "executor", MaxPending: 512})
	ctx := ctxT(t, 60*time.Second)
	ids := make(map[string]bool, n)
	for i := range n {
		ev, err := bhiv.New(bhiv.KindExecution, "executor", "", bhiv.Execution{TeamID: fmt.Sprintf("team_%d", i%7), Action: "a", DurationMS: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[ev.ID] = true
		if err := p.PublishAsync(ev); err != nil {
			t.Fatalf("PublishAsync %d: %v", i, err)
		}
		if got := p.Pending(); got > 512 {
			t.Fatalf("%d acks pending, bound is 512", got)
		}
	}
	res, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if res != (publisher.AsyncResult{Published: n}) {
		t.Errorf("result %+v, want %d published", res, n)
	}
	if p.Pending() != 0 {
		t.Errorf("%d still pending after Wait", p.Pending())
	}
	if got := streamMsgs(t, js, "BHIV"); got != n {
		t.Errorf("stream holds %d, want %d", got, n)
	}
	if len(ids) != n {
		t.Errorf("%d distinct ids, want %d", len(ids), n)
	}

	// The counts reset; async duplicates are counted as such.
	ev, _ := bhiv.New(bhiv.KindReward, "r", "reward-1", bhiv.Reward{TeamID: "t", Reward: 1})
	for range 3 {
		if err := p.PublishAsync(ev); err != nil {
			t.Fatal(err)
		}
	}
	res, err = p.Wait(ctx)
	if err != nil || res != (publisher.AsyncResult{Published: 1, Duplicates: 2}) {
		t.Errorf("duplicates: %+v, %v", res, err)
	}
	// Wait with nothing pending returns at once.
	if res, err := p.Wait(ctx); err != nil || res != (publisher.AsyncResult{}) {
		t.Errorf("idle Wait: %+v, %v", res, err)
	}
}

func TestPublishAsyncBoundBlocks(t *testing.T) {
	// With one slot and a subject no stream listens on, each publish waits
	// for the previous one to fail (no responders, retried by nats.go).
	srv := natstest.Start(t)
	_, js := srv.Connect()
	p, err := publisher.New(ctxT(t, 5*time.Second), js, publisher.Config{Source: "s", MaxPending: 1,
		Stream: bhiv.StreamConfig{SubjectPrefix: "nostream"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		ev, _ := bhiv.New(bhiv.KindExecution, "s", "", bhiv.Execution{TeamID: "t"})
		ids = append(ids, ev.ID)
		if err := p.PublishAsync(ev); err != nil {
			t.Fatal(err)
		}
		if got := p.Pending(); got > 1 {
			t.Fatalf("%d pending, bound is 1", got)
		}
	}
	res, err := p.Wait(ctxT(t, 20*time.Second))
	if res != (publisher.AsyncResult{Failed: 3}) {
		t.Errorf("result %+v", res)
	}
	// Every failed publish is reported with its id.
	for _, id := range ids {
		if err == nil || !strings.Contains(err.Error(), id) {
			t.Errorf("error %v does not report %s", err, id)
		}
	}
	var pe *publisher.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("error %v: want *PublishError wrapping ErrNoStreamResponse", err)
	}
}

func TestPublishInvalidSendsNothing(t *testing.T) {
	_, nc, js, p := setup(t, publisher.Config{Source: "executor"})
	ctx := ctxT(t, 10*time.Second)
	sub, err := nc.SubscribeSync("bhiv.events.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	valid := func() bhiv.Event {
		ev, err := bhiv.New(bhiv.KindExecution, "executor", "", bhiv.Execution{TeamID: "t"})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	tests := []struct {
		name   string
		modify func(*bhiv.Event)
		want   error
	}{
		{"unknown type", func(e *bhiv.Event) { e.Type = "bhiv.deploy" }, bhiv.ErrUnknownKind},
		{"no type", func(e *bhiv.Event) { e.Type = "" }, bhiv.ErrUnknownKind},
		{"invalid id", func(e *bhiv.Event) { e.ID = "../../etc" }, bhiv.ErrInvalidID},
		{"missing team", func(e *bhiv.Event) { e.Subject, e.Data = "", json.RawMessage(`{"action":"a"}`) }, bhiv.ErrMissingTeam},
		{"subject differs from team", func(e *bhiv.Event) { e.Subject = "other" }, bhiv.ErrInvalidData},
		{"no data", func(e *bhiv.Event) { e.Data = nil }, bhiv.ErrMissingTeam},
		{"data not object", func(e *bhiv.Event) { e.Data = json.RawMessage(`[1]`) }, bhiv.ErrNotObject},
		{"data not JSON", func(e *bhiv.Event) { e.Data = json.RawMessage(`{"team_id":`) }, bhiv.ErrNotJSON},
		{"bad specversion", func(e *bhiv.Event) { e.SpecVersion = "0.3" }, bhiv.ErrInvalidEnvelope},
		{"reward not a number", func(e *bhiv.Event) {
			e.Type = bhiv.KindReward.Type()
			e.Data = json.RawMessage(`{"team_id":"t","reward":"lots"}`)
		}, bhiv.ErrInvalidData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := valid()
			tt.modify(&ev)
			if _, err := p.Publish(ctx, ev); !errors.Is(err, tt.want) {
				t.Errorf("Publish: %v, want %v", err, tt.want)
			}
			if err := p.PublishAsync(ev); !errors.Is(err, tt.want) {
				t.Errorf("PublishAsync: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := p.Execution(ctx, bhiv.Execution{Action: "no team"}); !errors.Is(err, bhiv.ErrMissingTeam) {
		t.Errorf("Execution without team: %v", err)
	}
	if _, err := p.Reward(ctx, bhiv.Reward{TeamID: "t"}, publisher.WithID("bad id")); !errors.Is(err, bhiv.ErrInvalidID) {
		t.Errorf("Reward with bad id: %v", err)
	}
	if _, err := p.Reward(ctx, bhiv.Reward{TeamID: "t", Extra: map[string]any{"f": func() {}}}); err == nil {
		t.Error("Reward with unencodable extra: no error")
	}
	res, err := p.Wait(ctx)
	if err != nil || res != (publisher.AsyncResult{}) {
		t.Errorf("Wait after rejected publishes: %+v, %v", res, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("an invalid event was sent: %s", m.Data)
	}
	if n := streamMsgs(t, js, "BHIV"); n != 0 {
		t.Errorf("stream holds %d messages, want 0", n)
	}
}

func TestNATSUnreachable(t *testing.T) {
	srv, nc, _, p := setup(t, publisher.Config{Source: "executor", AckTimeout: 500 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	if _, err := p.Execution(ctx, bhiv.Execution{TeamID: "t"}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()

	t.Run("sync publish ends at the deadline", func(t *testing.T) {
		short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := p.Execution(short, bhiv.Execution{TeamID: "t"})
		if err == nil {
			t.Fatal("no error with the server down")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("returned after %v with a 300ms deadline", d)
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			t.Errorf("error %v: want a deadline error", err)
		}
		if !strings.Contains(err.Error(), "bhiv.events.execution") {
			t.Errorf("error %q does not say where", err)
		}
	})
	t.Run("async publishes fail within the ack timeout", func(t *testing.T) {
		for range 5 {
			ev, _ := bhiv.New(bhiv.KindReward, "s", "", bhiv.Reward{TeamID: "t"})
			if err := p.PublishAsync(ev); err != nil {
				t.Fatalf("PublishAsync while reconnecting: %v", err)
			}
		}
		start := time.Now()
		res, err := p.Wait(ctxT(t, 5*time.Second))
		if res.Failed != 5 || res.Published != 0 {
			t.Errorf("result %+v", res)
		}
		var pe *publisher.PublishError
		if !errors.As(err, &pe) {
			t.Errorf("error %v: want *PublishError", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Wait took %v", d)
		}
	})
	t.Run("wait ends with its context", func(t *testing.T) {
		p2, err := publisher.New(ctx, jetstreamOf(t, nc), publisher.Config{Source: "s", AckTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ev, _ := bhiv.New(bhiv.KindReward, "s", "", bhiv.Reward{TeamID: "t"})
		if err := p2.PublishAsync(ev); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := p2.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait: %v, want deadline exceeded", err)
		}
		// Closing the connection leaves the ack unresolved in nats.go;
		// restart the server so it is acked and the collector ends.
		srv.Restart()
		res, err := p2.Wait(ctxT(t, 10*time.Second))
		if err != nil || res.Published+res.Failed != 1 {
			t.Errorf("after restart: %+v, %v", res, err)
		}
	})
	t.Run("closed connection", func(t *testing.T) {
		nc.Close()
		if _, err := p.Execution(ctx, bhiv.Execution{TeamID: "t"}); !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Publish: %v, want ErrConnectionClosed", err)
		}
		ev, _ := bhiv.New(bhiv.KindReward, "s", "", bhiv.Reward{TeamID: "t"})
		if err := p.PublishAsync(ev); !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("PublishAsync: %v, want ErrConnectionClosed", err)
		}
		if p.Pending() != 0 {
			t.Errorf("%d pending after a refused publish", p.Pending())
		}
	})
}

func jetstreamOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestNewEnsureStreamUnreachable(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	srv.Shutdown()
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := publisher.New(short, js, publisher.Config{Source: "s", EnsureStream: true})
	if err == nil || !strings.Contains(err.Error(), "BHIV") {
		t.Errorf("New: %v, want an error naming the stream", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("New took %v with a 300ms deadline", d)
	}
	// Without EnsureStream, New does not touch the network.
	if _, err := publisher.New(short, js, publisher.Config{Source: "s"}); err != nil {
		t.Errorf("New without EnsureStream: %v", err)
	}
}
