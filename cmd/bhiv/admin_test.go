package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestAdminPprof: the profiler is served only when BHIV_ADMIN_PPROF turns it
// on, and then answers as `go tool pprof` expects.
func TestAdminPprof(t *testing.T) {
	ready := func(context.Context) error { return nil }
	for _, tc := range []struct {
		on       bool
		path     string
		want     int
		contains string
	}{
		{false, "/debug/pprof/", http.StatusNotFound, ""},
		{false, "/debug/pprof/goroutine?debug=1", http.StatusNotFound, ""},
		{true, "/debug/pprof/", http.StatusOK, "goroutine"},
		{true, "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{true, "/debug/pprof/heap", http.StatusOK, ""},
		{true, "/debug/pprof/profile?seconds=1", http.StatusOK, ""},
		{true, "/metrics", http.StatusOK, "go_goroutines"},
	} {
		base := httptestServer(t, adminHandler(newRegistry(), ready, tc.on))
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.contains) {
			t.Errorf("pprof %v: GET %s = %d (want %d), body has %q: %v", tc.on, tc.path, resp.StatusCode, tc.want, tc.contains, strings.Contains(string(body), tc.contains))
		}
	}
	c := newConfig(newFlagSet("consume", env{stderr: io.Discard}), envMap(map[string]string{"BHIV_ADMIN_PPROF": "true"}), adminSettings)
	if a := readAdmin(c); !a.pprof || a.addr != "127.0.0.1:8081" || c.err() != nil {
		t.Errorf("readAdmin with BHIV_ADMIN_PPROF=true: %+v, %v", a, c.err())
	}
}
