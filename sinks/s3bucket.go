package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/lmittmann/tint"
	"github.com/minio/minio-go/v7"

	"github.com/hackaverse/bhiv"
)

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
