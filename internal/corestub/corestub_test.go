package corestub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// envelope returns a valid envelope of kind ("execution" or "reward") with
// the given id.
func envelope(id, kind string) string {
	data := `{"team_id":"t1","action":"a","duration_ms":1}`
	if kind == "reward" {
		data = `{"team_id":"t1","reward":1.5}`
	}
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"test","type":"bhiv.%s","time":"2026-11-28T02:30:00Z","subject":"t1","datacontenttype":"application/json","data":%s}`, id, kind, data)
}

// binaryHeaders returns the binary-mode headers of envelope(id, kind).
func binaryHeaders(id, kind string) http.Header {
	return http.Header{
		"Content-Type": {"application/json"}, "Ce-Specversion": {"1.0"}, "Ce-Id": {id}, "Ce-Source": {"test"},
		"Ce-Type": {"bhiv." + kind}, "Ce-Time": {"2026-11-28T02:30:00Z"}, "Ce-Subject": {"t1"},
	}
}

// data returns the data of envelope(id, kind).
func data(kind string) string {
	var env struct{ Data json.RawMessage }
	_ = json.Unmarshal([]byte(envelope("x", kind)), &env)
	return string(env.Data)
}

func send(t *testing.T, url, token string, h http.Header, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+Path, strings.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err) // not Fatal: send also runs on other goroutines
		return &http.Response{}
	}
	resp.Body.Close()
	return resp
}

func structured() http.Header {
	return http.Header{"Content-Type": {"application/cloudevents+json; charset=UTF-8"}}
}

func batched() http.Header {
	return http.Header{"Content-Type": {"application/cloudevents-batch+json"}}
}

func TestStub(t *testing.T) {
	rec := filepath.Join(t.TempDir(), "core.jsonl")
	s, err := New(Config{Token: "s3cret", RecordPath: rec, KeepEvents: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()

	noCE := http.Header{"Content-Type": {"application/json"}}
	withDCT := binaryHeaders("d", "execution")
	withDCT.Set("Ce-Datacontenttype", "application/json")
	tests := []struct {
		name, token string
		h           http.Header
		body        string
		want        int
	}{
		{"no token", "", binaryHeaders("a", "execution"), data("execution"), 401},
		{"wrong token", "nope", binaryHeaders("a", "execution"), data("execution"), 401},
		{"binary", "s3cret", binaryHeaders("a", "execution"), data("execution"), 200},
		{"structured duplicate", "s3cret", structured(), envelope("a", "execution"), 200},
		{"batch", "s3cret", batched(), "[" + envelope("b", "reward") + "," + envelope("c", "reward") + "]", 200},
		{"empty batch", "s3cret", batched(), "[]", 200},
		{"not json", "s3cret", structured(), `nope`, 400},
		{"no id", "s3cret", structured(), strings.Replace(envelope("x", "reward"), `"id":"x",`, "", 1), 400},
		{"envelope as application/json", "s3cret", noCE, envelope("e", "execution"), 400},
		{"binary with ce-datacontenttype", "s3cret", withDCT, data("execution"), 400},
		{"binary, not JSON", "s3cret", http.Header{"Content-Type": {"text/plain"}, "Ce-Specversion": {"1.0"}, "Ce-Id": {"f"}, "Ce-Source": {"s"}, "Ce-Type": {"bhiv.execution"}}, "hello", 415},
		{"avro", "s3cret", http.Header{"Content-Type": {"application/cloudevents+avro"}}, "x", 415},
	}
	for _, tt := range tests {
		if got := send(t, srv.URL, tt.token, tt.h, tt.body).StatusCode; got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	st := s.Stats()
	if st.Unique != 3 || st.Duplicates != 1 || st.Events != 4 || st.Unauthorized != 2 || st.BadRequests != 6 {
		t.Errorf("stats = %+v", st)
	}
	if st.ByKind["bhiv.reward"] != 2 || st.ByKind["bhiv.execution"] != 1 {
		t.Errorf("by kind = %v", st.ByKind)
	}
	if want := map[string]int64{"binary": 1, "structured": 1, "batched": 2}; fmt.Sprint(st.ByMode) != fmt.Sprint(want) {
		t.Errorf("by mode = %v, want %v", st.ByMode, want)
	}
	// The same event, in binary and in structured mode, is recorded as the
	// same envelope.
	got := s.Received()
	if len(got) != 4 || got[0].Mode != "binary" || got[1].Mode != "structured" || got[2].Mode != "batched" {
		t.Fatalf("received %+v", got)
	}
	if string(got[0].Event) != string(got[1].Event) {
		t.Errorf("one event, two envelopes:\nbinary     %s\nstructured %s", got[0].Event, got[1].Event)
	}
	resp, err := http.Get(srv.URL + Path + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats Stats
	json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if stats.Unique != 3 || stats.ByMode["batched"] != 2 {
		t.Errorf("GET stats = %+v", stats)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The record holds each event's envelope and mode.
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var first Record
	if len(lines) != 4 || json.Unmarshal([]byte(lines[0]), &first) != nil || first.Mode != "binary" || string(first.Event) != string(got[0].Event) {
		t.Errorf("record:\n%s", b)
	}
	// A restarted stub remembers what it received.
	s2, err := New(Config{RecordPath: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if st := s2.Stats(); st.Unique != 3 || st.Duplicates != 1 {
		t.Errorf("after restart: %+v", st)
	}
}

func TestStubFaults(t *testing.T) {
	s, err := New(Config{Faults: Faults{FailRate: 1, Status: 429, RetryAfter: "2"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(data("execution")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Faults can be changed at run time.
	req, _ = http.NewRequest(http.MethodPut, srv.URL+Path+"/faults", strings.NewReader(`{"fail_rate":0}`))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT faults: %d", resp.StatusCode)
	}
	if got := send(t, srv.URL, "", binaryHeaders("a", "execution"), data("execution")).StatusCode; got != 200 {
		t.Fatalf("after clearing faults: %d", got)
	}
	if st := s.Stats(); st.Injected != 1 || st.Unique != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// TestConfigValidate checks each rule of Config.Validate, row by row, and
// that PUT /faults refuses what New refuses.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"zero value", Config{}, ""},
		{"every fault", Config{Capacity: 4, Faults: Faults{FailRate: 1, Status: 429, Latency: time.Second, LatencyRate: 0.5, LatencyJitter: time.Millisecond}}, ""},
		{"negative capacity", Config{Capacity: -1}, "capacity -1"},
		{"fail rate above 1", Config{Faults: Faults{FailRate: 1.5}}, "fail rate 1.5"},
		{"negative fail rate", Config{Faults: Faults{FailRate: -0.1}}, "fail rate -0.1"},
		{"latency rate above 1", Config{Faults: Faults{LatencyRate: 2}}, "latency rate 2"},
		{"negative latency", Config{Faults: Faults{Latency: -time.Second}}, "must not be negative"},
		{"negative jitter", Config{Faults: Faults{LatencyJitter: -time.Second}}, "must not be negative"},
		{"status not HTTP", Config{Faults: Faults{Status: 700}}, "status 700"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
			if _, err := New(tt.cfg); (err == nil) != (tt.want == "") {
				t.Fatalf("New: %v, want it to agree with Validate", err)
			}
		})
	}
	if d := (Config{}).WithDefaults(); d.Faults.Status != http.StatusServiceUnavailable || d.Logger == nil {
		t.Errorf("defaults %+v", d)
	}

	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	for body, want := range map[string]int{`{"status":700,"fail_rate":1}`: 400, `{"fail_rate":3}`: 400, `{"fail_rate":1}`: 204} {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+Path+"/faults", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("PUT faults %s: %d, want %d", body, resp.StatusCode, want)
		}
	}
	// A failure injected with no status set is a 503.
	if got := send(t, srv.URL, "", binaryHeaders("a", "execution"), data("execution")).StatusCode; got != http.StatusServiceUnavailable {
		t.Errorf("injected failure without a status: %d, want 503", got)
	}
}

// With a capacity of K, at most K requests are served at once and the
// others wait their turn, first in, first out.
func TestStubCapacity(t *testing.T) {
	s, err := New(Config{Capacity: 2, Faults: Faults{Latency: 150 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	const n = 7
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("cap-%d", i)
			if got := send(t, srv.URL, "", binaryHeaders(id, "execution"), data("execution")).StatusCode; got != 200 {
				t.Errorf("%s: status %d", id, got)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
		// Arrivals 20ms apart, well under the latency: request i comes
		// i-th into the queue.
		time.Sleep(20 * time.Millisecond)
		if st := s.Stats(); st.Serving > 2 {
			t.Errorf("%d requests served at once, capacity 2", st.Serving)
		}
	}
	wg.Wait()
	st := s.Stats()
	if st.MaxQueued < n-3 || st.Queued != 0 || st.Serving != 0 || st.Unique != n {
		t.Errorf("stats %+v: want up to %d queued, none left", st, n-2)
	}
	// Two slots: requests finish in pairs, in their order of arrival.
	for i, got := range order {
		if got/2 != i/2 && got != i {
			t.Errorf("finish order %v: not first in, first out", order)
			break
		}
	}
}

// A queued request whose client goes away leaves the queue.
func TestStubCapacityClientGone(t *testing.T) {
	s, err := New(Config{Capacity: 1, Faults: Faults{Latency: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	var first sync.WaitGroup
	defer first.Wait()
	first.Go(func() { _ = send(t, srv.URL, "", binaryHeaders("first", "execution"), data("execution")) })
	for deadline := time.Now().Add(5 * time.Second); s.Stats().Serving == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // the first request holds the one slot
	}
	// The second client goes away once its request is queued behind the
	// first (waiting for that, rather than for a fixed time, keeps a loaded
	// machine from cancelling it before it reached the stub).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer cancel()
		for deadline := time.Now().Add(5 * time.Second); s.Stats().Queued == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+Path, strings.NewReader(data("execution")))
	req.Header = binaryHeaders("second", "execution")
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the queued request was answered before its client went away")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Queued != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.Queued != 0 || st.MaxQueued != 1 {
		t.Errorf("stats %+v: want the gone client out of the queue", st)
	}
}

func TestStubLatencyJitter(t *testing.T) {
	f := Faults{Latency: 100 * time.Millisecond, LatencyJitter: 40 * time.Millisecond}
	var lo, hi, sum time.Duration = time.Hour, 0, 0
	const n = 20000
	for range n {
		d := f.delay()
		lo, hi, sum = min(lo, d), max(hi, d), sum+d
	}
	mean := sum / n
	if lo < 60*time.Millisecond || hi > 140*time.Millisecond || lo > 62*time.Millisecond || hi < 138*time.Millisecond {
		t.Errorf("delays within [%s, %s], want spread over 100ms ± 40ms", lo, hi)
	}
	if mean < 98*time.Millisecond || mean > 102*time.Millisecond {
		t.Errorf("mean delay %s, want about 100ms", mean)
	}
	// Never below zero, and no delay without latency.
	if d := (Faults{Latency: 10 * time.Millisecond, LatencyJitter: time.Second}).delay(); d < 0 {
		t.Errorf("negative delay %s", d)
	}
	if d := (Faults{}).delay(); d != 0 {
		t.Errorf("delay %s without latency", d)
	}
	// Without jitter every delay is the latency.
	if d := (Faults{Latency: 70 * time.Millisecond}).delay(); d != 70*time.Millisecond {
		t.Errorf("delay %s, want 70ms", d)
	}
}
