package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// TestCloudEventsSDKPublisher publishes with the CloudEvents Go SDK's NATS
// JetStream protocol binding (github.com/cloudevents/sdk-go/protocol/
// nats_jetstream/v2), in both content modes it can send, to a real
// nats-server; `bhiv consume` runs in-process against it and the core stub.
// Each event must reach Core (in BHIV_CORE_MODE, binary and structured
// both) and the bucket as the event the SDK sent: id, source, type, time,
// subject, datacontenttype, data and extensions.
func TestCloudEventsSDKPublisher(t *testing.T) {
	for _, coreMode := range []string{"binary", "structured"} {
		t.Run("core="+coreMode, func(t *testing.T) { testSDKPublisher(t, coreMode) })
	}
}

func testSDKPublisher(t *testing.T, coreMode string) {
	srv := natstest.Start(t)
	stub, err := corestub.New(corestub.Config{KeepEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	env, dir := consumeEnv(t, srv.URL(), httptestServer(t, stub)+corestub.Path)
	env["BHIV_CORE_MODE"] = coreMode
	_, stop := startConsume(t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The SDK's sender creates a stream of its own when it finds none:
	// let bhiv create BHIV first.
	js, _ := jetstream.New(nc)
	waitFor(t, 20*time.Second, func() bool {
		_, err := js.Stream(context.Background(), "BHIV")
		return err == nil
	})

	// What the SDK puts on the wire, for the test log.
	wire, err := nc.SubscribeSync("bhiv.events.>")
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]cloudevents.Event{}
	for _, mode := range []string{"binary", "structured"} {
		for _, kind := range bhiv.Kinds {
			sender, err := cejs.NewSenderFromConn(nc, "BHIV", "bhiv.events."+string(kind), nil)
			if err != nil {
				t.Fatal(err)
			}
			client, err := cloudevents.NewClient(sender)
			if err != nil {
				t.Fatal(err)
			}
			e := cloudevents.NewEvent()
			e.SetID(fmt.Sprintf("sdk-%s-%s", mode, kind))
			e.SetSource("urn:hackaverse:python-executor")
			e.SetType(kind.Type())
			e.SetTime(time.Date(2026, 11, 28, 2, 30, 0, 123456000, time.UTC))
			e.SetSubject("équipe 7")
			e.SetExtension("note", `a b%"é€😀`)
			e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			data := map[string]any{"team_id": "équipe 7", "action": "analyze_data", "duration_ms": 1200}
			ctype := cloudevents.ApplicationJSON
			if kind == bhiv.KindReward {
				data = map[string]any{"team_id": "équipe 7", "execution_id": "x1", "reward": 0.75}
				ctype = "application/json; charset=utf-8"
			}
			if err := e.SetData(ctype, data); err != nil {
				t.Fatal(err)
			}
			sctx := context.Background()
			if mode == "structured" {
				sctx = cloudevents.WithEncodingStructured(sctx)
			} else {
				sctx = cloudevents.WithEncodingBinary(sctx)
			}
			if res := client.Send(sctx, e); cloudevents.IsUndelivered(res) {
				t.Fatalf("SDK send (%s): %v", mode, res)
			}
			sent[e.ID()] = e
		}
	}

	for range sent {
		if m, err := wire.NextMsg(5 * time.Second); err == nil {
			t.Logf("the SDK published on %s: headers %v\n%s", m.Subject, m.Header, m.Data)
		}
	}
	waitFor(t, 20*time.Second, func() bool { return stub.Stats().Unique == int64(len(sent)) })
	for _, rec := range stub.Received() {
		e, ok := sent[rec.ID]
		if !ok {
			t.Errorf("Core got an event the SDK did not send: %s", rec.Event)
			continue
		}
		if rec.Mode != coreMode {
			t.Errorf("%s reached Core in %s mode, want %s", rec.ID, rec.Mode, coreMode)
		}
		var got bhiv.Event
		if err := json.Unmarshal(rec.Event, &got); err != nil {
			t.Fatal(err)
		}
		sameAsSDK(t, "core", got, e)
	}
	// And the bucket has the same events.
	waitFor(t, 10*time.Second, func() bool { return countFiles(t, filepath.Join(dir, "bucket")) == len(sent) })
	for id, e := range sent {
		matches, _ := filepath.Glob(filepath.Join(dir, "bucket", "*", "*", id+".json"))
		if len(matches) != 1 {
			t.Errorf("%s: %d bucket files", id, len(matches))
			continue
		}
		b, err := os.ReadFile(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		var got bhiv.Event
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		sameAsSDK(t, "bucket", got, e)
	}
}

// sameAsSDK checks that got is the event the SDK sent.
func sameAsSDK(t *testing.T, where string, got bhiv.Event, e cloudevents.Event) {
	t.Helper()
	for _, c := range []struct{ name, got, want string }{
		{"specversion", got.SpecVersion, e.SpecVersion()},
		{"source", got.Source, e.Source()},
		{"type", got.Type, e.Type()},
		{"subject", got.Subject, e.Subject()},
		{"datacontenttype", got.DataContentType, e.DataContentType()},
	} {
		if c.got != c.want {
			t.Errorf("%s %s: %s %q, want %q", where, e.ID(), c.name, c.got, c.want)
		}
	}
	if !got.Time.Equal(e.Time()) {
		t.Errorf("%s %s: time %s, want %s", where, e.ID(), got.Time, e.Time())
	}
	if !jsonSame(got.Data, e.Data()) {
		t.Errorf("%s %s: data %s, want %s", where, e.ID(), got.Data, e.Data())
	}
	if len(got.Extensions) != len(e.Extensions()) {
		t.Errorf("%s %s: extensions %v, want %v", where, e.ID(), got.Extensions, e.Extensions())
	}
	for name, v := range e.Extensions() {
		want, _ := types.Format(v)
		var s string
		if err := json.Unmarshal(got.Extensions[name], &s); err != nil || s != want {
			t.Errorf("%s %s: extension %s %s, want %q", where, e.ID(), name, got.Extensions[name], want)
		}
	}
}

// jsonSame reports whether a and b hold the same JSON value.
func jsonSame(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
