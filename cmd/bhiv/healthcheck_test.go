package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestHealthcheck checks `bhiv healthcheck`, the containers' health check:
// it succeeds on 2xx only, says why it failed (status and body, or the
// network error), gives up after --timeout, and rejects misuse with a
// usage error.
func TestHealthcheck(t *testing.T) {
	release := make(chan struct{})
	srv := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("ready\n"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/readyz":
			http.Error(w, "not ready: nats: connection closed", http.StatusServiceUnavailable)
		case "/redirect":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { close(release) })

	for _, tc := range []struct {
		args  []string
		want  string // "" = success
		usage bool
	}{
		{args: []string{srv + "/ok"}},
		{args: []string{srv + "/empty"}},
		{args: []string{srv + "/readyz"}, want: "503 Service Unavailable: not ready: nats: connection closed"},
		{args: []string{srv + "/redirect"}, want: "503"},
		{args: []string{srv + "/missing"}, want: "404"},
		{args: []string{"--timeout", "200ms", srv + "/hang"}, want: "deadline exceeded"},
		{args: []string{"http://127.0.0.1:1/readyz"}, want: "connection refused"},
		{args: []string{}, want: "usage: bhiv healthcheck", usage: true},
		{args: []string{srv + "/ok", srv + "/ok"}, want: "usage: bhiv healthcheck", usage: true},
		{args: []string{"::not a url"}, want: "missing protocol scheme", usage: true},
	} {
		_, _, err := runBhiv(t, context.Background(), nil, append([]string{"healthcheck"}, tc.args...)...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("healthcheck %v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("healthcheck %v: err = %v, want %q", tc.args, err, tc.want)
		case err != nil && tc.usage != errors.As(err, new(usageError)):
			t.Errorf("healthcheck %v: usage error %v, want %v (%v)", tc.args, !tc.usage, tc.usage, err)
		case err != nil && exitCode(err) == 0:
			t.Errorf("healthcheck %v: exit status 0 on failure", tc.args)
		}
	}
}
