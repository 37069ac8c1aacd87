package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hackaverse/bhiv/internal/corestub"
)

// runCoreStub runs the Core stand-in on its own, with the faults the flags
// inject, until ctx ends.
func runCoreStub(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("core-stub", e)
	c := newConfig(fs, e.getenv, logSettings)
	addr := fs.String("addr", "", "listen address (env BHIV_CORE_STUB_ADDR, default 127.0.0.1:9000)")
	stubFlags := readStubFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	*addr = cmp.Or(*addr, e.getenv("BHIV_CORE_STUB_ADDR"), "127.0.0.1:9000")
	cfg := stubFlags()
	cfg.Token = cmp.Or(cfg.Token, e.getenv("BHIV_CORE_TOKEN"))
	cfg.Logger = log
	if err := cfg.Validate(); err != nil {
		c.errs = append(c.errs, err)
	}
	if err := c.err(); err != nil {
		return usageError{err}
	}
	stub, err := corestub.New(cfg)
	if err != nil {
		return err
	}
	defer stub.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("core stub: listen: %w", err)
	}
	log.Info("core stub listening", "url", "http://"+ln.Addr().String()+corestub.Path,
		"stats", "http://"+ln.Addr().String()+corestub.Path+"/stats", "token", cfg.Token != "", "capacity", cfg.Capacity)
	return serveUntil(ctx, ln, stub, 5*time.Second)
}

// readStubFlags defines the flags of the stub's own settings on fs and
// returns a function that gives the config they make, once fs is parsed.
func readStubFlags(fs *flag.FlagSet) func() corestub.Config {
	token := fs.String("token", "", "bearer token required from clients (env BHIV_CORE_TOKEN)")
	failRate := fs.Float64("fail-rate", 0, "share of requests that fail (0..1)")
	status := fs.Int("status", 503, "status of failed requests")
	retryAfter := fs.String("retry-after", "", "Retry-After header sent with failures (seconds or an HTTP date)")
	latency := fs.Duration("latency", 0, "delay added to requests")
	latencyRate := fs.Float64("latency-rate", 0, "share of requests delayed (0 = all, when --latency is set)")
	jitter := fs.Duration("latency-jitter", 0, "vary each delay uniformly within --latency ± this (never below 0)")
	capacity := fs.Int("capacity", 0, "serve at most this many requests at once, the others wait in a first-in, first-out queue (0 = no limit)")
	record := fs.String("record", "", "append the id of every accepted event to this JSON Lines file (kept across restarts)")
	return func() corestub.Config {
		return corestub.Config{
			Token: *token, Capacity: *capacity, RecordPath: *record,
			Faults: corestub.Faults{
				FailRate: *failRate, Status: *status, RetryAfter: *retryAfter,
				Latency: *latency, LatencyRate: *latencyRate, LatencyJitter: *jitter,
			},
		}
	}
}

// serveUntil serves h on ln until ctx ends, then shuts the server down
// gracefully within grace.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
