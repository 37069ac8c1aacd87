package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/hackaverse/bhiv/sinks"
)

// natsConfig holds the NATS settings.
type natsConfig struct {
	url, creds, user, password, token, nkeySeed, ca, cert, key string
	stream                                                     bhiv.StreamConfig
	manageStream                                               bool
	maxEventBytes                                              int
}

// readNATS reads and checks the NATS settings.
func readNATS(c *config) natsConfig {
	n := natsConfig{
		url:      c.str("NATS_URL"),
		creds:    c.str("NATS_CREDS"),
		user:     c.str("NATS_USER"),
		password: c.str("NATS_PASSWORD"),
		token:    c.str("NATS_TOKEN"),
		nkeySeed: c.str("NATS_NKEY_SEED"),
		ca:       c.str("NATS_CA"),
		cert:     c.str("NATS_CERT"),
		key:      c.str("NATS_KEY"),
		stream: bhiv.StreamConfig{
			Name:          c.str("BHIV_STREAM"),
			SubjectPrefix: c.str("BHIV_SUBJECT_PREFIX"),
			Replicas:      c.int("BHIV_STREAM_REPLICAS", 1),
			MaxAge:        c.dur("BHIV_STREAM_MAX_AGE", 0),
		},
		manageStream:  c.bool("BHIV_MANAGE_STREAM"),
		maxEventBytes: c.int("BHIV_MAX_EVENT_BYTES", 1),
	}
	var err error
	n.stream.MaxBytes, err = parseSize(c.str("BHIV_STREAM_MAX_BYTES"))
	c.check("BHIV_STREAM_MAX_BYTES", err)
	switch {
	case n.stream.MaxAge == 0:
		n.stream.MaxAge = bhiv.NoMaxAge // 0 means none here, the default in bhiv.StreamConfig
	case n.stream.MaxAge < bhiv.DefaultStreamDuplicates:
		c.check("BHIV_STREAM_MAX_AGE", fmt.Errorf("must be 0 or at least %s (the de-duplication window)", bhiv.DefaultStreamDuplicates))
	}
	if n.url == "" {
		c.check("NATS_URL", errors.New("is empty"))
	}
	if !bhiv.ValidStreamName(n.stream.Name) {
		c.check("BHIV_STREAM", errors.New("use letters, digits, - and _ only"))
	}
	c.check("BHIV_SUBJECT_PREFIX", bhiv.ValidSubjectPrefix(n.stream.SubjectPrefix))
	if (n.user == "") != (n.password == "") {
		c.check("NATS_USER", errors.New("NATS_USER and NATS_PASSWORD go together"))
	}
	if (n.cert == "") != (n.key == "") {
		c.check("NATS_CERT", errors.New("NATS_CERT and NATS_KEY go together"))
	}
	methods := 0
	for _, v := range []string{n.creds, n.user, n.token, n.nkeySeed} {
		if v != "" {
			methods++
		}
	}
	if methods > 1 {
		c.check("NATS_CREDS", errors.New("set only one of NATS_CREDS, NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED"))
	}
	return n
}

// connect connects to NATS with the configured auth and TLS, reconnecting
// forever once connected. A first connection that fails (wrong credentials,
// no server) is an error within ctx's deadline, not a hang.
func connect(ctx context.Context, n natsConfig, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", tint.Err(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", sinks.RedactURL(nc.ConnectedUrlRedacted())) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats error", tint.Err(err)) }),
	}
	auth, err := natsAuth(n)
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	type result struct {
		nc  *nats.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(n.url, opts...)
		ch <- result{nc, err}
	}()
	select {
	case r := <-ch:
		var verr *tls.CertificateVerificationError
		if errors.Is(r.err, nats.ErrTLS) && !errors.As(r.err, &verr) {
			// A server that refuses the client certificate (or its
			// absence) may close the connection right after the
			// handshake, without saying why.
			return nil, fmt.Errorf("connect to NATS at %s: TLS failed; does the server require a client certificate (NATS_CERT, NATS_KEY)?: %w", sinks.RedactURL(n.url), r.err)
		}
		if r.err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", sinks.RedactURL(n.url), r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("connect to NATS at %s: %w", sinks.RedactURL(n.url), ctx.Err())
	}
}

// natsAuth returns the auth and TLS options of the settings.
func natsAuth(n natsConfig) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case n.creds != "":
		if _, err := os.Stat(n.creds); err != nil {
			return nil, fmt.Errorf("NATS_CREDS: %w", err)
		}
		opts = append(opts, nats.UserCredentials(n.creds))
	case n.user != "":
		opts = append(opts, nats.UserInfo(n.user, n.password))
	case n.token != "":
		opts = append(opts, nats.Token(n.token))
	case n.nkeySeed != "":
		opt, err := nats.NkeyOptionFromSeed(n.nkeySeed)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_SEED: %w", err)
		}
		opts = append(opts, opt)
	}
	if n.ca != "" {
		opts = append(opts, nats.RootCAs(n.ca))
	}
	if n.cert != "" {
		opts = append(opts, nats.ClientCert(n.cert, n.key))
	}
	return opts, nil
}

// jetStream returns the JetStream context of nc and, when managing the
// stream, makes sure the stream exists.
func jetStream(ctx context.Context, nc *nats.Conn, n natsConfig) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if n.manageStream {
		if _, err := jsstream.Ensure(ctx, js, n.stream); err != nil {
			return nil, err
		}
	}
	return js, nil
}
