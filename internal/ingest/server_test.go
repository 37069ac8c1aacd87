package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hackaverse/bhiv"
)

// envelope returns a structured CloudEvent of the kind, with the id, team
// and data fields given as JSON members (without braces).
func envelope(id string, kind bhiv.Kind, team, data string) string {
	if data != "" {
		data = "," + data
	}
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"executor","type":%q,"time":"2026-11-28T10:00:00Z","data":{"team_id":%q%s}}`,
		id, kind.Type(), team, data)
}

// wantEvent is what one stored event must be, as the consumer decodes it.
type wantEvent struct {
	id     string // "" : any new ULID
	kind   bhiv.Kind
	source string
	team   string
	data   string            // the data object, compared compacted; "" : not checked
	ext    map[string]string // extension attributes, as strings
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("compact %q: %v", s, err)
	}
	return b.String()
}

// TestForms posts every form the issue names to both paths and checks that
// each is answered 202 with its ids only once stored, and that what is in
// the stream is the event the consumer decodes: right subject, id, source,
// team, data and extensions.
func TestForms(t *testing.T) {
	f := newFixture(t, Config{})
	const ts = "2026-11-28T10:00:00Z"
	execData := `{"team_id":"team_42","action":"analyze_data","status":"ok","output":"…","duration_ms":1200,"extra":{"k":[1,2]}}`
	tests := []struct {
		name, path, body string
		headers          []string
		want             []wantEvent
	}{
		{"bare object, as send_to_core posted it", "/events/execution", execData,
			[]string{"Content-Type: application/json"},
			[]wantEvent{{kind: bhiv.KindExecution, source: DefaultSource, team: "team_42", data: execData}}},
		{"bare object without Content-Type", "/events/reward", `{"team_id":"t1","reward":10,"reason":"ok"}`, nil,
			[]wantEvent{{kind: bhiv.KindReward, source: DefaultSource, team: "t1", data: `{"team_id":"t1","reward":10,"reason":"ok"}`}}},
		{"bare object with Idempotency-Key", "/events/execution", `{"team_id":"t1","action":"a"}`,
			[]string{"Content-Type: application/json", "Idempotency-Key: exec-1"},
			[]wantEvent{{id: "exec-1", kind: bhiv.KindExecution, source: DefaultSource, team: "t1"}}},
		{"quoted Idempotency-Key", "/events/execution", `{"team_id":"t1","action":"a"}`,
			[]string{"Content-Type: application/json", `Idempotency-Key: "exec-2"`},
			[]wantEvent{{id: "exec-2", kind: bhiv.KindExecution, source: DefaultSource, team: "t1"}}},
		{"old Core path: a numeric reward makes a reward", "/bhiv/core", `{"team_id":"t2","execution_id":"e1","reward":-2.5,"reason":"slow"}`,
			[]string{"Content-Type: application/json"},
			[]wantEvent{{kind: bhiv.KindReward, source: DefaultSource, team: "t2"}}},
		{"old Core path: no numeric reward makes an execution", "/bhiv/core", `{"team_id":"t3","action":"a","reward":"n/a"}`,
			[]string{"Content-Type: application/json"},
			[]wantEvent{{kind: bhiv.KindExecution, source: DefaultSource, team: "t3"}}},
		{"envelope as application/json, as the consumer takes it", "/events/execution", envelope("env-1", bhiv.KindExecution, "t4", `"action":"a"`),
			[]string{"Content-Type: application/json"},
			[]wantEvent{{id: "env-1", kind: bhiv.KindExecution, source: "executor", team: "t4"}}},
		{"structured", "/events/reward", strings.Replace(envelope("st-1", bhiv.KindReward, "t5", `"reward":3`), `"specversion"`, `"traceid":"abc","specversion"`, 1),
			[]string{"Content-Type: application/cloudevents+json; charset=UTF-8", "Idempotency-Key: st-1"},
			[]wantEvent{{id: "st-1", kind: bhiv.KindReward, source: "executor", team: "t5", data: `{"team_id":"t5","reward":3}`, ext: map[string]string{"traceid": "abc"}}}},
		{"structured on the old Core path: kind from type", "/bhiv/core", envelope("st-2", bhiv.KindExecution, "t6", `"action":"a","reward":1`),
			[]string{"Content-Type: application/cloudevents+json"},
			[]wantEvent{{id: "st-2", kind: bhiv.KindExecution, source: "executor", team: "t6"}}},
		{"binary, percent-encoded values", "/events/execution", `{"action":"x","duration_ms":5}`,
			[]string{"Content-Type: application/json; charset=utf-8", "ce-specversion: 1.0", "ce-id: bin-1", "ce-type: bhiv.execution",
				"ce-source: my%20service%2Fv1", "ce-time: " + ts, "ce-subject: team_9", "Ce-MyExt: caf%C3%A9%20%e2%82%ac"},
			[]wantEvent{{id: "bin-1", kind: bhiv.KindExecution, source: "my service/v1", team: "team_9", data: `{"action":"x","duration_ms":5}`,
				ext: map[string]string{"myext": "café €"}}}},
		{"binary, double-quoted value (older spec)", "/events/execution", `{"team_id":"t7","action":"x"}`,
			[]string{"Content-Type: application/json", "ce-specversion: 1.0", "ce-id: bin-2", "ce-type: bhiv.execution",
				`ce-source: "quoted \"src\" 100%25"`},
			[]wantEvent{{id: "bin-2", kind: bhiv.KindExecution, source: `quoted "src" 100%`, team: "t7"}}},
		{"binary without ce-id takes the Idempotency-Key", "/events/execution", `{"team_id":"t8","action":"x"}`,
			[]string{"Content-Type: application/json", "ce-specversion: 1.0", "ce-type: bhiv.execution", "Idempotency-Key: bin-3"},
			[]wantEvent{{id: "bin-3", kind: bhiv.KindExecution, source: DefaultSource, team: "t8"}}},
		{"binary without ce-specversion, as the README's nats pub example", "/events/execution", `{"team_id":"t8","action":"x"}`,
			[]string{"ce-id: bin-5", "ce-type: bhiv.execution"},
			[]wantEvent{{id: "bin-5", kind: bhiv.KindExecution, source: DefaultSource, team: "t8"}}},
		{"binary on the old Core path: kind from ce-type", "/bhiv/core", `{"team_id":"t9","reward":1}`,
			[]string{"Content-Type: application/json", "ce-specversion: 1.0", "ce-id: bin-4", "ce-type: bhiv.reward", "ce-source: rewarder"},
			[]wantEvent{{id: "bin-4", kind: bhiv.KindReward, source: "rewarder", team: "t9"}}},
		{"batch on the old Core path: kinds from types", "/bhiv/core",
			"[" + envelope("b-1", bhiv.KindExecution, "t10", `"action":"a"`) + ",\n " + envelope("b-2", bhiv.KindReward, "t10", `"reward":7`) + "]",
			[]string{"Content-Type: application/cloudevents-batch+json; charset=UTF-8"},
			[]wantEvent{{id: "b-1", kind: bhiv.KindExecution, source: "executor", team: "t10"}, {id: "b-2", kind: bhiv.KindReward, source: "executor", team: "t10"}}},
		{"batch", "/events/execution",
			"[" + envelope("b-3", bhiv.KindExecution, "t11", `"action":"a"`) + "," + envelope("b-4", bhiv.KindExecution, "t12", `"action":"b"`) + "]",
			[]string{"Content-Type: application/cloudevents-batch+json"},
			[]wantEvent{{id: "b-3", kind: bhiv.KindExecution, team: "t11"}, {id: "b-4", kind: bhiv.KindExecution, team: "t12"}}},
		{"empty batch", "/events/reward", `[]`, []string{"Content-Type: application/cloudevents-batch+json"}, nil},
	}
	total := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.post(tt.path, tt.body, tt.headers...)
			if r.status != http.StatusAccepted {
				t.Fatalf("status %d, want 202: %s", r.status, r.raw)
			}
			if len(r.IDs) != len(tt.want) || len(r.Duplicates) != 0 || len(r.NotStored) != 0 || r.Error != "" {
				t.Fatalf("answer %s, want %d ids and nothing else", r.raw, len(tt.want))
			}
			total += len(tt.want)
			stored := f.stored()
			for i, w := range tt.want {
				id := r.IDs[i]
				if w.id != "" && id != w.id {
					t.Errorf("id %q, want %q", id, w.id)
				}
				ev, ok := stored[id]
				if !ok {
					t.Fatalf("answered id %s is not in the stream", id)
				}
				if ev.subject != bhiv.Subject("", w.kind) || ev.Kind() != w.kind {
					t.Errorf("%s: subject %s type %s, want kind %s", id, ev.subject, ev.Type, w.kind)
				}
				if w.source != "" && ev.Source != w.source {
					t.Errorf("%s: source %q, want %q", id, ev.Source, w.source)
				}
				if ev.TeamID() != w.team {
					t.Errorf("%s: team %q, want %q", id, ev.TeamID(), w.team)
				}
				if w.data != "" && string(ev.Data) != compact(t, w.data) {
					t.Errorf("%s: data %s, want %s", id, ev.Data, compact(t, w.data))
				}
				for k, v := range w.ext {
					var got string
					if err := json.Unmarshal(ev.Extensions[k], &got); err != nil || got != v {
						t.Errorf("%s: extension %s = %s, want %q", id, k, ev.Extensions[k], v)
					}
				}
				if ev.Time.IsZero() {
					t.Errorf("%s: no time", id)
				}
			}
		})
	}
	if got := f.count(); got != uint64(total) {
		t.Errorf("the stream holds %d messages, %d were answered stored", got, total)
	}
	if got := f.metric("bhiv_ingest_events_total", map[string]string{"outcome": outcomeStored}); got != float64(total) {
		t.Errorf("bhiv_ingest_events_total{outcome=stored} = %v, want %d", got, total)
	}
}

// TestRefused sends every kind of bad request and checks its answer — the
// status, a stable reason, a message — and that nothing at all was stored.
func TestRefused(t *testing.T) {
	f := newFixture(t, Config{MaxBodyBytes: 4096, MaxEventBytes: 1024})
	okExec := envelope("ok-1", bhiv.KindExecution, "t1", `"action":"a"`)
	binary := []string{"Content-Type: application/json", "ce-specversion: 1.0", "ce-type: bhiv.execution", "ce-id: bin-1"}
	big := func(n int) string { return `{"team_id":"t1","action":"a","pad":"` + strings.Repeat("x", n) + `"}` }
	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		reason                   string
		invalid                  []int // batch: the indexes listed as invalid
	}{
		{"not JSON", "POST", "/events/execution", `{"team_id":`, []string{"Content-Type: application/json"}, 400, "not json", nil},
		{"empty body", "POST", "/bhiv/core", ``, nil, 400, "not json", nil},
		{"JSON but not an object", "POST", "/events/execution", `[1,2]`, []string{"Content-Type: application/json"}, 400, "not a json object", nil},
		{"no team", "POST", "/events/execution", `{"action":"a"}`, nil, 400, "missing team id", nil},
		{"reward not a number", "POST", "/events/reward", `{"team_id":"t1","reward":"ten"}`, nil, 400, "invalid data", nil},
		{"structured event of the other kind", "POST", "/events/execution", envelope("x-1", bhiv.KindReward, "t1", `"reward":1`),
			[]string{"Content-Type: application/cloudevents+json"}, 400, "unknown kind", nil},
		{"structured without specversion", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			[]string{"Content-Type: application/cloudevents+json"}, 400, "invalid envelope", nil},
		{"unknown type on the old Core path", "POST", "/bhiv/core", strings.Replace(okExec, "bhiv.execution", "com.example.x", 1),
			[]string{"Content-Type: application/cloudevents+json"}, 400, "unknown kind", nil},
		{"invalid event id", "POST", "/events/execution", strings.Replace(okExec, "ok-1", "bad id!", 1),
			[]string{"Content-Type: application/cloudevents+json"}, 400, "invalid id", nil},
		{"invalid Idempotency-Key", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			[]string{"Idempotency-Key: not a valid id"}, 400, "invalid id", nil},
		{"Idempotency-Key given twice", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			[]string{"Idempotency-Key: k1", "Idempotency-Key: k2"}, 400, "invalid id", nil},
		{"Idempotency-Key differs from the envelope id", "POST", "/events/execution", okExec,
			[]string{"Content-Type: application/cloudevents+json", "Idempotency-Key: other"}, 400, "invalid id", nil},
		{"Idempotency-Key differs from the envelope id (application/json)", "POST", "/events/execution", okExec,
			[]string{"Idempotency-Key: other"}, 400, "invalid id", nil},
		{"Idempotency-Key differs from ce-id", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			append(slices.Clone(binary), "Idempotency-Key: other"), 400, "invalid id", nil},
		{"Idempotency-Key on a batch", "POST", "/events/execution", "[" + okExec + "]",
			[]string{"Content-Type: application/cloudevents-batch+json", "Idempotency-Key: ok-1"}, 400, "invalid id", nil},
		{"batch that is not an array", "POST", "/events/execution", okExec,
			[]string{"Content-Type: application/cloudevents-batch+json"}, 400, "invalid envelope", nil},
		{"batch that is not JSON", "POST", "/events/execution", "[" + okExec,
			[]string{"Content-Type: application/cloudevents-batch+json"}, 400, "not json", nil},
		{"batch with invalid events among valid ones", "POST", "/bhiv/core",
			"[" + okExec + "," + envelope("b-2", bhiv.KindExecution, "", `"action":"a"`) + `,5,{"team_id":"t1","action":"a"},` +
				strings.Replace(okExec, "ok-1", "b-5", 1) + "]",
			[]string{"Content-Type: application/cloudevents-batch+json"}, 400, "missing team id", []int{1, 2, 3}},
		{"batch with one id for two different events", "POST", "/events/execution",
			"[" + okExec + "," + strings.Replace(okExec, `"action":"a"`, `"action":"b"`, 1) + "]",
			[]string{"Content-Type: application/cloudevents-batch+json"}, 400, "invalid id", []int{1}},
		{"ce-* value with bad percent-encoding", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			append(slices.Clone(binary), "ce-source: a%zz"), 400, "invalid envelope", nil},
		{"ce-* value that is not UTF-8 once decoded", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			append(slices.Clone(binary), "ce-source: %C0%A0"), 400, "invalid envelope", nil},
		{"ce-datacontenttype in binary mode", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			append(slices.Clone(binary), "ce-datacontenttype: application/json"), 400, "invalid envelope", nil},
		{"binary with another specversion", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			[]string{"ce-specversion: 0.3", "ce-id: x"}, 400, "invalid envelope", nil},
		{"binary with a bad ce-time", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`,
			append(slices.Clone(binary), "ce-time: yesterday"), 400, "invalid envelope", nil},
		{"binary with ce-type of the other kind", "POST", "/events/reward", `{"team_id":"t1","reward":1}`,
			binary, 400, "unknown kind", nil},
		{"text/plain", "POST", "/events/execution", `{"team_id":"t1","action":"a"}`, []string{"Content-Type: text/plain"}, 415, "unsupported media type", nil},
		{"form-encoded, as curl -d sends it", "POST", "/bhiv/core", `{"team_id":"t1","action":"a"}`,
			[]string{"Content-Type: application/x-www-form-urlencoded"}, 415, "unsupported media type", nil},
		{"another event format", "POST", "/events/execution", okExec, []string{"Content-Type: application/cloudevents+avro"}, 415, "unsupported media type", nil},
		{"another batch format", "POST", "/events/execution", "[" + okExec + "]", []string{"Content-Type: application/cloudevents-batch+avro"}, 415, "unsupported media type", nil},
		{"compressed body", "POST", "/events/execution", okExec, []string{"Content-Type: application/json", "Content-Encoding: gzip"}, 415, "unsupported media type", nil},
		{"body above the limit", "POST", "/events/execution", big(5000), nil, 413, "too large", nil},
		{"data above the event limit", "POST", "/events/execution", big(2000), nil, 413, "too large", nil},
		{"envelope above the event limit", "POST", "/events/execution", big(900), nil, 413, "too large", nil},
		{"batch with an event above the event limit", "POST", "/events/execution",
			"[" + okExec + "," + strings.Replace(okExec, `"action":"a"`, `"action":"`+strings.Repeat("y", 1100)+`"`, 1) + "]",
			[]string{"Content-Type: application/cloudevents-batch+json"}, 413, "too large", []int{1}},
		{"GET", "GET", "/events/execution", ``, nil, 405, "method not allowed", nil},
		{"PUT on the old Core path", "PUT", "/bhiv/core", okExec, nil, 405, "method not allowed", nil},
		{"unknown kind in the path", "POST", "/events/deployment", `{"team_id":"t1"}`, nil, 404, "not found", nil},
		{"unknown path", "POST", "/events", `{"team_id":"t1"}`, nil, 404, "not found", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.path, tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.raw)
			}
			if r.Reason != tt.reason || r.Error == "" || len(r.IDs) != 0 || len(r.NotStored) != 0 {
				t.Errorf("answer %s, want reason %q, an error and no ids", r.raw, tt.reason)
			}
			if tt.status == 405 && r.header.Get("Allow") != "POST" {
				t.Errorf("Allow %q, want POST", r.header.Get("Allow"))
			}
			var idx []int
			for _, iv := range r.Invalid {
				idx = append(idx, iv.Index)
				if iv.Reason == "" || iv.Error == "" {
					t.Errorf("invalid event %+v without reason or error", iv)
				}
			}
			if !slices.Equal(idx, tt.invalid) {
				t.Errorf("invalid events %v, want %v", idx, tt.invalid)
			}
		})
	}
	if n := f.count(); n != 0 {
		t.Errorf("refused requests stored %d messages", n)
	}
}

// TestChunkedBodyAboveLimit sends a body without Content-Length: the limit
// holds while reading.
func TestChunkedBodyAboveLimit(t *testing.T) {
	f := newFixture(t, Config{MaxBodyBytes: 1000})
	body := io.MultiReader(strings.NewReader(`{"team_id":"t1","pad":"`), strings.NewReader(strings.Repeat("x", 5000)+`"}`))
	resp, err := http.Post(f.url+"/events/execution", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), `"too large"`) {
		t.Errorf("status %d %s, want 413", resp.StatusCode, b)
	}
	if n := f.count(); n != 0 {
		t.Errorf("stored %d", n)
	}
}

// TestAuth checks the bearer token: without it or with a wrong one 401 and
// nothing stored; with it 202; health and readiness stay open.
func TestAuth(t *testing.T) {
	f := newFixture(t, Config{Token: "s3cret-token"})
	body := `{"team_id":"t1","action":"a"}`
	for _, tt := range []struct {
		name   string
		header []string
		status int
	}{
		{"no token", nil, 401},
		{"wrong token", []string{"Authorization: Bearer s3cret-tokem"}, 401},
		{"token as another scheme", []string{"Authorization: Basic s3cret-token"}, 401},
		{"token prefix", []string{"Authorization: Bearer s3cret"}, 401},
		{"token", []string{"Authorization: Bearer s3cret-token"}, 202},
		{"lower-case scheme", []string{"Authorization: bearer s3cret-token"}, 202},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := f.post("/bhiv/core", body, tt.header...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.raw)
			}
			if tt.status == 401 && (r.header.Get("WWW-Authenticate") == "" || r.Reason != reasonUnauthorized || strings.Contains(r.raw, "s3cret")) {
				t.Errorf("401 answer %s, WWW-Authenticate %q", r.raw, r.header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := f.count(); n != 2 {
		t.Errorf("stored %d, want the 2 authorized", n)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := f.do("GET", p, ""); r.status != 200 {
			t.Errorf("GET %s without token: %d %s", p, r.status, r.raw)
		}
	}
}

// TestRetriesStoredOnce: a request sent again with the same ids — an
// Idempotency-Key, a ce-id, an envelope id, a whole batch — is stored once
// and answered 202 with the id flagged as a duplicate; a bare object without
// Idempotency-Key is a new event each time, as documented.
func TestRetriesStoredOnce(t *testing.T) {
	f := newFixture(t, Config{})
	bare := `{"team_id":"t1","action":"a"}`
	batch := "[" + envelope("b-1", bhiv.KindExecution, "t1", `"action":"a"`) + "," + envelope("b-2", bhiv.KindExecution, "t1", `"action":"b"`) + "]"
	for _, tt := range []struct {
		name, path, body string
		headers          []string
		ids              []string
	}{
		{"bare with Idempotency-Key", "/bhiv/core", bare, []string{"Content-Type: application/json", "Idempotency-Key: run-1"}, []string{"run-1"}},
		{"binary with ce-id", "/events/execution", bare, []string{"ce-specversion: 1.0", "ce-id: run-2", "ce-type: bhiv.execution"}, []string{"run-2"}},
		{"structured", "/events/execution", envelope("run-3", bhiv.KindExecution, "t1", `"action":"a"`), []string{"Content-Type: application/cloudevents+json"}, []string{"run-3"}},
		{"batch", "/events/execution", batch, []string{"Content-Type: application/cloudevents-batch+json"}, []string{"b-1", "b-2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := f.count()
			first := f.post(tt.path, tt.body, tt.headers...)
			again := f.post(tt.path, tt.body, tt.headers...)
			if first.status != 202 || !slices.Equal(first.IDs, tt.ids) || len(first.Duplicates) != 0 {
				t.Errorf("first: %d %s", first.status, first.raw)
			}
			if again.status != 202 || !slices.Equal(again.IDs, tt.ids) || !slices.Equal(again.Duplicates, tt.ids) {
				t.Errorf("again: %d %s, want every id flagged duplicate", again.status, again.raw)
			}
			if got := f.count() - before; got != uint64(len(tt.ids)) {
				t.Errorf("stored %d messages, want %d", got, len(tt.ids))
			}
		})
	}
	before := f.count()
	a, b := f.post("/bhiv/core", bare), f.post("/bhiv/core", bare)
	if a.status != 202 || b.status != 202 || a.IDs[0] == b.IDs[0] || f.count()-before != 2 {
		t.Errorf("bare POSTs without Idempotency-Key: %s %s, stored %d; want two events", a.raw, b.raw, f.count()-before)
	}
	if got := f.metric("bhiv_ingest_events_total", map[string]string{"outcome": outcomeDuplicate}); got != 5 {
		t.Errorf("bhiv_ingest_events_total{outcome=duplicate} = %v, want 5", got)
	}
}

// TestMetrics checks the request counter by path and code and the latency
// histogram.
func TestMetrics(t *testing.T) {
	f := newFixture(t, Config{})
	f.post("/events/execution", `{"team_id":"t1","action":"a"}`)
	f.post("/events/execution", `{"action":"a"}`)
	f.post("/bhiv/core", `{"team_id":"t1","reward":1}`)
	f.post("/nowhere/at/all", `{}`)
	for _, tt := range []struct {
		path, code string
		want       float64
	}{
		{"/events/execution", "202", 1}, {"/events/execution", "400", 1}, {"/bhiv/core", "202", 1}, {"other", "404", 1},
	} {
		if got := f.metric("bhiv_ingest_requests_total", map[string]string{"path": tt.path, "code": tt.code}); got != tt.want {
			t.Errorf("bhiv_ingest_requests_total{path=%q,code=%q} = %v, want %v", tt.path, tt.code, got, tt.want)
		}
	}
	if got := f.metric("bhiv_ingest_request_duration_seconds", map[string]string{"path": "/events/execution"}); got != 2 {
		t.Errorf("latency observations for /events/execution = %v, want 2", got)
	}
	if got := f.metric("bhiv_ingest_invalid_total", nil); got != 1 {
		t.Errorf("bhiv_ingest_invalid_total = %v, want 1", got)
	}
}

// TestMetricsRegistryOnce: a second server on the same registry is an
// error at New, not metrics that silently count nowhere.
func TestMetricsRegistryOnce(t *testing.T) {
	f := newFixture(t, Config{})
	if _, err := New(f.nc, Config{Registerer: f.reg}); err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Errorf("second New on one registry: %v, want a metrics error", err)
	}
}
