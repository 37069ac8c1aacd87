package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/hackaverse/bhiv/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded server's and client's background goroutines that
		// outlive a test by a moment after shutdown.
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// fixture is a real embedded JetStream server, the events stream, a
// Server on a connection to it and a real HTTP server in front.
type fixture struct {
	t      *testing.T
	nats   *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	server *Server
	url    string
	reg    *prometheus.Registry
}

// newFixture starts everything; stream, when given, replaces the default
// stream configuration (nil: no stream at all).
func newFixture(t *testing.T, cfg Config, stream ...*jetstream.StreamConfig) *fixture {
	t.Helper()
	f := &fixture{t: t, nats: natstest.Start(t), reg: prometheus.NewRegistry()}
	nc, js := f.nats.Connect(nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	f.nc, f.js = nc, js
	ctx := context.Background()
	switch {
	case len(stream) == 0:
		if _, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{}); err != nil {
			t.Fatal(err)
		}
	case stream[0] != nil:
		if _, err := js.CreateStream(ctx, *stream[0]); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Registerer = f.reg
	s, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.server = s
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

// reply is an answer as the client saw it.
type reply struct {
	status int
	header http.Header
	raw    string
	Answer
}

// post POSTs body to path with the headers given as "Name: value" pairs.
func (f *fixture) post(path, body string, headers ...string) reply {
	f.t.Helper()
	return f.do(http.MethodPost, path, body, headers...)
}

func (f *fixture) do(method, path, body string, headers ...string) reply {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(k, strings.TrimSpace(v))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r.Answer); err != nil {
			f.t.Fatalf("%s %s: answer %q is not an Answer: %v", method, path, b, err)
		}
		if !strings.Contains(string(b), `"ids":[`) {
			f.t.Errorf("%s %s: answer %s has no ids list", method, path, b)
		}
	}
	return r
}

// stream returns the events stream and its info.
func (f *fixture) stream() (jetstream.Stream, *jetstream.StreamInfo) {
	f.t.Helper()
	s, err := f.js.Stream(context.Background(), bhiv.DefaultStreamName)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return s, info
}

// count returns how many messages the stream holds.
func (f *fixture) count() uint64 {
	f.t.Helper()
	_, info := f.stream()
	return info.State.Msgs
}

// stored returns every message of the stream, decoded as the consumer
// decodes them, by event id; it fails the test on a message the consumer
// would refuse, or one whose Nats-Msg-Id is not its event id.
func (f *fixture) stored() map[string]storedEvent {
	f.t.Helper()
	s, info := f.stream()
	out := map[string]storedEvent{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			f.t.Fatal(err)
		}
		ev, err := bhiv.Decode(bhiv.Message{Subject: raw.Subject, Header: raw.Header, Data: raw.Data,
			Stream: bhiv.DefaultStreamName, Sequence: seq, Timestamp: raw.Time}, bhiv.DecodeOptions{})
		if err != nil {
			f.t.Fatalf("stream message %d (%s) is refused by the consumer's decoder: %v\n%s", seq, raw.Subject, err, raw.Data)
		}
		if got := raw.Header.Get(bhiv.MsgIDHeader); got != ev.ID {
			f.t.Errorf("message %d: Nats-Msg-Id %q, event id %q", seq, got, ev.ID)
		}
		if got := raw.Header.Get("Content-Type"); got != mediaStructured {
			f.t.Errorf("message %d: Content-Type %q, want %s", seq, got, mediaStructured)
		}
		if _, dup := out[ev.ID]; dup {
			f.t.Errorf("event %s is stored twice", ev.ID)
		}
		out[ev.ID] = storedEvent{Event: ev, subject: raw.Subject}
	}
	return out
}

type storedEvent struct {
	bhiv.Event
	subject string
}

// metric returns the sum of the counters (or histogram sample counts)
// named name whose labels include the ones given.
func (f *fixture) metric(name string, labels map[string]string) float64 {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
