package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/audit"
)

// runAudit reconciles the stream with Core (when its record is given), the
// bucket and the failure log, and fails when any event is lost.
func runAudit(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("audit", e)
	c := newConfig(fs, e.getenv, natsSettings, bucketSettings, failureSettings, consumerSettings, logSettings)
	coreRecord := fs.String("core-record", "", "JSON Lines record of what Core received (bhiv core-stub --record); without it Core is not checked")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	wait := fs.Duration("wait", 0, "wait up to this long for the consumer to have nothing pending before judging")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	bucketDir := c.str("BHIV_BUCKET_DIR")
	failedLog := c.str("BHIV_FAILED_LOG")
	durable := c.str("BHIV_CONSUMER")
	if err := c.err(); err != nil {
		return usageError{err}
	}
	var coreSeen map[string]int
	if *coreRecord != "" {
		var err error
		if coreSeen, err = audit.ReadCoreRecord(*coreRecord); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	nc, err := connect(cctx, n, "bhiv audit", log)
	cancel()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := audit.Config{JS: js, Stream: n.stream.Name, Durable: durable, BucketDir: bucketDir, FailureLog: failedLog,
		CoreSeen: coreSeen, Logger: log, Decode: bhiv.DecodeOptions{SubjectPrefix: n.stream.SubjectPrefix, MaxBytes: n.maxEventBytes}}
	if *wait > 0 {
		waitIdle(ctx, js, n.stream.Name, durable, *wait)
	}
	r, err := audit.Check(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		fmt.Fprint(e.stdout, r.String())
	}
	if !r.OK() {
		return fmt.Errorf("audit: %d event(s) lost", len(r.Lost))
	}
	if r.Pending > 0 {
		return errors.New("audit: the consumer has not processed everything yet (pending > 0); run again later or with --wait")
	}
	return nil
}

// waitIdle waits, up to d, until the durable has nothing pending or ack-pending.
func waitIdle(ctx context.Context, js jetstream.JetStream, stream, durable string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cons, err := js.Consumer(ctx, stream, durable)
		if err == nil {
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}
