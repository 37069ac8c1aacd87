package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hackaverse/bhiv/internal/corestub"
)

func runCoreStub(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("core-stub", e)
	c := newConfig(fs, e.getenv, logSettings)
	addr := fs.String("addr", "", "listen address (env BHIV_CORE_STUB_ADDR, default 127.0.0.1:9000)")
	token := fs.String("token", "", "bearer token required from clients (env BHIV_CORE_TOKEN)")
	failRate := fs.Float64("fail-rate", 0, "share of requests that fail (0..1)")
	status := fs.Int("status", 503, "status of failed requests")
	retryAfter := fs.String("retry-after", "", "Retry-After header sent with failures (seconds or an HTTP date)")
	latency := fs.Duration("latency", 0, "delay added to requests")
	latencyRate := fs.Float64("latency-rate", 0, "share of requests delayed (0 = all, when --latency is set)")
	jitter := fs.Duration("latency-jitter", 0, "vary each delay uniformly within --latency ± this (never below 0)")
	capacity := fs.Int("capacity", 0, "serve at most this many requests at once, the others wait in a first-in, first-out queue (0 = no limit)")
	record := fs.String("record", "", "append the id of every accepted event to this JSON Lines file (kept across restarts)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	if *addr == "" {
		*addr = e.getenv("BHIV_CORE_STUB_ADDR")
	}
	if *addr == "" {
		*addr = "127.0.0.1:9000"
	}
	if *token == "" {
		*token = e.getenv("BHIV_CORE_TOKEN")
	}
	if *failRate < 0 || *failRate > 1 || *latencyRate < 0 || *latencyRate > 1 {
		c.errs = append(c.errs, errors.New("--fail-rate and --latency-rate must be within 0..1"))
	}
	if *latency < 0 || *jitter < 0 {
		c.errs = append(c.errs, errors.New("--latency and --latency-jitter must not be negative"))
	}
	if *capacity < 0 {
		c.errs = append(c.errs, fmt.Errorf("--capacity %d: must be 0 (no limit) or more", *capacity))
	}
	if *status < 100 || *status > 599 {
		c.errs = append(c.errs, fmt.Errorf("--status %d is not an HTTP status", *status))
	}
	if err := c.err(); err != nil {
		return usageError{err}
	}
	stub, err := corestub.New(corestub.Config{
		Token:      *token,
		Capacity:   *capacity,
		RecordPath: *record,
		Logger:     log,
		Faults: corestub.Faults{
			FailRate: *failRate, Status: *status, RetryAfter: *retryAfter,
			Latency: *latency, LatencyRate: *latencyRate, LatencyJitter: *jitter,
		},
	})
	if err != nil {
		return err
	}
	defer stub.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("core stub: listen: %w", err)
	}
	log.Info("core stub listening", "url", "http://"+ln.Addr().String()+corestub.Path,
		"stats", "http://"+ln.Addr().String()+corestub.Path+"/stats", "token", *token != "", "capacity", *capacity)
	return serveUntil(ctx, ln, stub, 5*time.Second)
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
