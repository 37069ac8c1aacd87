package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/hackaverse/bhiv/internal/s3test"
	"github.com/hackaverse/bhiv/sinks"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded server's and client's background goroutines that
		// outlive a test by a moment after shutdown.
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

const durable = "bhiv-sinks"

// fixture is a stream with a durable consumer, a real bucket, a real failure
// log and a Core record, and a small consumer (process) that delivers as the
// real one does: each event to Core and the bucket, invalid input to the
// failure log, then the ack.
type fixture struct {
	t       *testing.T
	js      jetstream.JetStream
	cons    jetstream.Consumer
	dir     string
	bucket  bhiv.Sink // the file Bucket, unless a test puts another
	flog    *sinks.FailureLog
	core    map[string]int
	ids     []string // envelope events, in publish order
	lastSeq uint64   // the stream sequence of the last publish
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx := context.Background()
	if _, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, bhiv.DefaultStreamName, jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, js: js, cons: cons, dir: t.TempDir(), core: map[string]int{}}
	fb, err := sinks.NewBucket(sinks.BucketConfig{Dir: f.bucketDir(), NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	f.bucket = fb
	t.Cleanup(func() { fb.Close() })
	if f.flog, err = sinks.OpenFailureLog(sinks.FailureLogConfig{Path: f.logPath()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.flog.Close() })
	return f
}

func (f *fixture) bucketDir() string { return filepath.Join(f.dir, "bucket") }
func (f *fixture) logPath() string   { return filepath.Join(f.dir, "failed.log") }

// publish publishes n envelope events.
func (f *fixture) publish(n int) {
	f.t.Helper()
	for i := 0; i < n; i++ {
		kind, data := bhiv.KindExecution, any(bhiv.Execution{TeamID: "t1", Action: "a"})
		if i%2 == 1 {
			kind, data = bhiv.KindReward, bhiv.Reward{TeamID: "t1", Reward: 1}
		}
		ev, err := bhiv.New(kind, "test", "", data)
		if err != nil {
			f.t.Fatal(err)
		}
		f.pubEvent(ev, true)
		f.ids = append(f.ids, ev.ID)
	}
}

func (f *fixture) pubEvent(ev bhiv.Event, dedupe bool) uint64 {
	f.t.Helper()
	b, err := json.Marshal(ev)
	if err != nil {
		f.t.Fatal(err)
	}
	var opts []jetstream.PublishOpt
	if dedupe {
		opts = append(opts, jetstream.WithMsgID(ev.ID))
	}
	return f.pub(&nats.Msg{Subject: bhiv.Subject("", ev.Kind()), Data: b}, opts...)
}

func (f *fixture) pub(m *nats.Msg, opts ...jetstream.PublishOpt) uint64 {
	f.t.Helper()
	ack, err := f.js.PublishMsg(context.Background(), m, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	f.lastSeq = max(f.lastSeq, ack.Sequence)
	return ack.Sequence
}

// process consumes everything pending on the durable as the consumer does.
func (f *fixture) process() {
	f.t.Helper()
	f.fetch(func(m bhiv.Message, jm jetstream.Msg) {
		ctx := context.Background()
		ev, err := bhiv.Decode(m, bhiv.DecodeOptions{})
		if err != nil {
			rec := bhiv.FailureRecord{Time: time.Now(), Sink: bhiv.SinkDecode, StreamSeq: m.Sequence, Subject: m.Subject,
				Error: err.Error(), ErrorClass: bhiv.ClassInvalidInput, Raw: m.Data, Headers: m.Header}
			if id := jm.Headers().Get(bhiv.MsgIDHeader); bhiv.ValidID(id) {
				rec.EventID = id // as the consumer does
			}
			if err := f.flog.Append(ctx, rec); err != nil {
				f.t.Fatal(err)
			}
			return
		}
		f.core[ev.ID]++
		if err := f.bucket.Deliver(ctx, &ev); err != nil {
			f.t.Fatal(err)
		}
	})
}

// drop acks everything pending on the durable without any sink seeing it.
func (f *fixture) drop() { f.t.Helper(); f.fetch(func(bhiv.Message, jetstream.Msg) {}) }

// fetch hands every pending message of the durable to fn, then acks it.
func (f *fixture) fetch(fn func(bhiv.Message, jetstream.Msg)) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		batch, err := f.cons.FetchNoWait(100)
		if err != nil {
			f.t.Fatal(err)
		}
		n := 0
		for jm := range batch.Messages() {
			n++
			md, err := jm.Metadata()
			if err != nil {
				f.t.Fatal(err)
			}
			fn(bhiv.Message{Subject: jm.Subject(), Header: jm.Headers(), Data: jm.Data(),
				Stream: md.Stream, Sequence: md.Sequence.Stream, Timestamp: md.Timestamp}, jm)
			if err := jm.DoubleAck(context.Background()); err != nil {
				f.t.Fatal(err)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			f.t.Fatal(err)
		}
		if n == 0 {
			// Right after a publish the durable may not see the new messages
			// yet (an empty no-wait fetch, pending 0): stop only when it has
			// acked everything the test published.
			info, err := f.cons.Info(context.Background())
			if err != nil {
				f.t.Fatal(err)
			}
			if info.AckFloor.Stream >= f.lastSeq && info.NumAckPending == 0 {
				return
			}
			if time.Now().After(deadline) {
				f.t.Fatalf("the durable acked up to %d of %d", info.AckFloor.Stream, f.lastSeq)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (f *fixture) config() Config {
	return Config{JS: f.js, Durable: durable, BucketDir: f.bucketDir(), FailureLog: f.logPath(), CoreSeen: f.core}
}

func (f *fixture) check(cfg Config) *Report {
	f.t.Helper()
	r, err := Check(context.Background(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// bucketFile returns the bucket file of the event id.
func (f *fixture) bucketFile(id string) string {
	f.t.Helper()
	files, _ := filepath.Glob(filepath.Join(f.bucketDir(), "*", "*", id+".json"))
	if len(files) != 1 {
		f.t.Fatalf("bucket files of %s: %v", id, files)
	}
	return files[0]
}

// A run where everything arrived, with the forms the stream can hold: bare
// events with derived ids, invalid input, an id published twice outside the
// dedupe window, a duplicate at Core.
func TestAllAccounted(t *testing.T) {
	f := newFixture(t)
	f.publish(20)
	bare := f.pub(&nats.Msg{Subject: "bhiv.events.execution", Data: []byte(`{"team_id":"t1","action":"bare"}`)})
	again, err := bhiv.New(bhiv.KindReward, "test", "again-1", bhiv.Reward{TeamID: "t1", Reward: 2})
	if err != nil {
		t.Fatal(err)
	}
	f.pubEvent(again, false)
	f.pubEvent(again, false) // the same id twice: one event
	f.pub(&nats.Msg{Subject: "bhiv.events.reward", Data: []byte("not json")})
	f.pub(&nats.Msg{Subject: "bhiv.events.reward", Data: []byte("[1]"), Header: nats.Header{bhiv.MsgIDHeader: {"bad-with-id"}}})
	f.process()
	f.core[f.ids[0]]++ // a duplicate at Core is allowed

	r := f.check(f.config())
	want := Report{StreamMessages: 25, Published: 24, Events: 22, RepeatedIDs: 1, Invalid: 2, CoreKnown: true,
		AtCore: 22, CoreDuplicates: 2, InBucket: 22, FailureRecords: 2, InFailureLog: 2}
	got := Report{StreamMessages: r.StreamMessages, Published: r.Published, Events: r.Events, RepeatedIDs: r.RepeatedIDs,
		Invalid: r.Invalid, CoreKnown: r.CoreKnown, AtCore: r.AtCore, CoreDuplicates: r.CoreDuplicates,
		InBucket: r.InBucket, FailureRecords: r.FailureRecords, InFailureLog: r.InFailureLog}
	if !r.OK() || got.String() != want.String() || r.Pending != 0 || len(r.Unexplained) != 0 {
		t.Fatalf("report:\n%s\nwant counts:\n%s", r, &want)
	}
	if r.ByClass["decode/invalid_input"] != 2 {
		t.Errorf("by class: %v", r.ByClass)
	}
	if c := r.Consumer; c == nil || !c.Found || c.AckFloor != bare+4 || c.NumPending != 0 {
		t.Errorf("consumer state: %+v", r.Consumer)
	}
	if _, err := os.Stat(filepath.Join(f.bucketDir(), "execution", time.Now().UTC().Format(time.DateOnly),
		fmt.Sprintf("%s-%d.json", bhiv.DefaultStreamName, bare))); err != nil {
		t.Errorf("the bare event's file: %v", err)
	}

	// The JSON form carries the same numbers.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Events != 22 || back.CoreDuplicates != 2 || back.Lost == nil {
		t.Errorf("JSON %s: %v", b, err)
	}
}

// Each way of losing an event is found and names what lacks it; a failure
// record for each missing sink then accounts for it.
func TestFindsLoss(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(f *fixture) (id string)
		missing []string
	}{
		{"bucket file deleted", func(f *fixture) string {
			if err := os.Remove(f.bucketFile(f.ids[3])); err != nil {
				f.t.Fatal(err)
			}
			return f.ids[3]
		}, []string{MissingBucket}},
		{"never reached Core", func(f *fixture) string { delete(f.core, f.ids[3]); return f.ids[3] }, []string{MissingCore}},
		{"dropped event: acked on the durable, no sink saw it", func(f *fixture) string {
			ev, err := bhiv.New(bhiv.KindReward, "test", "dropped-1", bhiv.Reward{TeamID: "t1", Reward: 1})
			if err != nil {
				f.t.Fatal(err)
			}
			f.pubEvent(ev, true)
			f.drop()
			return ev.ID
		}, []string{MissingCore, MissingBucket}},
		{"dropped bare event", func(f *fixture) string {
			seq := f.pub(&nats.Msg{Subject: "bhiv.events.reward", Data: []byte(`{"team_id":"t1","reward":3}`)})
			f.drop()
			return fmt.Sprintf("%s-%d", bhiv.DefaultStreamName, seq)
		}, []string{MissingCore, MissingBucket}},
		{"invalid input without its record", func(f *fixture) string {
			f.pub(&nats.Msg{Subject: "bhiv.events.reward", Data: []byte("[1,2]")})
			f.drop()
			return ""
		}, []string{MissingDecode}},
		{"bucket file in the wrong day", func(f *fixture) string {
			p := f.bucketFile(f.ids[2])
			other := filepath.Join(filepath.Dir(filepath.Dir(p)), "1999-01-01")
			if err := os.MkdirAll(other, 0o750); err != nil {
				f.t.Fatal(err)
			}
			if err := os.Rename(p, filepath.Join(other, filepath.Base(p))); err != nil {
				f.t.Fatal(err)
			}
			return f.ids[2]
		}, []string{MissingBucket}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.publish(10)
			f.process()
			if r := f.check(f.config()); !r.OK() {
				t.Fatalf("before breaking:\n%s", r)
			}
			id := tt.breakIt(f)
			r := f.check(f.config())
			if r.OK() || len(r.Lost) != 1 {
				t.Fatalf("want one lost event; report:\n%s", r)
			}
			l := r.Lost[0]
			if l.ID != id || !slices.Equal(l.Missing, tt.missing) || l.StreamSeq == 0 {
				t.Errorf("lost %+v, want id %q missing from %v", l, id, tt.missing)
			}
			if !strings.Contains(r.String(), "lost             1\n") {
				t.Errorf("table does not show the loss:\n%s", r)
			}

			// A failure record for what is missing accounts for it.
			var recs []bhiv.FailureRecord
			for _, sink := range l.Missing {
				recs = append(recs, bhiv.FailureRecord{Time: time.Now(), Sink: sink, EventID: l.ID, StreamSeq: l.StreamSeq,
					Error: "x", ErrorClass: bhiv.ClassPermanent})
			}
			if err := f.flog.Append(context.Background(), recs...); err != nil {
				t.Fatal(err)
			}
			if r := f.check(f.config()); !r.OK() || r.InFailureLog != 1 {
				t.Errorf("after the failure records:\n%s", r)
			}
		})
	}
}

// A record for one sink does not account for the other.
func TestRecordForOtherSinkIsNotEnough(t *testing.T) {
	f := newFixture(t)
	f.publish(3)
	f.process()
	if err := os.Remove(f.bucketFile(f.ids[1])); err != nil {
		t.Fatal(err)
	}
	if err := f.flog.Append(context.Background(), bhiv.FailureRecord{Time: time.Now(), Sink: sinks.CoreName,
		EventID: f.ids[1], Error: "x", ErrorClass: bhiv.ClassPermanent}); err != nil {
		t.Fatal(err)
	}
	r := f.check(f.config())
	if len(r.Lost) != 1 || !slices.Equal(r.Lost[0].Missing, []string{MissingBucket}) {
		t.Fatalf("report:\n%s", r)
	}
}

// Without a Core record, Core is inferred from acks and the bucket; a
// deleted bucket file is still found.
func TestCoreInferred(t *testing.T) {
	f := newFixture(t)
	f.publish(6)
	f.process()
	cfg := f.config()
	cfg.CoreSeen = nil
	r := f.check(cfg)
	if !r.OK() || r.CoreKnown || r.AtCore != 6 || !strings.Contains(r.String(), "inferred") {
		t.Fatalf("report:\n%s", r)
	}
	if err := os.Remove(f.bucketFile(f.ids[0])); err != nil {
		t.Fatal(err)
	}
	r = f.check(cfg)
	if len(r.Lost) != 1 || r.Lost[0].ID != f.ids[0] || r.AtCore != 5 {
		t.Fatalf("report:\n%s", r)
	}
}

// The core stub's record file is read, a torn last line skipped.
func TestCoreRecord(t *testing.T) {
	f := newFixture(t)
	f.publish(4)
	f.process()
	var b strings.Builder
	for _, id := range append(f.ids, f.ids[2], "not-published") {
		fmt.Fprintf(&b, `{"id":%q,"kind":"bhiv.execution"}`+"\n", id)
	}
	b.WriteString(`{"id":"tor`)
	rec := filepath.Join(f.dir, "core.jsonl")
	if err := os.WriteFile(rec, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.CoreSeen, cfg.CoreRecord = nil, rec
	r := f.check(cfg)
	if !r.OK() || !r.CoreKnown || r.AtCore != 4 || r.CoreDuplicates != 1 || r.CoreOther != 1 {
		t.Fatalf("report:\n%s", r)
	}
	cfg.CoreRecord = filepath.Join(f.dir, "missing.jsonl")
	if _, err := Check(context.Background(), cfg); err == nil {
		t.Error("a missing core record is not an error")
	}
}

func TestUnexplainedBucketFiles(t *testing.T) {
	f := newFixture(t)
	f.publish(5)
	f.process()
	stray := filepath.Join(f.bucketDir(), "reward", "2026-01-01")
	if err := os.MkdirAll(stray, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nobody.json", ".tmp-x.json-1234"} {
		if err := os.WriteFile(filepath.Join(stray, name), []byte("{}"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	r := f.check(f.config())
	if !r.OK() || !slices.Equal(r.Unexplained, []string{"reward/2026-01-01/nobody.json"}) ||
		!strings.Contains(r.String(), "reward/2026-01-01/nobody.json") {
		t.Errorf("report:\n%s", r)
	}
}

// The audit reads an S3 bucket as it reads a directory: events found there
// by key, a missing object is a loss of the bucket, a stray object is
// unexplained, probes are not events.
func TestS3Bucket(t *testing.T) {
	f := newFixture(t)
	srv := s3test.Start(t, "events")
	cfg := sinks.S3Config{Bucket: "events", Prefix: "prod/bhiv", Endpoint: srv.URL, Region: s3test.Region,
		Lookup: sinks.S3LookupPath, AccessKeyID: s3test.AccessKey, SecretAccessKey: s3test.SecretKey}
	sb, err := sinks.NewS3Bucket(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	f.bucket = sb
	f.publish(6)
	f.process()
	reader, err := sinks.NewS3Reader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	acfg := f.config()
	acfg.Bucket = reader
	r := f.check(acfg)
	if !r.OK() || r.InBucket != 6 || len(r.Unexplained) != 0 {
		t.Fatalf("report:\n%s", r)
	}
	// The file bucket is empty: the S3 one is what was read.
	if entries, _ := os.ReadDir(f.bucketDir()); len(entries) != 0 {
		t.Fatalf("the file bucket holds %d entries", len(entries))
	}

	keys, _ := srv.Keys("events", "prod/bhiv/")
	var gone string
	for _, k := range keys {
		if strings.HasSuffix(k, "/"+f.ids[2]+".json") {
			gone = k
		}
	}
	if gone == "" {
		t.Fatalf("no object for %s in %q", f.ids[2], keys)
	}
	if _, err := srv.Backend.DeleteObject("events", gone); err != nil {
		t.Fatal(err)
	}
	if err := srv.Put("events", "prod/bhiv/reward/2026-01-01/nobody.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Put("events", "prod/bhiv/.bhiv/probe-x", []byte("probe")); err != nil {
		t.Fatal(err)
	}
	r = f.check(acfg)
	if len(r.Lost) != 1 || r.Lost[0].ID != f.ids[2] || !slices.Equal(r.Lost[0].Missing, []string{MissingBucket}) {
		t.Errorf("lost %+v, want %s missing from the bucket", r.Lost, f.ids[2])
	}
	if !slices.Equal(r.Unexplained, []string{"reward/2026-01-01/nobody.json"}) {
		t.Errorf("unexplained %q", r.Unexplained)
	}
}

// Events the consumer has not processed yet are pending, not lost; once
// the durable acks them without delivering, they are lost.
func TestPendingIsNotLost(t *testing.T) {
	f := newFixture(t)
	f.publish(5)
	f.process()
	f.publish(3)
	f.pub(&nats.Msg{Subject: "bhiv.events.reward", Data: []byte("{")})
	// Not delivered yet is pending even before the durable counts it.
	if r := f.check(f.config()); !r.OK() || r.Pending != 4 {
		t.Fatalf("want 4 pending, none lost:\n%s", r)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := f.cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 4 || time.Now().After(deadline) {
			break
		}
	}
	r := f.check(f.config())
	if !r.OK() || r.Pending != 4 || r.Consumer.NumPending != 4 {
		t.Fatalf("want 4 pending, none lost:\n%s", r)
	}
	// Without a durable, nothing is pending: every message is judged.
	cfg := f.config()
	cfg.Durable = ""
	if r := f.check(cfg); len(r.Lost) != 4 || r.Pending != 0 {
		t.Fatalf("without a durable:\n%s", r)
	}
	f.drop()
	if r := f.check(f.config()); len(r.Lost) != 4 || r.Pending != 0 {
		t.Fatalf("after a drop:\n%s", r)
	}
}

func TestEmptyAndErrors(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.BucketDir, cfg.FailureLog = filepath.Join(f.dir, "none"), filepath.Join(f.dir, "none.log")
	r := f.check(cfg)
	if !r.OK() || r.Published != 0 || r.StreamMessages != 0 {
		t.Errorf("empty run:\n%s", r)
	}
	cfg.Stream = "NOPE"
	if _, err := Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Errorf("unknown stream: %v", err)
	}
	if _, err := Check(context.Background(), Config{}); err == nil {
		t.Error("no JetStream context accepted")
	}
	cfg = f.config()
	cfg.Durable = "nobody"
	if r := f.check(cfg); r.Consumer == nil || r.Consumer.Found {
		t.Errorf("unknown durable: %+v", r.Consumer)
	}
}

// TestConfigValidate checks each rule of Config.Validate, row by row.
func TestConfigValidate(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"defaults", Config{JS: js}, ""},
		{"durable", Config{JS: js, Stream: "EVENTS", Durable: "bhiv-sinks"}, ""},
		{"no JetStream", Config{}, "no JetStream context"},
		{"stream with a dot", Config{JS: js, Stream: "a.b"}, `stream name "a.b"`},
		{"durable with a space", Config{JS: js, Durable: "a b"}, `durable name "a b"`},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if d := (Config{}).WithDefaults(); d.Stream != bhiv.DefaultStreamName || d.Logger == nil {
		t.Errorf("defaults %+v", d)
	}
}

// A server without JetStream answers no JetStream request: the audit
// retries as through a leader election, then gives up with the reason.
func TestNoJetStreamGivesUp(t *testing.T) {
	defer func(d time.Duration) { transientBudget = d }(transientBudget)
	transientBudget = 500 * time.Millisecond
	srv := natstest.Start(t, func(o *server.Options) { o.JetStream = false })
	_, js := srv.Connect()
	start := time.Now()
	_, err := Check(context.Background(), Config{JS: js, Durable: durable})
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want no responders", err)
	}
	if d := time.Since(start); d < transientBudget {
		t.Errorf("gave up after %s, before the %s budget", d, transientBudget)
	}
	t.Log(err)
}

func TestTransient(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nats.ErrNoResponders, true},
		{fmt.Errorf("x: %w", nats.ErrTimeout), true},
		{context.DeadlineExceeded, true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{jetstream.ErrConsumerNotFound, false},
		{jetstream.ErrStreamNotFound, false},
		{errors.New("boom"), false},
	} {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
