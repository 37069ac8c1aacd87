package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/ingest"
)

// devExample is the event the dev banner shows how to send.
const devExample = `{"team_id":"team_42","action":"analyze_data","status":"ok"}`

// runDev runs the whole stack in one process: an embedded JetStream server,
// the Core stub, the consumer and HTTP ingest, with data under ./data.
func runDev(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("dev", e)
	c := newConfig(fs, e.getenv, natsSettings, coreSettings, bucketSettings, failureSettings, consumerSettings, adminSettings, ingestSettings, stubSettings, logSettings)
	dataDir := fs.String("data", "./data", "directory for the NATS store, the bucket and the failure log")
	natsAddr := fs.String("nats-addr", "127.0.0.1:4222", "address of the embedded NATS server (port 0: any free port)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	// Data paths follow --data unless set explicitly.
	getenv := func(k string) string {
		if v := e.getenv(k); v != "" {
			return v
		}
		switch k {
		case "BHIV_BUCKET_DIR":
			return filepath.Join(*dataDir, "bucket")
		case "BHIV_FAILED_LOG":
			return filepath.Join(*dataDir, "failed_core_sends.log")
		}
		return ""
	}
	c.getenv = getenv
	n := readNATS(c)
	// The embedded server has no auth or TLS; the stream is always managed.
	n = natsConfig{stream: n.stream, manageStream: true, maxEventBytes: n.maxEventBytes}
	cc := readConsumer(c, n)
	sc := readSinks(c)
	ic, ingestAddr := readIngest(c, n)
	admin := readAdmin(c)
	stubAddr := c.str("BHIV_CORE_STUB_ADDR")
	host, portStr, err := net.SplitHostPort(*natsAddr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil {
		c.errs = append(c.errs, fmt.Errorf("--nats-addr=%q: want host:port", *natsAddr))
	}
	if err := c.err(); err != nil {
		return usageError{err}
	}
	if port == 0 {
		port = -1
	}

	// 1. NATS with JetStream, store under data/nats.
	ns, err := server.NewServer(&server.Options{
		ServerName: "bhiv-dev", Host: host, Port: port, JetStream: true,
		StoreDir: filepath.Join(*dataDir, "nats"), NoSigs: true, NoLog: true,
	})
	if err != nil {
		return fmt.Errorf("dev: nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("dev: nats server did not start on %s (is the port in use? try --nats-addr 127.0.0.1:0)", *natsAddr)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	n.url = ns.ClientURL()

	// 2. The Core stub.
	stub, err := corestub.New(corestub.Config{Token: sc.core.Token, Logger: log.With("component", "core-stub")})
	if err != nil {
		return err
	}
	defer stub.Close()
	stubLn, err := net.Listen("tcp", stubAddr)
	if err != nil {
		return fmt.Errorf("dev: core stub: listen on BHIV_CORE_STUB_ADDR=%s: %w", stubAddr, err)
	}
	stubURL := "http://" + stubLn.Addr().String() + corestub.Path
	if e.getenv("BHIV_CORE_URL") == "" && !flagSet(fs, "core-url") {
		sc.core.URL = stubURL
	}

	// 3. HTTP ingest.
	var ingestLn net.Listener
	ingestLine, curlLine := "", ""
	if ingestAddr != "off" {
		if ingestLn, err = listenIngest(ingestAddr); err != nil {
			stubLn.Close()
			return fmt.Errorf("dev: %w", err)
		}
		url := "http://" + ingestLn.Addr().String()
		ingestLine = fmt.Sprintf("  HTTP ingest       %s   POST %s{execution,reward}, POST %s\n", url, ingest.EventsPath, ingest.CorePath)
		auth := ""
		if ic.Token != "" {
			auth = ` -H "Authorization: Bearer $BHIV_INGEST_TOKEN"`
		}
		curlLine = fmt.Sprintf("  curl -i %s%sexecution -H 'Content-Type: application/json'%s -d '%s'\n", url, ingest.EventsPath, auth, devExample)
	}

	fmt.Fprintf(e.stdout, `bhiv dev is running:
  NATS (JetStream)  %s   store %s
  Core stub         %s   stats: curl %s/stats
%s  Bucket            %s
  Failure log       %s
Send an event:
  nats -s %s pub %s '%s'
%s  go run ./cmd/bhiv publish execution --nats-url %s --team team_42 --action analyze_data
Ctrl-C stops everything cleanly; the stream is kept for the next start.
`, n.url, filepath.Join(*dataDir, "nats"), stubURL, stubURL, ingestLine, sc.bucketLocation(), sc.failed.Path,
		n.url, "bhiv.events.execution", devExample, curlLine, n.url)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntil(gctx, stubLn, stub, 2*time.Second) })
	if ingestLn != nil {
		g.Go(func() error { return serveIngest(gctx, log, n, ic, ingestLn, prometheus.NewRegistry()) })
	}
	g.Go(func() error { return consume(gctx, log, n, cc, sc, admin) })
	return g.Wait()
}
