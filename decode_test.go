package bhiv_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/oklog/ulid/v2"
)

var jsTime = time.Date(2024, 5, 1, 10, 0, 0, 123, time.UTC)

func TestDecodeForms(t *testing.T) {
	envelope := `{"specversion":"1.0","id":"01HZX3J5Q2K8M9N0P1R2S3T4V5","source":"executor","type":"bhiv.execution",` +
		`"time":"2024-05-01T09:00:00Z","subject":"team_42","traceparent":"00-ab","data":{"team_id":"team_42","action":"analyze_data","extra":[1,2]}}`
	tests := []struct {
		name       string
		msg        bhiv.Message
		opts       bhiv.DecodeOptions
		wantID     string
		wantKind   bhiv.Kind
		wantSource string
		wantTeam   string
		wantTime   time.Time
		wantData   string
		wantExt    map[string]string
	}{
		{
			name:       "envelope",
			msg:        bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(envelope), Stream: "BHIV", Sequence: 3, Timestamp: jsTime},
			wantID:     "01HZX3J5Q2K8M9N0P1R2S3T4V5",
			wantKind:   bhiv.KindExecution,
			wantSource: "executor",
			wantTeam:   "team_42",
			wantTime:   time.Date(2024, 5, 1, 9, 0, 0, 0, time.UTC),
			wantData:   `{"team_id":"team_42","action":"analyze_data","extra":[1,2]}`,
			wantExt:    map[string]string{"traceparent": `"00-ab"`},
		},
		{
			name: "envelope without time and source takes the message's",
			msg: bhiv.Message{Subject: "bhiv.events.reward", Timestamp: jsTime,
				Data: []byte(`{"specversion":"1.0","id":"r1","type":"bhiv.reward","data":{"team_id":"t","reward":1}}`)},
			wantID: "r1", wantKind: bhiv.KindReward, wantSource: "nats:bhiv.events.reward", wantTeam: "t", wantTime: jsTime,
			wantData: `{"team_id":"t","reward":1}`,
		},
		{
			name: "bare with Nats-Msg-Id",
			msg: bhiv.Message{Subject: "bhiv.events.execution", Header: map[string][]string{"Nats-Msg-Id": {"exec-1"}},
				Data: []byte(`{"team_id":"team_42","action":"analyze_data"}`), Stream: "BHIV", Sequence: 9, Timestamp: jsTime},
			wantID: "exec-1", wantKind: bhiv.KindExecution, wantSource: "nats:bhiv.events.execution", wantTeam: "team_42",
			wantTime: jsTime, wantData: `{"team_id":"team_42","action":"analyze_data"}`,
		},
		{
			name: "bare, msg id header in another case",
			msg: bhiv.Message{Subject: "bhiv.events.execution", Header: map[string][]string{"nats-msg-id": {"exec-2"}},
				Data: []byte(`{"team_id":"t"}`), Stream: "BHIV", Sequence: 9, Timestamp: jsTime},
			wantID: "exec-2", wantKind: bhiv.KindExecution, wantSource: "nats:bhiv.events.execution", wantTeam: "t",
			wantTime: jsTime, wantData: `{"team_id":"t"}`,
		},
		{
			name: "bare without Nats-Msg-Id: stream-sequence id",
			msg: bhiv.Message{Subject: "bhiv.events.reward", Data: []byte(` {"team_id":"t9","reward":10,"reason":"fast"} `),
				Stream: "BHIV", Sequence: 42, Timestamp: jsTime},
			wantID: "BHIV-42", wantKind: bhiv.KindReward, wantSource: "nats:bhiv.events.reward", wantTeam: "t9",
			wantTime: jsTime, wantData: `{"team_id":"t9","reward":10,"reason":"fast"}`,
		},
		{
			name:   "bare under a custom prefix",
			msg:    bhiv.Message{Subject: "acme.ev.execution", Data: []byte(`{"team_id":"t"}`), Stream: "ACME", Sequence: 1, Timestamp: jsTime},
			opts:   bhiv.DecodeOptions{SubjectPrefix: "acme.ev"},
			wantID: "ACME-1", wantKind: bhiv.KindExecution, wantSource: "nats:acme.ev.execution", wantTeam: "t",
			wantTime: jsTime, wantData: `{"team_id":"t"}`,
		},
		{
			name: "binary mode",
			msg: bhiv.Message{Subject: "bhiv.events.execution", Header: map[string][]string{
				"ce-specversion": {"1.0"}, "ce-id": {"bin-1"}, "ce-type": {"bhiv.execution"}, "ce-source": {"executor"},
				"ce-time": {"2024-05-01T12:00:00+02:00"}, "Content-Type": {"application/json"}, "ce-traceparent": {"00-cd"},
				"Nats-Msg-Id": {"ignored-when-ce-id"}},
				Data: []byte(`{"team_id":"team_42","action":"a"}`), Stream: "BHIV", Sequence: 5, Timestamp: jsTime},
			wantID: "bin-1", wantKind: bhiv.KindExecution, wantSource: "executor", wantTeam: "team_42",
			wantTime: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), wantData: `{"team_id":"team_42","action":"a"}`,
			wantExt: map[string]string{"traceparent": `"00-cd"`},
		},
		{
			name: "binary mode, team from ce-subject",
			msg: bhiv.Message{Subject: "bhiv.events.reward", Header: map[string][]string{
				"Ce-Id": {"bin-2"}, "Ce-Type": {"bhiv.reward"}, "Ce-Subject": {"team_9"}},
				Data: []byte(`{"reward":2}`), Stream: "BHIV", Sequence: 6, Timestamp: jsTime},
			wantID: "bin-2", wantKind: bhiv.KindReward, wantSource: "nats:bhiv.events.reward", wantTeam: "team_9",
			wantTime: jsTime, wantData: `{"reward":2}`,
		},
		{
			name: "binary mode without ce-id: stream-sequence id",
			msg: bhiv.Message{Subject: "bhiv.events.reward", Header: map[string][]string{"ce-type": {"bhiv.reward"}},
				Data: []byte(`{"team_id":"t"}`), Stream: "BHIV", Sequence: 7, Timestamp: jsTime},
			wantID: "BHIV-7", wantKind: bhiv.KindReward, wantSource: "nats:bhiv.events.reward", wantTeam: "t",
			wantTime: jsTime, wantData: `{"team_id":"t"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := bhiv.Decode(tt.msg, tt.opts)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("decoded event does not validate: %v", err)
			}
			if ev.ID != tt.wantID || ev.Kind() != tt.wantKind || ev.Source != tt.wantSource || ev.TeamID() != tt.wantTeam ||
				ev.SpecVersion != "1.0" || !ev.Time.Equal(tt.wantTime) {
				t.Errorf("got id=%q kind=%q source=%q team=%q time=%v specversion=%q\nwant id=%q kind=%q source=%q team=%q time=%v",
					ev.ID, ev.Kind(), ev.Source, ev.TeamID(), ev.Time, ev.SpecVersion,
					tt.wantID, tt.wantKind, tt.wantSource, tt.wantTeam, tt.wantTime)
			}
			if !jsonEqual(t, ev.Data, []byte(tt.wantData)) {
				t.Errorf("data %s, want %s", ev.Data, tt.wantData)
			}
			if len(ev.Extensions) != len(tt.wantExt) {
				t.Errorf("extensions %v, want %v", ev.Extensions, tt.wantExt)
			}
			for k, v := range tt.wantExt {
				if string(ev.Extensions[k]) != v {
					t.Errorf("extension %s = %s, want %s", k, ev.Extensions[k], v)
				}
			}
			// The same message decoded again (a redelivery) gets the same id.
			again, err := bhiv.Decode(tt.msg, tt.opts)
			if err != nil || again.ID != ev.ID {
				t.Errorf("redelivery decoded to id %q (%v), want %q", again.ID, err, ev.ID)
			}
		})
	}
}

func TestDecodeBareWithoutSequenceGetsULID(t *testing.T) {
	ev, err := bhiv.Decode(bhiv.Message{Subject: "bhiv.events.execution", Data: []byte(`{"team_id":"t"}`)}, bhiv.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ulid.ParseStrict(ev.ID); err != nil {
		t.Errorf("id %q is not a ULID: %v", ev.ID, err)
	}
	if ev.Time.IsZero() || time.Since(ev.Time) > time.Minute {
		t.Errorf("time %v is not now", ev.Time)
	}
}

func TestDecodeErrors(t *testing.T) {
	const subj = "bhiv.events.execution"
	okData := `{"team_id":"t"}`
	env := func(fields string) string {
		return `{"specversion":"1.0","id":"a","source":"s","type":"bhiv.execution","time":"2024-01-01T00:00:00Z"` + fields + `}`
	}
	big := `{"team_id":"t","pad":"` + strings.Repeat("x", 2000) + `"}`
	tests := []struct {
		name   string
		msg    bhiv.Message
		opts   bhiv.DecodeOptions
		want   error
		detail string // a substring of the error message
	}{
		{"empty body", bhiv.Message{Subject: subj}, bhiv.DecodeOptions{}, bhiv.ErrNotJSON, "empty"},
		{"not JSON", bhiv.Message{Subject: subj, Data: []byte(`team_id=t`)}, bhiv.DecodeOptions{}, bhiv.ErrNotJSON, "not valid JSON"},
		{"truncated JSON", bhiv.Message{Subject: subj, Data: []byte(`{"team_id":"t"`)}, bhiv.DecodeOptions{}, bhiv.ErrNotJSON, ""},
		{"array", bhiv.Message{Subject: subj, Data: []byte(`[{"team_id":"t"}]`)}, bhiv.DecodeOptions{}, bhiv.ErrNotObject, "not an object"},
		{"string", bhiv.Message{Subject: subj, Data: []byte(`"hello"`)}, bhiv.DecodeOptions{}, bhiv.ErrNotObject, ""},
		{"null", bhiv.Message{Subject: subj, Data: []byte(`null`)}, bhiv.DecodeOptions{}, bhiv.ErrNotObject, ""},
		{"envelope data not an object", bhiv.Message{Subject: subj, Data: []byte(env(`,"data":[1]`))}, bhiv.DecodeOptions{}, bhiv.ErrNotObject, "data"},
		{"too large for the limit", bhiv.Message{Subject: subj, Data: []byte(big)}, bhiv.DecodeOptions{MaxBytes: 1024}, bhiv.ErrTooLarge, "limit 1024"},
		{"too large for the default limit", bhiv.Message{Subject: subj, Data: make([]byte, bhiv.DefaultMaxEventBytes+1)}, bhiv.DecodeOptions{}, bhiv.ErrTooLarge, "limit 1048576"},
		{"unknown subject", bhiv.Message{Subject: "other.execution", Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrUnknownSubject, "other.execution"},
		{"unknown kind in subject", bhiv.Message{Subject: "bhiv.events.deploy", Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrUnknownSubject, "deploy"},
		{"subject under another prefix", bhiv.Message{Subject: subj, Data: []byte(okData)}, bhiv.DecodeOptions{SubjectPrefix: "acme"}, bhiv.ErrUnknownSubject, ""},
		{"unknown kind in envelope", bhiv.Message{Subject: subj, Data: []byte(strings.Replace(env(`,"data":{"team_id":"t"}`), "bhiv.execution", "bhiv.deploy", 1))}, bhiv.DecodeOptions{}, bhiv.ErrUnknownKind, "bhiv.deploy"},
		{"envelope kind differs from subject", bhiv.Message{Subject: "bhiv.events.reward", Data: []byte(env(`,"data":{"team_id":"t"}`))}, bhiv.DecodeOptions{}, bhiv.ErrUnknownKind, "bhiv.events.reward"},
		{"unknown kind in ce-type", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-type": {"deploy"}}, Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrUnknownKind, "deploy"},
		{"invalid envelope id", bhiv.Message{Subject: subj, Data: []byte(strings.Replace(env(`,"data":{"team_id":"t"}`), `"id":"a"`, `"id":"../etc/passwd"`, 1))}, bhiv.DecodeOptions{}, bhiv.ErrInvalidID, "../etc/passwd"},
		{"missing envelope id", bhiv.Message{Subject: subj, Data: []byte(strings.Replace(env(`,"data":{"team_id":"t"}`), `"id":"a",`, ``, 1))}, bhiv.DecodeOptions{}, bhiv.ErrInvalidID, "missing"},
		{"invalid Nats-Msg-Id", bhiv.Message{Subject: subj, Header: map[string][]string{"Nats-Msg-Id": {"a b"}}, Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrInvalidID, `"a b"`},
		{"invalid ce-id", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-id": {"-x"}}, Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrInvalidID, ""},
		{"missing team, bare", bhiv.Message{Subject: subj, Data: []byte(`{"action":"a"}`), Stream: "BHIV", Sequence: 1}, bhiv.DecodeOptions{}, bhiv.ErrMissingTeam, "team_id"},
		{"missing team, envelope", bhiv.Message{Subject: subj, Data: []byte(env(`,"data":{"action":"a"}`))}, bhiv.DecodeOptions{}, bhiv.ErrMissingTeam, ""},
		{"missing team, envelope without data", bhiv.Message{Subject: subj, Data: []byte(env(``))}, bhiv.DecodeOptions{}, bhiv.ErrMissingTeam, "data is missing"},
		{"missing team, binary", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-id": {"x"}}, Data: []byte(`{}`)}, bhiv.DecodeOptions{}, bhiv.ErrMissingTeam, ""},
		{"binary body not JSON", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-id": {"x"}}, Data: []byte(`<xml/>`)}, bhiv.DecodeOptions{}, bhiv.ErrNotJSON, "binary"},
		{"binary body not an object", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-id": {"x"}}, Data: []byte(`1`)}, bhiv.DecodeOptions{}, bhiv.ErrNotObject, "binary"},
		{"binary bad ce-time", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-id": {"x"}, "ce-time": {"now"}}, Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrInvalidEnvelope, "ce-time"},
		{"binary bad specversion", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-specversion": {"0.3"}}, Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrInvalidEnvelope, "0.3"},
		{"binary content type not JSON", bhiv.Message{Subject: subj, Header: map[string][]string{"ce-id": {"x"}, "Content-Type": {"text/plain"}}, Data: []byte(okData)}, bhiv.DecodeOptions{}, bhiv.ErrInvalidEnvelope, "text/plain"},
		{"envelope bad specversion", bhiv.Message{Subject: subj, Data: []byte(strings.Replace(env(`,"data":{"team_id":"t"}`), `"1.0"`, `"0.3"`, 1))}, bhiv.DecodeOptions{}, bhiv.ErrInvalidEnvelope, "0.3"},
		{"envelope attribute not a string", bhiv.Message{Subject: subj, Data: []byte(`{"specversion":"1.0","id":7,"data":{"team_id":"t"}}`)}, bhiv.DecodeOptions{}, bhiv.ErrInvalidEnvelope, "id"},
		{"envelope bad time", bhiv.Message{Subject: subj, Data: []byte(strings.Replace(env(`,"data":{"team_id":"t"}`), `2024-01-01T00:00:00Z`, `yesterday`, 1))}, bhiv.DecodeOptions{}, bhiv.ErrInvalidEnvelope, "RFC 3339"},
		{"subject differs from team", bhiv.Message{Subject: subj, Data: []byte(env(`,"subject":"x","data":{"team_id":"t"}`))}, bhiv.DecodeOptions{}, bhiv.ErrInvalidData, "differs"},
		{"duration not a number", bhiv.Message{Subject: subj, Data: []byte(`{"team_id":"t","duration_ms":"1s"}`), Sequence: 1}, bhiv.DecodeOptions{}, bhiv.ErrInvalidData, "duration_ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := bhiv.Decode(tt.msg, tt.opts)
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", ev)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var de *bhiv.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err %T is not a *bhiv.DecodeError", err)
			}
			if de.Reason != tt.want {
				t.Errorf("Reason = %v, want %v", de.Reason, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "invalid event: "+tt.want.Error()) || !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("message %q: want %q and %q", err, tt.want, tt.detail)
			}
		})
	}
}

func TestDecodeLimitIsInclusive(t *testing.T) {
	data := []byte(`{"team_id":"t","pad":"xxxxxxxx"}`)
	msg := bhiv.Message{Subject: "bhiv.events.execution", Data: data, Sequence: 1}
	if _, err := bhiv.Decode(msg, bhiv.DecodeOptions{MaxBytes: len(data)}); err != nil {
		t.Errorf("exactly at the limit: %v", err)
	}
	if _, err := bhiv.Decode(msg, bhiv.DecodeOptions{MaxBytes: len(data) - 1}); !errors.Is(err, bhiv.ErrTooLarge) {
		t.Errorf("one byte over the limit: %v", err)
	}
}

func TestDerivedID(t *testing.T) {
	tests := []struct {
		stream string
		seq    uint64
		want   string
	}{
		{"BHIV", 42, "BHIV-42"},
		{"BHIV_TEST", 1, "BHIV_TEST-1"},
		{"", 7, "nats-7"},
		{"_x", 1, "xx-1"},
		{"a b/c", 2, "axbxc-2"},
		{"BHIV", 0, ""},
		{strings.Repeat("s", 200), 18446744073709551615, "x" + strings.Repeat("s", 106) + "-18446744073709551615"},
	}
	for _, tt := range tests {
		got := bhiv.DerivedID(tt.stream, tt.seq)
		if got != tt.want {
			t.Errorf("DerivedID(%q, %d) = %q, want %q", tt.stream, tt.seq, got, tt.want)
		}
		if got != "" && !bhiv.ValidID(got) {
			t.Errorf("DerivedID(%q, %d) = %q is not a valid id", tt.stream, tt.seq, got)
		}
	}
}

func TestDecodeEnvelopeReencodes(t *testing.T) {
	in := `{"specversion":"1.0","id":"e1","source":"executor","type":"bhiv.reward","time":"2024-05-01T09:00:00Z",` +
		`"ext1":{"a":[1,2,{"b":null}]},"data":{"team_id":"t","reward":1e3,"x":"\u00e9\n","deep":{"n":12345678901234567890}}}`
	ev, err := bhiv.Decode(bhiv.Message{Subject: "bhiv.events.reward", Data: []byte(in)}, bhiv.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	// Data and extensions are passed through as written, not re-encoded.
	for _, k := range []string{"data", "ext1"} {
		if string(got[k]) != string(want[k]) {
			t.Errorf("%s: got %s, want %s", k, got[k], want[k])
		}
	}
}

// TestDecodeEncodesOnce checks that a decoded event carries its encoding:
// JSON returns MarshalJSON's bytes, the same slice every time (the sinks and
// the failure log share it), while an event built by hand is encoded anew.
func TestDecodeEncodesOnce(t *testing.T) {
	ev, err := bhiv.Decode(bhiv.Message{Subject: "bhiv.events.reward", Stream: "BHIV", Sequence: 9, Timestamp: jsTime,
		Data: []byte(`{"team_id":"t1", "execution_id":"x", "reward": 1.5}`)}, bhiv.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ev.JSON()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ev.JSON()
	want, _ := ev.MarshalJSON()
	if string(a) != string(want) {
		t.Errorf("JSON() = %s, want %s", a, want)
	}
	if &a[0] != &b[0] {
		t.Error("JSON() of a decoded event encodes again; want the bytes made at decode")
	}
	hand := bhiv.Event{SpecVersion: ev.SpecVersion, ID: "hand", Source: "s", Type: ev.Type, Time: ev.Time, Subject: "t1", Data: ev.Data}
	c, _ := hand.JSON()
	if !strings.Contains(string(c), `"id":"hand"`) {
		t.Errorf("JSON() of a built event = %s, want its own encoding", c)
	}
}

// TestDecodeCloudEventsModes checks the NATS binding's two content modes as
// publishers send them: binary with the datacontenttype in
// ce-datacontenttype (the NATS binding, the CloudEvents SDKs) and
// structured told apart by its Content-Type.
func TestDecodeCloudEventsModes(t *testing.T) {
	const subj = "bhiv.events.execution"
	data := `{"team_id":"t","action":"a"}`
	env := `{"specversion":"1.0","id":"s-1","source":"sdk","type":"bhiv.execution","time":"2024-05-01T09:00:00Z","data":` + data + `}`
	bin := func(extra map[string][]string) map[string][]string {
		h := map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"b-1"}, "ce-source": {"sdk"}, "ce-type": {"bhiv.execution"}}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	ok := []struct {
		name     string
		header   map[string][]string
		body     string
		wantID   string
		wantType string // datacontenttype
	}{
		{"binary, ce-datacontenttype", bin(map[string][]string{"ce-datacontenttype": {"application/json; charset=utf-8"}}), data, "b-1", "application/json; charset=utf-8"},
		{"binary, ce-datacontenttype wins over content-type", bin(map[string][]string{"ce-datacontenttype": {"application/json"}, "content-type": {"text/plain"}}), data, "b-1", "application/json"},
		{"binary, content-type", bin(map[string][]string{"Content-Type": {"application/vnd.acme+json"}}), data, "b-1", "application/vnd.acme+json"},
		{"binary, no type", bin(nil), data, "b-1", "application/json"},
		{"structured with ce- headers too", bin(map[string][]string{"content-type": {"application/cloudevents+json; charset=UTF-8"}}), env, "s-1", ""},
		{"structured, no headers", nil, env, "s-1", ""},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := bhiv.Decode(bhiv.Message{Subject: subj, Header: tt.header, Data: []byte(tt.body)}, bhiv.DecodeOptions{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if ev.ID != tt.wantID || ev.DataContentType != tt.wantType || !jsonEqual(t, ev.Data, []byte(data)) {
				t.Errorf("got id %q datacontenttype %q data %s; want %q %q %s", ev.ID, ev.DataContentType, ev.Data, tt.wantID, tt.wantType, data)
			}
		})
	}
	bad := []struct {
		name   string
		header map[string][]string
		body   string
		want   error
		detail string
	}{
		{"binary, ce-datacontenttype not JSON", bin(map[string][]string{"ce-datacontenttype": {"text/plain"}}), data, bhiv.ErrInvalidEnvelope, "ce-datacontenttype"},
		{"structured without specversion", map[string][]string{"Content-Type": {"application/cloudevents+json"}}, data, bhiv.ErrInvalidEnvelope, "specversion"},
		{"structured, another format", map[string][]string{"Content-Type": {"application/cloudevents+avro"}}, env, bhiv.ErrInvalidEnvelope, "JSON event format"},
		{"batch", map[string][]string{"Content-Type": {"application/cloudevents-batch+json"}}, "[" + env + "]", bhiv.ErrNotObject, "one message per event"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bhiv.Decode(bhiv.Message{Subject: subj, Header: tt.header, Data: []byte(tt.body)}, bhiv.DecodeOptions{})
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.detail) {
				t.Errorf("err %v, want %v saying %q", err, tt.want, tt.detail)
			}
		})
	}
}
