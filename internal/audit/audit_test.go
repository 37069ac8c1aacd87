package audit

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/natstest"
	"github.com/hackaverse/bhiv/sinks"
)

type fixture struct {
	js     jetstream.JetStream
	dir    string
	bucket *sinks.Bucket
	flog   *sinks.FailureLog
	core   map[string]int
	ids    []string
}

// newFixture publishes n events and one invalid message, and delivers the
// events to a real bucket and a Core map as the consumer would; the invalid
// one gets its failure record.
func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect()
	ctx := context.Background()
	if _, err := bhiv.EnsureStream(ctx, js, bhiv.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{js: js, dir: t.TempDir(), core: map[string]int{}}
	var err error
	if f.bucket, err = sinks.NewBucket(sinks.BucketConfig{Dir: filepath.Join(f.dir, "bucket"), NoFsync: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.bucket.Close() })
	if f.flog, err = sinks.OpenFailureLog(sinks.FailureLogConfig{Path: filepath.Join(f.dir, "failed.log")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.flog.Close() })
	for i := 0; i < n; i++ {
		ev, err := bhiv.New(bhiv.KindExecution, "test", "", bhiv.Execution{TeamID: "t1", Action: "a"})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ev.MarshalJSON()
		if _, err := js.Publish(ctx, "bhiv.events.execution", b, jetstream.WithMsgID(ev.ID)); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, ev.ID)
		f.core[ev.ID]++
		if err := f.bucket.Deliver(ctx, &ev); err != nil {
			t.Fatal(err)
		}
	}
	ack, err := js.Publish(ctx, "bhiv.events.reward", []byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.flog.Append(ctx, bhiv.FailureRecord{Time: time.Now(), Sink: bhiv.SinkDecode, StreamSeq: ack.Sequence,
		Error: "not json", ErrorClass: bhiv.ClassInvalidInput, Raw: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	_ = nc
	return f
}

func (f *fixture) check(t *testing.T) *Report {
	t.Helper()
	r, err := Check(context.Background(), Config{JS: f.js, BucketDir: filepath.Join(f.dir, "bucket"),
		FailureLog: filepath.Join(f.dir, "failed.log"), CoreSeen: f.core})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAllAccounted(t *testing.T) {
	f := newFixture(t, 20)
	f.core[f.ids[0]]++ // a duplicate at Core is allowed
	r := f.check(t)
	if !r.OK() || r.Events != 20 || r.Invalid != 1 || r.AtCore != 20 || r.CoreDuplicates != 1 || r.InBucket != 20 || len(r.Unexplained) != 0 {
		t.Fatalf("report:\n%s", r)
	}
}

func TestFindsLoss(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, f *fixture)
		missing string
	}{
		{"bucket file deleted", func(t *testing.T, f *fixture) {
			files, _ := filepath.Glob(filepath.Join(f.dir, "bucket", "execution", "*", f.ids[3]+".json"))
			if len(files) != 1 {
				t.Fatalf("bucket file: %v", files)
			}
			os.Remove(files[0])
		}, "bucket"},
		{"never reached Core", func(t *testing.T, f *fixture) { delete(f.core, f.ids[3]) }, "core"},
		{"dropped event", func(t *testing.T, f *fixture) {
			ev, _ := bhiv.New(bhiv.KindReward, "test", "dropped-1", bhiv.Reward{TeamID: "t1", Reward: 1})
			b, _ := ev.MarshalJSON()
			if _, err := f.js.Publish(context.Background(), "bhiv.events.reward", b); err != nil {
				t.Fatal(err)
			}
		}, "core,bucket"},
		{"invalid input without its record", func(t *testing.T, f *fixture) {
			if _, err := f.js.Publish(context.Background(), "bhiv.events.reward", []byte("[1,2]")); err != nil {
				t.Fatal(err)
			}
		}, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 10)
			tt.break_(t, f)
			r := f.check(t)
			if r.OK() || len(r.Lost) != 1 {
				t.Fatalf("want one lost event; report:\n%s", r)
			}
			if got := join(r.Lost[0].Missing); got != tt.missing {
				t.Errorf("missing from %s, want %s", got, tt.missing)
			}
			// A failure record for what is missing accounts for it.
			l := r.Lost[0]
			var recs []bhiv.FailureRecord
			for _, sink := range l.Missing {
				recs = append(recs, bhiv.FailureRecord{Time: time.Now(), Sink: sink, EventID: l.ID, StreamSeq: l.StreamSeq, Error: "x", ErrorClass: bhiv.ClassPermanent})
			}
			if err := f.flog.Append(context.Background(), recs...); err != nil {
				t.Fatal(err)
			}
			if r := f.check(t); !r.OK() {
				t.Errorf("still lost after the failure records:\n%s", r)
			}
		})
	}
}

func TestUnexplainedAndPending(t *testing.T) {
	f := newFixture(t, 5)
	stray := filepath.Join(f.dir, "bucket", "reward", "2026-01-01")
	os.MkdirAll(stray, 0o750)
	os.WriteFile(filepath.Join(stray, "nobody.json"), []byte("{}"), 0o640)
	r := f.check(t)
	if len(r.Unexplained) != 1 || r.Unexplained[0] != "nobody" {
		t.Errorf("unexplained = %v", r.Unexplained)
	}
	// With a durable that has not processed anything, unaccounted events are pending, not lost.
	ctx := context.Background()
	if _, err := f.js.CreateConsumer(ctx, "BHIV", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	delete(f.core, f.ids[0])
	r, err := Check(ctx, Config{JS: f.js, Durable: "d", BucketDir: filepath.Join(f.dir, "bucket"),
		FailureLog: filepath.Join(f.dir, "failed.log"), CoreSeen: f.core})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Pending != 1 {
		t.Errorf("want 1 pending, none lost:\n%s", r)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}
