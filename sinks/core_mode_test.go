package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	bhivce "github.com/hackaverse/bhiv/internal/cehttp"
	"github.com/hackaverse/bhiv/internal/corestub"
)

// awkward is an extension value with every kind of character §3.1.3.2 of
// the HTTP binding percent-encodes: space, '"', '%', non-ASCII (two, three
// and four UTF-8 bytes), and a printable ASCII run that stays as it is.
const awkward = `a b%"é€😀 ~!#$&'()*+,/:;<=>?@[\]^_{|}`

// awkwardEncoded is awkward percent-encoded.
const awkwardEncoded = `a%20b%25%22%C3%A9%E2%82%AC%F0%9F%98%80%20~!#$&'()*+,/:;<=>?@[\]^_{|}`

// modeEvent returns a decoded event (its envelope encoded once, at decode)
// whose subject and extensions need percent-encoding in binary mode.
func modeEvent(t testing.TB, id string) *bhiv.Event {
	t.Helper()
	note, _ := json.Marshal(awkward)
	env := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"urn:hackaverse:executor","type":"bhiv.execution",`+
		`"time":"2026-11-28T02:30:00.123Z","datacontenttype":"application/json",`+
		`"note":%s,"count":42,"flag":true,`+
		`"data":{"team_id":"équipe 7","action":"deploy",   "duration_ms":42}}`, id, note)
	ev, err := bhiv.Decode(bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(env)}, bhiv.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestCorePctEncode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"simple", "simple"},
		{"", ""},
		{"Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"}, // the binding's own example
		{"100%", "100%25"},
		{`say "hi"`, "say%20%22hi%22"},
		{"tab\there\x7f", "tab%09here%7F"},
		{"café", "caf%C3%A9"},
		{awkward, awkwardEncoded},
	}
	for _, tt := range tests {
		got := pctEncode(tt.in)
		if got != tt.want {
			t.Errorf("pctEncode(%q) = %q, want %q", tt.in, got, tt.want)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x21 || got[i] > 0x7e {
				t.Errorf("pctEncode(%q) = %q holds byte %#x, outside printable ASCII", tt.in, got, got[i])
			}
		}
		back, err := bhivce.HeaderValue(got)
		if err != nil || back != tt.in {
			t.Errorf("decoding %q gives %q, %v; want %q", got, back, err, tt.in)
		}
	}
}

// TestCoreModes checks each content mode on the wire, as the CloudEvents
// HTTP binding defines it.
func TestCoreModes(t *testing.T) {
	t.Run("binary", func(t *testing.T) {
		srv := newFakeCore(t, nil)
		c := newTestCore(t, fastCore(srv.URL)) // binary is the default
		ev := modeEvent(t, "01BINARY")
		if err := c.Deliver(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		r := srv.requests()[0]
		// §3.1.2: the body is the data, byte for byte as published (the
		// spaces in it included).
		if !bytes.Equal(r.body, ev.Data) || !bytes.Contains(r.body, []byte(`"action":"deploy",   "duration_ms"`)) {
			t.Errorf("body %s, want the data exactly as published: %s", r.body, ev.Data)
		}
		want := map[string]string{
			"Content-Type":    "application/json", // §3.1.1
			"Ce-Specversion":  "1.0",
			"Ce-Id":           "01BINARY",
			"Ce-Source":       "urn:hackaverse:executor",
			"Ce-Type":         "bhiv.execution",
			"Ce-Time":         "2026-11-28T02:30:00.123Z",
			"Ce-Subject":      "%C3%A9quipe%207", // §3.1.3.2
			"Ce-Note":         awkwardEncoded,
			"Ce-Count":        "42",
			"Ce-Flag":         "true",
			"Idempotency-Key": "01BINARY",
		}
		for name, v := range want {
			if got := r.header.Values(name); len(got) != 1 || got[0] != v {
				t.Errorf("%s: %q, want %q", name, got, v)
			}
		}
		for name := range r.header {
			if strings.HasPrefix(name, "Ce-") && want[name] == "" {
				t.Errorf("unexpected header %s: %q", name, r.header.Get(name))
			}
		}
		if _, ok := r.header["Ce-Datacontenttype"]; ok {
			t.Error("ce-datacontenttype sent in binary mode (§3.1.1 forbids it)")
		}
		mode, got, err := corestub.Parse(r.header, r.body)
		if err != nil || mode != corestub.ModeBinary || len(got) != 1 {
			t.Fatalf("the stub reads %s %d events, %v", mode, len(got), err)
		}
		g := got[0]
		if g.ID != ev.ID || g.Source != ev.Source || g.Type != ev.Type || !g.Time.Equal(ev.Time) || g.Subject != ev.Subject ||
			g.DataContentType != ev.DataContentType || !bytes.Equal(g.Data, ev.Data) ||
			string(g.Extensions["note"]) != string(ev.Extensions["note"]) {
			t.Errorf("read back %+v\nwant %+v", g, *ev)
		}
	})

	t.Run("binary datacontenttype", func(t *testing.T) {
		srv := newFakeCore(t, nil)
		c := newTestCore(t, fastCore(srv.URL))
		ev := testEvent(t, bhiv.KindReward, "01CTYPE", 0)
		ev.DataContentType = "application/json; charset=utf-8"
		if err := c.Deliver(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		ev.DataContentType = "" // defaults to application/json
		if err := c.Deliver(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		reqs := srv.requests()
		if got := reqs[0].header.Get("Content-Type"); got != "application/json; charset=utf-8" {
			t.Errorf("Content-Type %q, want the event's datacontenttype", got)
		}
		if got := reqs[1].header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type %q without datacontenttype, want application/json", got)
		}
	})

	t.Run("binary bad extension name", func(t *testing.T) {
		srv := newFakeCore(t, nil)
		c := newTestCore(t, fastCore(srv.URL))
		ev := testEvent(t, bhiv.KindReward, "01BADEXT", 0)
		ev.Extensions = map[string]json.RawMessage{"Not A Name": json.RawMessage(`"x"`)}
		err := c.Deliver(context.Background(), ev)
		if se := sinkErr(t, err); se.Class != bhiv.ClassPermanent || !strings.Contains(err.Error(), "structured") {
			t.Errorf("error %v, want a permanent one pointing to structured mode", err)
		}
		if n := len(srv.requests()); n != 0 {
			t.Errorf("%d requests sent", n)
		}
	})

	t.Run("structured", func(t *testing.T) {
		srv := newFakeCore(t, nil)
		cfg := fastCore(srv.URL)
		cfg.Mode = CoreStructured
		c := newTestCore(t, cfg)
		ev := modeEvent(t, "01STRUCT")
		if err := c.Deliver(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		r := srv.requests()[0]
		env, _ := ev.JSON()
		if !bytes.Equal(r.body, env) {
			t.Errorf("body %s, want the envelope %s", r.body, env)
		}
		if got := r.header.Get("Content-Type"); got != "application/cloudevents+json; charset=UTF-8" {
			t.Errorf("Content-Type %q", got)
		}
		if got := r.header.Get("Idempotency-Key"); got != ev.ID {
			t.Errorf("Idempotency-Key %q", got)
		}
		for name := range r.header {
			if strings.HasPrefix(name, "Ce-") {
				t.Errorf("header %s in structured mode", name)
			}
		}
		if mode, got, err := corestub.Parse(r.header, r.body); err != nil || mode != corestub.ModeStructured || len(got) != 1 || got[0].ID != ev.ID {
			t.Errorf("the stub reads %s %v, %v", mode, got, err)
		}
	})

	for _, mode := range CoreModes {
		t.Run("batched/"+string(mode), func(t *testing.T) {
			srv := newFakeCore(t, nil)
			cfg := fastCore(srv.URL)
			cfg.Mode = mode
			cfg.BatchMax = 3
			cfg.BatchLinger = time.Minute // sent when full
			c := newTestCore(t, cfg)
			evs := map[string]*bhiv.Event{}
			var wg sync.WaitGroup
			for i := range 3 {
				ev := modeEvent(t, fmt.Sprintf("01BATCHED%d", i))
				evs[ev.ID] = ev
				wg.Go(func() {
					if err := c.Deliver(context.Background(), ev); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if got := r.header.Get("Content-Type"); got != "application/cloudevents-batch+json" {
				t.Errorf("Content-Type %q", got)
			}
			var elems []json.RawMessage
			if err := json.Unmarshal(r.body, &elems); err != nil || len(elems) != 3 {
				t.Fatalf("body %s: want a JSON array of 3 (%v)", r.body, err)
			}
			for _, raw := range elems {
				var id struct{ ID string }
				_ = json.Unmarshal(raw, &id)
				ev := evs[id.ID]
				if ev == nil {
					t.Fatalf("unknown event %s", raw)
				}
				if env, _ := ev.JSON(); !bytes.Equal(raw, env) {
					t.Errorf("element %s, want the envelope %s", raw, env)
				}
			}
			if m, got, err := corestub.Parse(r.header, r.body); err != nil || m != corestub.ModeBatched || len(got) != 3 {
				t.Errorf("the stub reads %s %d events, %v", m, len(got), err)
			}
		})
	}
}

// TestCoreModeReplay checks that a replayed failure record, which is no
// decoded event, follows the mode too.
func TestCoreModeReplay(t *testing.T) {
	ev := modeEvent(t, "01REPLAYMODE")
	env, _ := ev.JSON()
	var fresh bhiv.Event // as Replay builds it from a record: no encoding kept
	if err := json.Unmarshal(env, &fresh); err != nil {
		t.Fatal(err)
	}
	for _, mode := range CoreModes {
		srv := newFakeCore(t, nil)
		cfg := fastCore(srv.URL)
		cfg.Mode = mode
		c := newTestCore(t, cfg)
		if err := c.Deliver(context.Background(), &fresh); err != nil {
			t.Fatal(err)
		}
		r := srv.requests()[0]
		m, got, err := corestub.Parse(r.header, r.body)
		if err != nil || m != string(mode) || len(got) != 1 || got[0].ID != ev.ID {
			t.Errorf("%s: the stub reads %s %v, %v", mode, m, got, err)
		}
	}
}
