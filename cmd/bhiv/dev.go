package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/hackaverse/bhiv/consumer"
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
	d, err := readDev(c, e.getenv, *dataDir, *natsAddr)
	if err != nil {
		return err
	}
	ns, err := startDevNATS(d)
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	d.n.url = ns.ClientURL()
	stub, stubLn, err := startDevStub(d, log)
	if err != nil {
		return err
	}
	defer stub.Close()
	stubURL := "http://" + stubLn.Addr().String() + corestub.Path
	if e.getenv("BHIV_CORE_URL") == "" && !flagSet(fs, "core-url") {
		d.sc.core.URL = stubURL
	}
	var ingestLn net.Listener
	if d.ingestAddr != "off" {
		if ingestLn, err = listenIngest(d.ingestAddr); err != nil {
			stubLn.Close()
			return fmt.Errorf("dev: %w", err)
		}
	}
	printDevBanner(e.stdout, d, stubURL, ingestLn)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntil(gctx, stubLn, stub, 2*time.Second) })
	if ingestLn != nil {
		g.Go(func() error { return serveIngest(gctx, log, d.n, d.ic, ingestLn, prometheus.NewRegistry()) })
	}
	g.Go(func() error { return consume(gctx, log, d.n, d.cc, d.sc, d.admin) })
	return g.Wait()
}

// devConfig is what bhiv dev runs, from its settings.
type devConfig struct {
	dataDir, natsAddr string // --data, --nats-addr
	natsHost          string
	natsPort          int // -1: any free port
	n                 natsConfig
	cc                consumer.Config
	sc                sinkConfig
	ic                ingest.Config
	ingestAddr        string // "off" for no ingest
	admin             adminConfig
	stubAddr          string
}

// readDev reads the settings of bhiv dev. The data paths follow dataDir
// unless set explicitly; the embedded server has no auth or TLS, and its
// stream is always managed.
func readDev(c *config, getenv func(string) string, dataDir, natsAddr string) (devConfig, error) {
	c.getenv = func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		switch k {
		case "BHIV_BUCKET_DIR":
			return filepath.Join(dataDir, "bucket")
		case "BHIV_FAILED_LOG":
			return filepath.Join(dataDir, "failed_core_sends.log")
		}
		return ""
	}
	d := devConfig{dataDir: dataDir, natsAddr: natsAddr}
	n := readNATS(c)
	d.n = natsConfig{stream: n.stream, manageStream: true, maxEventBytes: n.maxEventBytes}
	d.cc = readConsumer(c, d.n)
	d.sc = readSinks(c)
	d.ic, d.ingestAddr = readIngest(c, d.n)
	d.admin = readAdmin(c)
	d.stubAddr = c.str("BHIV_CORE_STUB_ADDR")
	host, portStr, err := net.SplitHostPort(natsAddr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil {
		c.errs = append(c.errs, fmt.Errorf("--nats-addr=%q: want host:port", natsAddr))
	}
	if err := c.err(); err != nil {
		return d, usageError{err}
	}
	if port == 0 {
		port = -1
	}
	d.natsHost, d.natsPort = host, port
	return d, nil
}

// startDevNATS starts the embedded NATS server with JetStream, its store
// under data/nats, and waits until it takes connections.
func startDevNATS(d devConfig) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "bhiv-dev", Host: d.natsHost, Port: d.natsPort, JetStream: true,
		StoreDir: filepath.Join(d.dataDir, "nats"), NoSigs: true, NoLog: true,
	})
	if err != nil {
		return nil, fmt.Errorf("dev: nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("dev: nats server did not start on %s (is the port in use? try --nats-addr 127.0.0.1:0)", d.natsAddr)
	}
	return ns, nil
}

// startDevStub makes the Core stub, with Core's token, and opens its
// listener.
func startDevStub(d devConfig, log *slog.Logger) (*corestub.Stub, net.Listener, error) {
	stub, err := corestub.New(corestub.Config{Token: d.sc.core.Token, Logger: log.With("component", "core-stub")})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", d.stubAddr)
	if err != nil {
		stub.Close()
		return nil, nil, fmt.Errorf("dev: core stub: listen on BHIV_CORE_STUB_ADDR=%s: %w", d.stubAddr, err)
	}
	return stub, ln, nil
}

// printDevBanner says where everything runs and how to send an event.
func printDevBanner(w io.Writer, d devConfig, stubURL string, ingestLn net.Listener) {
	ingestLine, curlLine := "", ""
	if ingestLn != nil {
		url := "http://" + ingestLn.Addr().String()
		ingestLine = fmt.Sprintf("  HTTP ingest       %s   POST %s{execution,reward}, POST %s\n", url, ingest.EventsPath, ingest.CorePath)
		auth := ""
		if d.ic.Token != "" {
			auth = ` -H "Authorization: Bearer $BHIV_INGEST_TOKEN"`
		}
		curlLine = fmt.Sprintf("  curl -i %s%sexecution -H 'Content-Type: application/json'%s -d '%s'\n", url, ingest.EventsPath, auth, devExample)
	}
	fmt.Fprintf(w, `bhiv dev is running:
  NATS (JetStream)  %s   store %s
  Core stub         %s   stats: curl %s/stats
%s  Bucket            %s
  Failure log       %s
Send an event:
  nats -s %s pub %s '%s'
%s  go run ./cmd/bhiv publish execution --nats-url %s --team team_42 --action analyze_data
Ctrl-C stops everything cleanly; the stream is kept for the next start.
`, d.n.url, filepath.Join(d.dataDir, "nats"), stubURL, stubURL, ingestLine, d.sc.bucketLocation(), d.sc.failed.Path,
		d.n.url, "bhiv.events.execution", devExample, curlLine, d.n.url)
}
