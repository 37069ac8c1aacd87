package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hackaverse/bhiv/internal/ingest"
)

// runIngest serves HTTP ingest: services without a NATS client POST events
// and bhiv publishes them to JetStream.
func runIngest(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("ingest", e)
	c := newConfig(fs, e.getenv, natsSettings, ingestSettings, logSettings)
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	ic, addr := readIngest(c, n)
	if addr == "off" {
		c.check("BHIV_INGEST_ADDR", errors.New("bhiv ingest needs an address"))
	}
	if err := c.err(); err != nil {
		return usageError{err}
	}
	log.Info("bhiv ingest starting", append([]any{"version", Version()}, c.effective()...)...)
	ln, err := listenIngest(addr)
	if err != nil {
		return err
	}
	reg := newRegistry()
	return serveIngest(ctx, log, n, ic, ln, reg)
}

// readIngest reads and checks the ingest settings; the address is "off"
// when turned off.
func readIngest(c *config, n natsConfig) (ingest.Config, string) {
	ic := ingest.Config{
		Stream:         n.stream,
		Token:          c.str("BHIV_INGEST_TOKEN"),
		MaxBodyBytes:   int64(c.int("BHIV_INGEST_MAX_BYTES", 1)),
		MaxEventBytes:  n.maxEventBytes,
		PublishTimeout: c.dur("BHIV_INGEST_PUBLISH_TIMEOUT", time.Millisecond),
		ReadTimeout:    c.dur("BHIV_INGEST_READ_TIMEOUT", time.Millisecond),
		WriteTimeout:   c.dur("BHIV_INGEST_WRITE_TIMEOUT", time.Millisecond),
		IdleTimeout:    c.dur("BHIV_INGEST_IDLE_TIMEOUT", time.Millisecond),
	}
	if ic.WriteTimeout > 0 && ic.WriteTimeout <= ic.PublishTimeout {
		c.check("BHIV_INGEST_WRITE_TIMEOUT", fmt.Errorf("must exceed BHIV_INGEST_PUBLISH_TIMEOUT (%s): a request waits for JetStream before it is answered", ic.PublishTimeout))
	}
	addr := c.str("BHIV_INGEST_ADDR")
	if addr != "off" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			c.check("BHIV_INGEST_ADDR", errors.New("want host:port, such as 127.0.0.1:8082 or 0.0.0.0:8082"))
		}
	}
	return ic, addr
}

// listenIngest opens the ingest listener.
func listenIngest(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ingest: listen on BHIV_INGEST_ADDR=%s: %w", addr, err)
	}
	return ln, nil
}

// serveIngest connects to NATS (making sure of the stream when it manages
// it) and serves ingest on ln until ctx ends, /metrics from reg included;
// then it lets requests in flight finish and drains the connection.
func serveIngest(ctx context.Context, log *slog.Logger, n natsConfig, ic ingest.Config, ln net.Listener, reg *prometheus.Registry) error {
	defer ln.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	nc, err := connect(cctx, n, "bhiv ingest", log)
	cancel()
	if err != nil {
		return err
	}
	defer drainConn(nc, log)
	if _, err := jetStream(ctx, nc, n); err != nil {
		return err
	}
	ic.Logger, ic.Registerer = log.With("component", "ingest"), reg
	ic.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	srv, err := ingest.New(nc, ic)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	log.Info("ingest listening", "events", url+ingest.EventsPath+"{execution,reward}", "core", url+ingest.CorePath,
		"metrics", url+"/metrics", "token", ic.Token != "")
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("ingest stopped cleanly")
	return nil
}
