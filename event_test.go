package bhiv_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/oklog/ulid/v2"
)

// jsonEqual reports whether a and b hold the same JSON value (numbers
// compared as written).
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	return reflect.DeepEqual(decodeAny(t, a), decodeAny(t, b))
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantExt map[string]string // extension name → JSON value
	}{
		{
			name: "execution with extra data fields",
			in: `{"specversion":"1.0","id":"01HZX","source":"executor","type":"bhiv.execution",
				"time":"2024-05-01T10:00:00.123456789Z","subject":"team_42","datacontenttype":"application/json",
				"data":{"team_id":"team_42","action":"analyze_data","status":"ok","output":{"rows":[1,2,3]},
				"duration_ms":1234,"gpu":"a100","huge":123456789012345678901234567890,"nested":{"x":[true,null,"é"]}}}`,
		},
		{
			name: "reward with extensions",
			in: `{"specversion":"1.0","id":"r-1","source":"reward-svc","type":"bhiv.reward","time":"2024-05-01T12:00:00+02:00",
				"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","priority":5,"tags":["a","b"],
				"data":{"team_id":"t1","execution_id":"01HZX","reward":10.5,"reason":"fast","bonus":{"k":1.50}}}`,
			wantExt: map[string]string{
				"traceparent": `"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"`,
				"priority":    `5`,
				"tags":        `["a","b"]`,
			},
		},
		{
			name: "subject only, no data team",
			in:   `{"specversion":"1.0","id":"x","source":"s","type":"bhiv.execution","time":"2024-01-01T00:00:00Z","subject":"team_7","data":{"action":"a"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev bhiv.Event
			if err := json.Unmarshal([]byte(tt.in), &ev); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if err := ev.Validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			if ev.Time.Location() != time.UTC {
				t.Errorf("time %v is not UTC", ev.Time)
			}
			for name, want := range tt.wantExt {
				if got, ok := ev.Extensions[name]; !ok || !jsonEqual(t, got, []byte(want)) {
					t.Errorf("extension %s = %s, want %s", name, got, want)
				}
			}
			if len(ev.Extensions) != len(tt.wantExt) {
				t.Errorf("extensions %v, want %d", ev.Extensions, len(tt.wantExt))
			}
			out, err := json.Marshal(ev)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			// The output holds the same JSON as the input, but for time
			// (normalised to UTC) and subject (filled in from data).
			in := decodeAny(t, []byte(tt.in)).(map[string]any)
			got := decodeAny(t, out).(map[string]any)
			if !reflect.DeepEqual(in["data"], got["data"]) {
				t.Errorf("data changed:\n in  %v\n out %v", in["data"], got["data"])
			}
			for k, v := range in {
				if k == "time" || k == "data" {
					continue
				}
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("attribute %s = %v, want %v", k, got[k], v)
				}
			}
			if got["subject"] != ev.Subject || ev.Subject == "" {
				t.Errorf("subject %v, want %q", got["subject"], ev.Subject)
			}
			if got["time"] != ev.Time.Format(time.RFC3339Nano) || !strings.HasSuffix(got["time"].(string), "Z") {
				t.Errorf("time %v, want UTC RFC 3339", got["time"])
			}
			// A second round trip is byte-for-byte stable.
			var ev2 bhiv.Event
			if err := json.Unmarshal(out, &ev2); err != nil {
				t.Fatal(err)
			}
			out2, err := json.Marshal(ev2)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, out2) {
				t.Errorf("second round trip differs:\n%s\n%s", out, out2)
			}
		})
	}
}

func TestMarshalJSONLayout(t *testing.T) {
	ev := bhiv.Event{
		SpecVersion: "1.0", ID: "id-1", Source: "executor", Type: "bhiv.execution",
		Time:            time.Date(2024, 5, 1, 12, 0, 0, 5, time.FixedZone("CEST", 2*3600)),
		Subject:         "team_42",
		DataContentType: "application/json",
		Data:            json.RawMessage("{ \"team_id\" : \"team_42\",\n \"action\":\"a\" }"),
		Extensions: map[string]json.RawMessage{
			"zeta": json.RawMessage(`1`), "alpha": json.RawMessage(`"a"`),
			"id": json.RawMessage(`"must not override"`),
		},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"specversion":"1.0","id":"id-1","source":"executor","type":"bhiv.execution","time":"2024-05-01T10:00:00.000000005Z",` +
		`"subject":"team_42","datacontenttype":"application/json","alpha":"a","zeta":1,"data":{"team_id":"team_42","action":"a"}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestUnmarshalJSONErrors(t *testing.T) {
	for _, in := range []string{
		`[]`, `{"id":1}`, `{"time":"yesterday"}`, `{"time":"9999-12-31T23:00:00-02:00"}`, `{"source":{}}`,
	} {
		var ev bhiv.Event
		if err := json.Unmarshal([]byte(in), &ev); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

func TestNewID(t *testing.T) {
	const n = 2000
	ids := make([]string, n)
	seen := make(map[string]bool, n)
	for i := range ids {
		ids[i] = bhiv.NewID()
		if _, err := ulid.ParseStrict(ids[i]); err != nil {
			t.Fatalf("%q is not a ULID: %v", ids[i], err)
		}
		if !bhiv.ValidID(ids[i]) {
			t.Fatalf("%q is not a valid id", ids[i])
		}
		if seen[ids[i]] {
			t.Fatalf("duplicate id %q", ids[i])
		}
		seen[ids[i]] = true
	}
	if !sort.StringsAreSorted(ids) {
		t.Error("ids are not sorted in creation order")
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"01HZX3J5Q2K8M9N0P1R2S3T4V5", true},
		{"team_42:exec.7-b", true},
		{"9", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"_a", false},
		{".a", false},
		{"-a", false},
		{"a/b", false},
		{"a b", false},
		{"../etc", false},
		{"a\n", false},
		{"é", false},
		{"a*", false},
	}
	for _, tt := range tests {
		if got := bhiv.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
		err := bhiv.CheckID(tt.id)
		if tt.want != (err == nil) {
			t.Errorf("CheckID(%q) = %v", tt.id, err)
		}
		if err != nil && !errors.Is(err, bhiv.ErrInvalidID) {
			t.Errorf("CheckID(%q) = %v, not ErrInvalidID", tt.id, err)
		}
	}
}

func TestNew(t *testing.T) {
	t.Run("new ULID when no id", func(t *testing.T) {
		before := time.Now()
		ev, err := bhiv.New(bhiv.KindExecution, "executor", "", bhiv.Execution{TeamID: "team_42", Action: "analyze_data"})
		if err != nil {
			t.Fatal(err)
		}
		u, err := ulid.ParseStrict(ev.ID)
		if err != nil {
			t.Fatalf("id %q is not a ULID: %v", ev.ID, err)
		}
		if d := ulid.Time(u.Time()).Sub(before.Truncate(time.Millisecond)); d < 0 || d > time.Minute {
			t.Errorf("ULID time off by %v", d)
		}
		if ev.SpecVersion != "1.0" || ev.Type != "bhiv.execution" || ev.Source != "executor" || ev.Subject != "team_42" ||
			ev.DataContentType != "application/json" || ev.Time.Location() != time.UTC || ev.Time.Before(before.Add(-time.Second)) {
			t.Errorf("envelope %+v", ev)
		}
		if ev.Kind() != bhiv.KindExecution || ev.TeamID() != "team_42" {
			t.Errorf("kind %q team %q", ev.Kind(), ev.TeamID())
		}
	})
	t.Run("given id kept", func(t *testing.T) {
		ev, err := bhiv.New(bhiv.KindReward, "rewards", "exec-7:reward", bhiv.Reward{TeamID: "t", Reward: 3})
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID != "exec-7:reward" || ev.Type != "bhiv.reward" {
			t.Errorf("id %q type %q", ev.ID, ev.Type)
		}
	})
	errs := []struct {
		name   string
		kind   bhiv.Kind
		source string
		id     string
		data   any
		want   error
	}{
		{"unknown kind", "deploy", "s", "", map[string]any{"team_id": "t"}, bhiv.ErrUnknownKind},
		{"invalid id", bhiv.KindExecution, "s", "a/b", map[string]any{"team_id": "t"}, bhiv.ErrInvalidID},
		{"missing team", bhiv.KindExecution, "s", "", map[string]any{"action": "a"}, bhiv.ErrMissingTeam},
		{"missing source", bhiv.KindExecution, "", "", map[string]any{"team_id": "t"}, bhiv.ErrInvalidEnvelope},
		{"data not object", bhiv.KindReward, "s", "", []int{1}, bhiv.ErrNotObject},
		{"raw data not JSON", bhiv.KindReward, "s", "", json.RawMessage(`{"team_id":`), bhiv.ErrNotJSON},
		{"reward not a number", bhiv.KindReward, "s", "", map[string]any{"team_id": "t", "reward": "ten"}, bhiv.ErrInvalidData},
		{"team not a string", bhiv.KindExecution, "s", "", map[string]any{"team_id": 42}, bhiv.ErrInvalidData},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bhiv.New(tt.kind, tt.source, tt.id, tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var de *bhiv.DecodeError
			if !errors.As(err, &de) || de.Detail == "" {
				t.Errorf("err %v is not a *DecodeError with detail", err)
			}
		})
	}
}

func TestTypedDataExtra(t *testing.T) {
	in := `{"team_id":"t","action":"a","status":"ok","duration_ms":9007199254740993,"output":"x",` +
		`"gpu":"a100","big":123456789012345678901234567890,"obj":{"k":[1,2]}}`
	ev, err := bhiv.New(bhiv.KindExecution, "s", "", json.RawMessage(in))
	if err != nil {
		t.Fatal(err)
	}
	x, err := ev.Execution()
	if err != nil {
		t.Fatal(err)
	}
	if x.TeamID != "t" || x.DurationMS != 9007199254740993 || x.Extra["gpu"] != "a100" {
		t.Errorf("execution %+v", x)
	}
	if _, err := ev.Reward(); err == nil {
		t.Error("Reward() of an execution: no error")
	}
	out, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, out, []byte(in)) {
		t.Errorf("typed round trip lost data:\n in  %s\n out %s", in, out)
	}

	r := bhiv.Reward{TeamID: "t", ExecutionID: "e", Reward: 1.5, Reason: "r", Extra: map[string]any{"reward": 99, "level": 3}}
	ev, err = bhiv.New(bhiv.KindReward, "s", "", r)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, ev.Data, []byte(`{"team_id":"t","execution_id":"e","reward":1.5,"reason":"r","level":3}`)) {
		t.Errorf("reward data %s (a known field must win over Extra)", ev.Data)
	}
	got, err := ev.Reward()
	if err != nil || got.Reward != 1.5 || got.Extra["level"] != json.Number("3") {
		t.Errorf("reward %+v, %v", got, err)
	}
}

func TestValidate(t *testing.T) {
	base := func() bhiv.Event {
		return bhiv.Event{SpecVersion: "1.0", ID: "a", Source: "s", Type: "bhiv.execution",
			Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Data: json.RawMessage(`{"team_id":"t"}`)}
	}
	tests := []struct {
		name   string
		modify func(*bhiv.Event)
		want   error
	}{
		{"valid", func(*bhiv.Event) {}, nil},
		{"json+charset content type", func(e *bhiv.Event) { e.DataContentType = "application/json; charset=utf-8" }, nil},
		{"specversion", func(e *bhiv.Event) { e.SpecVersion = "0.3" }, bhiv.ErrInvalidEnvelope},
		{"no id", func(e *bhiv.Event) { e.ID = "" }, bhiv.ErrInvalidID},
		{"bad id", func(e *bhiv.Event) { e.ID = "a b" }, bhiv.ErrInvalidID},
		{"unknown type", func(e *bhiv.Event) { e.Type = "bhiv.deploy" }, bhiv.ErrUnknownKind},
		{"foreign type", func(e *bhiv.Event) { e.Type = "com.example.execution" }, bhiv.ErrUnknownKind},
		{"no source", func(e *bhiv.Event) { e.Source = "" }, bhiv.ErrInvalidEnvelope},
		{"no time", func(e *bhiv.Event) { e.Time = time.Time{} }, bhiv.ErrInvalidEnvelope},
		{"time past 9999", func(e *bhiv.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, bhiv.ErrInvalidEnvelope},
		{"xml", func(e *bhiv.Event) { e.DataContentType = "application/xml" }, bhiv.ErrInvalidEnvelope},
		{"data_base64", func(e *bhiv.Event) {
			e.Extensions = map[string]json.RawMessage{"data_base64": json.RawMessage(`"e30="`)}
		}, bhiv.ErrInvalidEnvelope},
		{"no data", func(e *bhiv.Event) { e.Data = nil }, bhiv.ErrMissingTeam},
		{"no team", func(e *bhiv.Event) { e.Data = json.RawMessage(`{"action":"a"}`) }, bhiv.ErrMissingTeam},
		{"null team", func(e *bhiv.Event) { e.Data = json.RawMessage(`{"team_id":null}`) }, bhiv.ErrMissingTeam},
		{"subject differs", func(e *bhiv.Event) { e.Subject = "other" }, bhiv.ErrInvalidData},
		{"data array", func(e *bhiv.Event) { e.Data = json.RawMessage(`[1]`) }, bhiv.ErrNotObject},
		{"duration string", func(e *bhiv.Event) { e.Data = json.RawMessage(`{"team_id":"t","duration_ms":"5"}`) }, bhiv.ErrInvalidData},
		{"status number", func(e *bhiv.Event) { e.Data = json.RawMessage(`{"team_id":"t","status":1}`) }, bhiv.ErrInvalidData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base()
			tt.modify(&e)
			err := e.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if e.Subject != "t" {
					t.Errorf("subject %q not filled from data.team_id", e.Subject)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	for _, k := range bhiv.Kinds {
		got, err := bhiv.KindFromType(k.Type())
		if err != nil || got != k {
			t.Errorf("KindFromType(%q) = %q, %v", k.Type(), got, err)
		}
		if got, err := bhiv.ParseKind(string(k)); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
	for _, s := range []string{"", "Execution", "bhiv.execution", "deploy"} {
		if _, err := bhiv.ParseKind(s); !errors.Is(err, bhiv.ErrUnknownKind) {
			t.Errorf("ParseKind(%q) = %v", s, err)
		}
	}
}
