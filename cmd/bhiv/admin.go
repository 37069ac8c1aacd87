package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newRegistry returns a Prometheus registry with the Go runtime and process
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// adminOff is the admin address that turns the admin server off; an empty
// BHIV_ADMIN_ADDR means it too (its setting's emptyMeans).
const adminOff = "off"

// adminConfig is where the admin server listens and what it serves.
type adminConfig struct {
	addr  string // adminOff: no admin server
	pprof bool   // serve /debug/pprof/
}

// readAdmin reads the admin server's settings.
func readAdmin(c *config) adminConfig {
	return adminConfig{addr: c.str("BHIV_ADMIN_ADDR"), pprof: c.bool("BHIV_ADMIN_PPROF")}
}

// adminHandler serves /metrics, /healthz (the process is alive) and /readyz
// (ready returns nil; else 503 with the reason), and the Go profiler under
// /debug/pprof/ when withPprof is set.
func adminHandler(reg *prometheus.Registry, ready func(context.Context) error, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// listenAdmin opens the admin listener, or returns nil when addr is
// adminOff.
func listenAdmin(addr string) (net.Listener, error) {
	if addr == adminOff {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin server: listen on BHIV_ADMIN_ADDR=%s: %w", addr, err)
	}
	return ln, nil
}
