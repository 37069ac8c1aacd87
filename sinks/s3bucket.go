package sinks

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/lmittmann/tint"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
)

// Defaults of S3Config.
const (
	DefaultS3Endpoint      = "https://s3.amazonaws.com"
	DefaultS3Timeout       = 10 * time.Second
	DefaultS3Retries       = 3
	DefaultS3RetryDelay    = 100 * time.Millisecond
	DefaultS3RetryDelayMax = 2 * time.Second
)

// ConditionalWrites says how an S3Bucket keeps the first event written
// under an id.
type ConditionalWrites string

// The ways to keep the first event.
const (
	// ConditionalAuto finds out at start whether the store honours
	// If-None-Match on a PUT, and uses it when it does.
	ConditionalAuto ConditionalWrites = "auto"
	// ConditionalOn sends every PUT with If-None-Match: *, so that the
	// store itself refuses to replace an object (AWS S3 since 2024, MinIO,
	// Ceph RGW, ...). NewS3Bucket fails on a store that refuses it.
	ConditionalOn ConditionalWrites = "on"
	// ConditionalOff reads the key first and writes only when it is
	// absent. Between replicas this is racy: two replicas writing
	// different events under one id at the same moment may both succeed,
	// and the later write replaces the earlier. Only for stores without
	// conditional writes.
	ConditionalOff ConditionalWrites = "off"
)

// The ways to address a bucket.
const (
	S3LookupAuto = "auto" // virtual-host style on AWS and a few others, path style elsewhere
	S3LookupPath = "path" // http://endpoint/bucket/key: MinIO and most self-hosted stores
	S3LookupHost = "host" // http://bucket.endpoint/key
)

// S3Config configures an S3Bucket (or an S3Reader).
type S3Config struct {
	// Bucket is the bucket name; required.
	Bucket string
	// Prefix is put before every key, as <Prefix>/<kind>/<date>/<id>.json;
	// "" for none.
	Prefix string
	// Endpoint is the store's URL, http:// or https://; default
	// DefaultS3Endpoint (AWS S3).
	Endpoint string
	// Region is the bucket's region; "" finds it from the bucket.
	Region string
	// Lookup is S3LookupAuto (the default), S3LookupPath or S3LookupHost.
	Lookup string
	// CAFile, when set, holds the only certificates (PEM) trusted to
	// verify an https endpoint.
	CAFile string
	// AccessKeyID, SecretAccessKey and SessionToken are static
	// credentials. Without them, the shared credentials file (Profile in
	// CredentialsFile, default ~/.aws/credentials) and then the IAM role
	// of the machine, task or pod are tried, in that order.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Profile         string
	CredentialsFile string
	// Conditional is how the first event under an id is kept; default
	// ConditionalAuto.
	Conditional ConditionalWrites
	// Timeout bounds each request; default DefaultS3Timeout.
	Timeout time.Duration
	// Retries is how many times a request failing with a network error, a
	// timeout or a 5xx answer is retried; 0 means DefaultS3Retries, a
	// negative value none.
	Retries int
	// RetryDelay is the first wait between retries, doubling up to
	// RetryDelayMax; defaults DefaultS3RetryDelay, DefaultS3RetryDelayMax.
	RetryDelay    time.Duration
	RetryDelayMax time.Duration
	// MaxConns bounds the idle connections kept to the store; default 256.
	MaxConns int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default. A
// negative Retries stays as it is (none), so that applying the defaults
// twice changes nothing.
func (c S3Config) WithDefaults() S3Config {
	c.Prefix = strings.Trim(c.Prefix, "/")
	config.Default(&c.Endpoint, DefaultS3Endpoint)
	config.Default(&c.Lookup, S3LookupAuto)
	config.Default(&c.Conditional, ConditionalAuto)
	config.Default(&c.Timeout, DefaultS3Timeout)
	config.Default(&c.Retries, DefaultS3Retries)
	config.Default(&c.RetryDelay, DefaultS3RetryDelay)
	config.Default(&c.RetryDelayMax, max(DefaultS3RetryDelayMax, c.RetryDelay))
	config.Default(&c.MaxConns, 256)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c S3Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		errs = append(errs, fmt.Errorf("bucket: s3 bucket name %q: %w", c.Bucket, err))
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		errs = append(errs, fmt.Errorf("bucket: s3 endpoint %q: want http(s)://host[:port]", c.Endpoint))
	}
	switch c.Lookup {
	case S3LookupAuto, S3LookupPath, S3LookupHost:
	default:
		errs = append(errs, fmt.Errorf("bucket: s3 lookup %q: want auto, path or host", c.Lookup))
	}
	switch c.Conditional {
	case ConditionalAuto, ConditionalOn, ConditionalOff:
	default:
		errs = append(errs, fmt.Errorf("bucket: s3 conditional writes %q: want auto, on or off", c.Conditional))
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		errs = append(errs, errors.New("bucket: s3 access key id and secret access key go together"))
	}
	if c.Timeout < 0 || c.RetryDelay < 0 || c.RetryDelayMax < 0 {
		errs = append(errs, errors.New("bucket: s3 timeout and retry delays must not be negative"))
	}
	return errors.Join(errs...)
}

// Location returns the bucket as a URL, s3://<bucket>/<prefix>.
func (c S3Config) Location() string {
	return "s3://" + c.Bucket + "/" + strings.Trim(c.Prefix, "/")
}

// S3Reader reads the events of an S3 bucket.
type S3Reader struct {
	cfg       S3Config
	client    *minio.Client
	transport *http.Transport
	prefix    string // "" or ending in "/"
}

// NewS3Reader returns a reader of the bucket cfg names, once the store has
// answered that the bucket exists and may be read. A bad credential, a
// refused access or a missing bucket is a clear error.
func NewS3Reader(ctx context.Context, cfg S3Config) (*S3Reader, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	r := &S3Reader{cfg: cfg}
	if cfg.Prefix != "" {
		r.prefix = cfg.Prefix + "/"
	}
	if r.client, r.transport, err = newS3Client(cfg); err != nil {
		return nil, err
	}
	if err := r.checkBucket(ctx); err != nil {
		r.transport.CloseIdleConnections()
		return nil, err
	}
	return r, nil
}

// newS3Client returns a minio-go client for cfg, which must have its
// defaults. The client makes one attempt per call: retries are the
// caller's (failsafe-go), so that every one is counted and classified.
func newS3Client(cfg S3Config) (*minio.Client, *http.Transport, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: s3 endpoint: %w", err)
	}
	secure := u.Scheme == "https"
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: s3 transport: %w", err)
	}
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = cfg.MaxConns, cfg.MaxConns
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("bucket: s3 CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("bucket: s3 CA file %s holds no PEM certificate", cfg.CAFile)
		}
		if tr.TLSClientConfig != nil {
			tr.TLSClientConfig.RootCAs = pool
		}
	}
	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.FileAWSCredentials{Filename: cfg.CredentialsFile, Profile: cfg.Profile},
			&credentials.IAM{},
		})
	}
	lookup := minio.BucketLookupAuto
	switch cfg.Lookup {
	case S3LookupPath:
		lookup = minio.BucketLookupPath
	case S3LookupHost:
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds: creds, Secure: secure, Transport: tr, Region: cfg.Region,
		BucketLookup: lookup, MaxRetries: 1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: s3 client for %s: %w", cfg.Endpoint, err)
	}
	return client, tr, nil
}

// checkBucket asks the store whether the bucket exists, retrying what may
// pass, and says plainly what is wrong when it is not there or not ours.
func (r *S3Reader) checkBucket(ctx context.Context) error {
	var exists bool
	err := r.retrying(ctx, func(ctx context.Context) error {
		var err error
		exists, err = r.client.BucketExists(ctx, r.cfg.Bucket)
		return err
	})
	if err == nil && !exists {
		err = minio.ErrorResponse{Code: "NoSuchBucket", StatusCode: http.StatusNotFound, BucketName: r.cfg.Bucket}
	}
	return r.startErr("find bucket", err)
}

// startErr turns an error of the start-up checks into one that says what
// to fix.
func (r *S3Reader) startErr(what string, err error) error {
	if err == nil {
		return nil
	}
	where := fmt.Sprintf("%s at %s", r.cfg.Location(), r.cfg.Endpoint)
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("bucket: %s: %s: %w", where, what, err)
	}
	code, _ := s3Code(err)
	switch classifyS3(err) {
	case s3Config:
		if code == "NoSuchBucket" {
			return fmt.Errorf("bucket: %s: %s: the bucket does not exist; create it first (mc mb, aws s3 mb): %w", where, what, err)
		}
		return fmt.Errorf("bucket: %s: %s: access refused (%s): check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, the IAM role), the bucket policy and BHIV_S3_REGION: %w", where, what, code, err)
	case s3Retry:
		return fmt.Errorf("bucket: %s: %s: the store cannot be reached or fails (check BHIV_S3_ENDPOINT): %w", where, what, err)
	}
	return fmt.Errorf("bucket: %s: %s: %w", where, what, err)
}

// retrying calls fn, with the request timeout, until it succeeds, fails
// with an error a retry cannot fix, or the retries run out.
func (r *S3Reader) retrying(ctx context.Context, fn func(context.Context) error) error {
	return failsafe.With(r.retryPolicy(nil)).WithContext(ctx).Run(func() error {
		actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		return fn(actx)
	})
}

// retryPolicy retries what classifyS3 says may pass, with exponential
// backoff and jitter.
func (r *S3Reader) retryPolicy(log *slog.Logger) retrypolicy.RetryPolicy[any] {
	b := retrypolicy.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return err != nil && classifyS3(err) == s3Retry }).
		WithMaxRetries(max(r.cfg.Retries, 0)).
		WithBackoff(r.cfg.RetryDelay, r.cfg.RetryDelayMax).
		WithJitterFactor(0.2).
		ReturnLastFailure()
	if log != nil {
		b = b.OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[any]) {
			log.Warn("bucket: S3 request failed, retrying", "attempt", e.Attempts(), "delay", e.Delay, tint.Err(e.LastError()))
		})
	}
	return b.Build()
}

// object returns the object name of a key.
func (r *S3Reader) object(key string) string { return r.prefix + key }

// List calls fn with the key of every event object under the prefix.
func (r *S3Reader) List(ctx context.Context, fn func(key string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing goroutine when fn stops early
	for obj := range r.client.ListObjects(ctx, r.cfg.Bucket, minio.ListObjectsOptions{Prefix: r.prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("bucket: list %s: %w", r.cfg.Location(), obj.Err)
		}
		key := strings.TrimPrefix(obj.Key, r.prefix)
		if hiddenKey(key) {
			continue
		}
		if err := fn(key); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Read returns the bytes of the object under key, or an error wrapping
// fs.ErrNotExist when there is none. It makes a single attempt.
func (r *S3Reader) Read(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	obj, err := r.client.GetObject(ctx, r.cfg.Bucket, r.object(key), minio.GetObjectOptions{})
	var data []byte
	if err == nil {
		data, err = io.ReadAll(obj)
		_ = obj.Close()
	}
	if err != nil {
		if code, _ := s3Code(err); code == "NoSuchKey" {
			return nil, fmt.Errorf("bucket: read %s/%s: %w", r.cfg.Location(), key, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("bucket: read %s/%s: %w", r.cfg.Location(), key, err)
	}
	return data, nil
}

// Close releases the connections.
func (r *S3Reader) Close() error {
	r.transport.CloseIdleConnections()
	return nil
}

// S3Bucket is the Bucket sink on S3-compatible object storage (AWS S3,
// MinIO, Ceph RGW, GCS's S3 API, ...), for replicas on several machines:
// each event is one object <prefix>/<kind>/<YYYY-MM-DD>/<id>.json holding
// the same bytes as the file Bucket's file (the envelope and a newline),
// under the name "bucket", so that failure records, replay and the audit
// do not care which one ran.
//
// The promises are the file Bucket's:
//
//   - An object exists whole or not at all: each event is one PUT (never a
//     multipart upload) with a Content-MD5 the store checks.
//   - The first event under an id wins. With conditional writes (the
//     default where the store has them) the PUT carries If-None-Match: *
//     and the store itself refuses to replace an object; on 412 the object
//     there is read: the same event (sameJSON, as the file Bucket compares)
//     is a success, a different one a permanent error wrapping ErrConflict.
//     Without them (ConditionalOff, or a store found at start to ignore
//     or refuse the header) the key is read first and written only when
//     absent, which is racy between replicas (see ConditionalOff).
//   - A store that cannot be reached or refuses (connection refused,
//     timeouts, 5xx, 503 SlowDown, once the retries are spent) is an
//     outage, as is a refused access (403, a missing bucket) that appears
//     after start, logged as a configuration problem: Deliver's error
//     wraps bhiv.ErrUnavailable and Available reports false until a probe
//     (a small PUT, at most every 500 ms) succeeds, so that the consumer
//     holds events in JetStream and pauses intake, as for Core.
//   - Other answers about one object (a 4xx other than the above) are that
//     event's own failure when a probe still succeeds: a permanent error,
//     to the failure log.
//
// Requests are retried with exponential backoff (failsafe-go) and each is
// bounded by the request timeout. An S3Bucket is safe for concurrent use.
type S3Bucket struct {
	*S3Reader
	log   *slog.Logger
	retry retrypolicy.RetryPolicy[any]

	conditional atomic.Bool // PUTs carry If-None-Match: *

	// Outage: the store takes nothing.
	outage
	probing  sync.WaitGroup // the background probe, when one runs
	base     context.Context
	stop     context.CancelFunc
	closed   atomic.Bool
	probeKey string
	probed   atomic.Bool // the probe object was written: Close removes it
}

// NewS3Bucket returns an S3Bucket once the store has answered that the
// bucket exists and takes a write (a probe object, removed again), and
// found whether it honours If-None-Match when cfg.Conditional is auto. A
// bad credential, a refused access, a missing bucket, an unreachable store
// or (with ConditionalOn) a store without conditional writes is a clear
// error.
func NewS3Bucket(ctx context.Context, cfg S3Config) (*S3Bucket, error) {
	r, err := NewS3Reader(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b := &S3Bucket{S3Reader: r, log: r.cfg.Logger}
	b.retry = r.retryPolicy(b.log)
	b.base, b.stop = context.WithCancel(context.Background())
	b.probeKey = ".bhiv/probe-" + pidTag
	if err := b.detect(ctx); err != nil {
		b.stop()
		r.transport.CloseIdleConnections()
		return nil, err
	}
	mode := "conditional (If-None-Match: *)"
	if !b.conditional.Load() {
		mode = "read, compare, then put (racy between replicas)"
	}
	b.log.Info("bucket: S3", "location", r.cfg.Location(), "endpoint", r.cfg.Endpoint, "first_write_wins", mode)
	return b, nil
}

// detect writes a fresh probe object, with If-None-Match: * unless
// conditional writes are off, and then again: a store that honours the
// header refuses the second write (412). It removes the probe.
func (b *S3Bucket) detect(ctx context.Context) error {
	key := b.probeKey + "-" + randomSuffix()
	defer b.removeProbe(key)
	mode := b.cfg.Conditional
	if err := b.retrying(ctx, func(ctx context.Context) error { return b.put(ctx, key, bucketProbeData, mode != ConditionalOff) }); err != nil {
		if classifyS3(err) != s3Unsupported {
			return b.startErr("write a probe object", err)
		}
		if mode == ConditionalOn {
			return b.startErr("write a probe object with If-None-Match: * (set BHIV_S3_CONDITIONAL_WRITES=false for a store without conditional writes)", err)
		}
		b.log.Warn("bucket: the S3 store refuses conditional writes (If-None-Match: *); the first event under an id is kept by reading before writing, which is racy between replicas")
		return b.startErr("write a probe object", b.retrying(ctx, func(ctx context.Context) error { return b.put(ctx, key, bucketProbeData, false) }))
	}
	if mode == ConditionalOff {
		return nil
	}
	err := b.retrying(ctx, func(ctx context.Context) error { return b.put(ctx, key, bucketProbeData, true) })
	switch classifyS3(err) {
	case s3Exists:
		b.conditional.Store(true)
		return nil
	case s3OK, s3Unsupported:
		if mode == ConditionalOn {
			return b.startErr("check conditional writes", fmt.Errorf("the store replaced an object despite If-None-Match: * (set BHIV_S3_CONDITIONAL_WRITES=false for a store without conditional writes)"))
		}
		b.log.Warn("bucket: the S3 store ignores conditional writes (If-None-Match: *); the first event under an id is kept by reading before writing, which is racy between replicas")
		return nil
	}
	return b.startErr("write a probe object again", err)
}

// removeProbe removes a probe object, if the credentials allow it (an
// append-only policy may not: the probes then stay, a few small objects
// per start under <prefix>/.bhiv/, which List leaves out).
func (b *S3Bucket) removeProbe(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	if err := b.client.RemoveObject(ctx, b.cfg.Bucket, b.object(key), minio.RemoveObjectOptions{}); err != nil {
		b.log.Debug("bucket: cannot remove a probe object", "key", b.object(key), tint.Err(err))
	}
}

// Name returns "bucket".
func (b *S3Bucket) Name() string { return BucketName }

// Deliver writes the event to its object. It returns nil once the store
// holds it (or the same event was there already). Otherwise it returns a
// *bhiv.SinkError with Sink "bucket": permanent when the event cannot make
// a key, when a different event holds its id (ErrConflict) or when the
// store refuses this object alone; retryable_exhausted wrapping
// bhiv.ErrUnavailable when the store is down or refuses access. When ctx
// ends first, it returns promptly an error that wraps ctx.Err() and is not
// a *bhiv.SinkError (a write may still complete). After Close it returns an
// error wrapping ErrClosed.
func (b *S3Bucket) Deliver(ctx context.Context, ev *bhiv.Event) error {
	key, err := EventKey(ev)
	if err != nil {
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Err: fmt.Errorf("bucket key: %w", err)}
	}
	where := b.cfg.Location() + "/" + key
	attempts, err, done := storeEvent(ctx, ev, where, b.closed.Load(), b.retry, func(data []byte) error {
		return b.write(ctx, key, data)
	})
	if done {
		if err == nil {
			b.up()
		}
		return err
	}
	err = fmt.Errorf("write %s: %w", where, err)
	switch classifyS3(err) {
	case s3Retry, s3Config:
		b.setDown(err)
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts,
			Err: fmt.Errorf("%w: %w", bhiv.ErrUnavailable, err)}
	}
	// This object alone, or the whole store? A probe tells.
	if perr := b.probe(ctx); perr != nil && ctx.Err() == nil {
		b.setDown(perr)
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts,
			Err: fmt.Errorf("%w: %w (a probe failed too: %v)", bhiv.ErrUnavailable, err, perr)}
	}
	return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Attempts: attempts, Err: err}
}

// write makes one attempt at storing data under key, keeping the first
// event written there.
func (b *S3Bucket) write(ctx context.Context, key string, data []byte) error {
	if !b.conditional.Load() {
		return b.readThenPut(ctx, key, data)
	}
	err := b.put(ctx, key, data, true)
	switch classifyS3(err) {
	case s3OK:
		return nil
	case s3Exists:
		return b.compare(ctx, key, data)
	case s3Unsupported:
		// Found at start to honour it, refusing it now (a store replaced
		// behind a load balancer?): go on without.
		if b.conditional.Swap(false) {
			b.log.Warn("bucket: the S3 store now refuses conditional writes (If-None-Match: *); reading before writing from now on, which is racy between replicas", tint.Err(err))
		}
		return b.readThenPut(ctx, key, data)
	}
	return err
}

// errVanished is the retryable failure of a write refused because an
// object was there, which was gone when read.
var errVanished = errors.New("the object that refused the write is gone")

// compare reads the object under key and succeeds when it holds the same
// event as data.
func (b *S3Bucket) compare(ctx context.Context, key string, data []byte) error {
	existing, err := b.Read(ctx, key)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read existing %s: %w", key, errVanished)
	case err != nil:
		return err
	case !sameJSON(existing, data):
		return fmt.Errorf("bucket: %s/%s: %w", b.cfg.Location(), key, ErrConflict)
	}
	return nil
}

// readThenPut writes data under key unless an object is there: without
// conditional writes, two replicas may both find the key free.
func (b *S3Bucket) readThenPut(ctx context.Context, key string, data []byte) error {
	err := b.compare(ctx, key, data)
	if !errors.Is(err, errVanished) {
		return err
	}
	return b.put(ctx, key, data, false)
}

// put makes one PUT of data under key, with If-None-Match: * when ifAbsent.
func (b *S3Bucket) put(ctx context.Context, key string, data []byte, ifAbsent bool) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	opts := minio.PutObjectOptions{ContentType: "application/json", SendContentMd5: true, DisableMultipart: true}
	if ifAbsent {
		opts.SetMatchETagExcept("*")
	}
	_, err := b.client.PutObject(ctx, b.cfg.Bucket, b.object(key), bytes.NewReader(data), int64(len(data)), opts)
	return err
}

// bucketProbeData is what a probe object holds.
var bucketProbeData = []byte("bhiv probe\n")

// probe writes this process's probe object once, without retries.
func (b *S3Bucket) probe(ctx context.Context) error {
	err := b.put(ctx, b.probeKey, bucketProbeData, false)
	if err == nil {
		b.probed.Store(true)
	}
	return err
}

// setDown marks the store down after err, logging it once.
func (b *S3Bucket) setDown(err error) {
	if !b.markDown() {
		return
	}
	if classifyS3(err) == s3Config {
		code, _ := s3Code(err)
		b.log.Error("bucket: unavailable: the S3 store refuses access, a configuration problem (credentials, bucket policy, bucket, region); events wait until it is fixed",
			"location", b.cfg.Location(), "endpoint", b.cfg.Endpoint, "code", code, tint.Err(err))
		return
	}
	b.log.Warn("bucket: unavailable, events wait until it can be written again", "location", b.cfg.Location(), "endpoint", b.cfg.Endpoint, tint.Err(err))
}

// up marks the store available again.
func (b *S3Bucket) up() {
	if b.down.Swap(false) {
		b.log.Info("bucket: available again", "location", b.cfg.Location())
	}
}

// Available reports whether the store takes objects: false after it was
// found down, until a probe succeeds. Probes run in the background, at
// most every 500ms, so that Available never waits for the store.
func (b *S3Bucket) Available() bool {
	return b.available(func() bool {
		if b.closed.Load() {
			return false
		}
		b.nextProbe = time.Now().Add(time.Hour) // until this probe is over
		b.probing.Go(func() {
			err := b.probe(b.base)
			b.probeMu.Lock()
			b.nextProbe = time.Now().Add(bucketProbeEvery)
			b.probeMu.Unlock()
			if err == nil {
				b.up()
			}
		})
		return false
	})
}

// Close stops the probes, removes this process's probe object and releases
// the connections. Deliver fails with ErrClosed afterwards.
func (b *S3Bucket) Close() error {
	b.probeMu.Lock() // no probe starts after this
	already := b.closed.Swap(true)
	b.probeMu.Unlock()
	if already {
		return nil
	}
	b.stop()
	b.probing.Wait()
	if b.probed.Load() {
		b.removeProbe(b.probeKey)
	}
	return b.S3Reader.Close()
}

// s3Outcome is what one request's result means.
type s3Outcome int

const (
	s3OK          s3Outcome = iota // done
	s3Exists                       // 412: an object is there (conditional PUT)
	s3Retry                        // worth another attempt; when the retries run out, an outage
	s3Config                       // access refused: an outage, and a configuration problem
	s3Unsupported                  // 501: the store does not have what was asked (conditional writes)
	s3Permanent                    // about this request alone: no retry can change it
)

// s3RetryCodes are the S3 error codes worth another attempt, whatever the
// status.
var s3RetryCodes = map[string]bool{
	"SlowDown": true, "RequestTimeout": true, "InternalError": true, "ServiceUnavailable": true,
	"OperationAborted": true, "ConditionalRequestConflict": true, // 409: a concurrent write of the key
	"BadDigest": true, "IncompleteBody": true, "XAmzContentSHA256Mismatch": true, // damaged on the way
}

// s3ConfigCodes are the S3 error codes that say the store refuses us, not
// the object.
var s3ConfigCodes = map[string]bool{
	"AccessDenied": true, "AllAccessDisabled": true, "AccountProblem": true,
	"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true, "ExpiredToken": true,
	"InvalidToken": true, "TokenRefreshRequired": true, "NoSuchBucket": true,
	"PermanentRedirect": true, "AuthorizationHeaderMalformed": true, "InvalidRegion": true,
	"RequestTimeTooSkewed": true, "InvalidBucketName": true,
}

// classifyS3 is the one table that decides every request's result:
//
//	nil                                               done
//	412 PreconditionFailed                            an object is there
//	501 NotImplemented                                unsupported
//	no S3 answer: network error, timeout, torn body   retryable
//	SlowDown, RequestTimeout, InternalError, 409      retryable
//	  ConditionalRequestConflict, BadDigest, ...
//	408, 429, 5xx                                     retryable
//	401, 403, AccessDenied, InvalidAccessKeyId,       access refused (configuration)
//	  SignatureDoesNotMatch, ExpiredToken, NoSuchBucket,
//	  PermanentRedirect, AuthorizationHeaderMalformed, RequestTimeTooSkewed
//	any other S3 error (other 4xx)                    permanent for this object
//
// The caller's own context ending is checked by the caller before this
// table is asked.
func classifyS3(err error) s3Outcome {
	if err == nil {
		return s3OK
	}
	if errors.Is(err, errVanished) {
		return s3Retry
	}
	code, status := s3Code(err)
	switch {
	case status == 0 && code == "":
		return s3Retry // no answer from the store
	case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
		return s3Exists
	case status == http.StatusNotImplemented || code == "NotImplemented":
		return s3Unsupported
	case s3ConfigCodes[code], status == http.StatusUnauthorized, status == http.StatusForbidden:
		return s3Config
	case s3RetryCodes[code], status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return s3Retry
	}
	return s3Permanent
}

// s3Code returns the S3 error code and HTTP status of err, or "" and 0 when
// the store did not answer with an error.
func s3Code(err error) (code string, status int) {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code, er.StatusCode
	}
	return "", 0
}
