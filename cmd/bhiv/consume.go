package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/pipeline"
)

func runConsume(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("consume", e)
	c := newConfig(fs, e.getenv, natsSettings, coreSettings, bucketSettings, failureSettings, consumerSettings, adminSettings, logSettings)
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	cc := readConsumer(c, n)
	sc := readSinks(c)
	admin := readAdmin(c)
	if err := c.err(); err != nil {
		return usageError{err}
	}
	log.Info("bhiv consume starting", append([]any{"version", Version()}, c.effective()...)...)
	return consume(ctx, log, n, cc, sc, admin)
}

// consume connects to NATS and runs the pipeline and the admin server until
// ctx ends, then shuts down in order: the consumer drains and settles its
// in-flight events, the sinks close, the connection drains.
func consume(ctx context.Context, log *slog.Logger, n natsConfig, cc consumer.Config, sc sinkConfig, admin adminConfig) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	nc, err := connect(cctx, n, "bhiv consume", log)
	cancel()
	if err != nil {
		return err
	}
	defer drainConn(nc, log)
	js, err := jetStream(ctx, nc, n)
	if err != nil {
		return err
	}
	reg := newRegistry()
	p, err := pipeline.New(js, pipeline.Config{Consumer: cc, Core: sc.core, Bucket: sc.bucket, S3: sc.s3, FailureLog: sc.failed, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	ln, err := listenAdmin(admin.addr)
	if err != nil {
		p.Close()
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	runCtx, stop := context.WithCancel(gctx)
	defer stop()
	g.Go(func() error {
		defer stop() // the admin server goes when the consumer does
		return p.Run(runCtx)
	})
	if ln != nil {
		log.Info("admin server listening", "metrics", "http://"+ln.Addr().String()+"/metrics", "pprof", admin.pprof)
		g.Go(func() error {
			return serveUntil(runCtx, ln, adminHandler(reg, p.Consumer.Ready, admin.pprof), 5*time.Second)
		})
	}
	err = g.Wait()
	if cerr := p.Close(); cerr != nil {
		log.Error("closing sinks", tint.Err(cerr))
		err = errors.Join(err, cerr)
	}
	if err == nil {
		log.Info("bhiv consume stopped cleanly")
	}
	return err
}

// drainConn drains the NATS connection and waits, for a bounded time, until
// it is closed.
func drainConn(nc *nats.Conn, log *slog.Logger) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		log.Warn("nats drain took over 10s; closing")
		nc.Close()
	}
}
