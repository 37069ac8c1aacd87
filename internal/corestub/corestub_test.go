package corestub

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func post(t *testing.T, url, token, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+Path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestStub(t *testing.T) {
	rec := filepath.Join(t.TempDir(), "core.jsonl")
	s, err := New(Config{Token: "s3cret", RecordPath: rec})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()

	tests := []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", `{"id":"a","type":"bhiv.execution"}`, 401},
		{"wrong token", "nope", `{"id":"a","type":"bhiv.execution"}`, 401},
		{"one event", "s3cret", `{"id":"a","type":"bhiv.execution"}`, 200},
		{"duplicate", "s3cret", `{"id":"a","type":"bhiv.execution"}`, 200},
		{"batch", "s3cret", `[{"id":"b","type":"bhiv.reward"},{"id":"c","type":"bhiv.reward"}]`, 200},
		{"not json", "s3cret", `nope`, 400},
		{"no id", "s3cret", `{"type":"bhiv.reward"}`, 400},
	}
	for _, tt := range tests {
		if got := post(t, srv.URL, tt.token, tt.body).StatusCode; got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	st := s.Stats()
	if st.Unique != 3 || st.Duplicates != 1 || st.Events != 4 || st.Unauthorized != 2 || st.BadRequests != 2 {
		t.Errorf("stats = %+v", st)
	}
	if st.ByKind["bhiv.reward"] != 2 || st.ByKind["bhiv.execution"] != 1 {
		t.Errorf("by kind = %v", st.ByKind)
	}
	resp, err := http.Get(srv.URL + Path + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var got Stats
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Unique != 3 {
		t.Errorf("GET stats unique = %d", got.Unique)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
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
	req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(`{"id":"a"}`))
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
	if got := post(t, srv.URL, "", `{"id":"a","type":"bhiv.execution"}`).StatusCode; got != 200 {
		t.Fatalf("after clearing faults: %d", got)
	}
	if st := s.Stats(); st.Injected != 1 || st.Unique != 1 {
		t.Errorf("stats = %+v", st)
	}
}
