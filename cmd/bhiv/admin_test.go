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

// TestAdminAddrEmptyMeansOff: BHIV_ADMIN_ADDR given as the empty string, by
// variable or by flag, turns the admin server off as "off" does (its
// setting's emptyMeans); unset, it is the default. The rule is that
// setting's alone: another setting's empty variable reads as unset.
func TestAdminAddrEmptyMeansOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unset", nil, nil, "127.0.0.1:8081"},
		{"empty variable", map[string]string{"BHIV_ADMIN_ADDR": ""}, nil, adminOff},
		{"off", map[string]string{"BHIV_ADMIN_ADDR": "off"}, nil, adminOff},
		{"address", map[string]string{"BHIV_ADMIN_ADDR": "127.0.0.1:0"}, nil, "127.0.0.1:0"},
		{"empty flag", map[string]string{"BHIV_ADMIN_ADDR": "127.0.0.1:0"}, []string{"--admin-addr="}, adminOff},
		{"flag over empty variable", map[string]string{"BHIV_ADMIN_ADDR": ""}, []string{"--admin-addr=127.0.0.1:0"}, "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet("consume", env{stderr: io.Discard})
			c := newConfig(fs, envMap(tc.env), adminSettings)
			if err := parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			a := readAdmin(c)
			if a.addr != tc.want || c.err() != nil {
				t.Fatalf("admin address %q (%v), want %q", a.addr, c.err(), tc.want)
			}
			if tc.want == "127.0.0.1:8081" {
				return // the default port may be taken on this machine
			}
			ln, err := listenAdmin(a.addr)
			if err != nil {
				t.Fatal(err)
			}
			if (ln == nil) != (tc.want == adminOff) {
				t.Errorf("listenAdmin(%q) = %v, want a listener: %v", a.addr, ln, tc.want != adminOff)
			}
			if ln != nil {
				ln.Close()
			}
		})
	}
	c := newConfig(newFlagSet("consume", env{stderr: io.Discard}), envMap(map[string]string{"BHIV_CORE_URL": ""}), coreSettings)
	if core := c.str("BHIV_CORE_URL"); core != "http://localhost:9000/bhiv/core" {
		t.Errorf("BHIV_CORE_URL set empty = %q, want its default", core)
	}
}
