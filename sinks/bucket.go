package sinks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/lmittmann/tint"
)

// BucketName is the name of the Bucket sink, as found in SinkError.Sink and
// in failure records.
const BucketName = "bucket"

// Defaults of BucketConfig.
const (
	DefaultBucketDir        = "./data/bucket"
	DefaultBucketRetries    = 3
	DefaultBucketRetryDelay = 100 * time.Millisecond
)

// Permissions of what the Bucket sink creates.
const (
	bucketDirPerm  fs.FileMode = 0o750
	bucketFilePerm fs.FileMode = 0o640
)

// BucketConfig configures the Bucket sink. The zero value is valid: events
// go to DefaultBucketDir, durably.
type BucketConfig struct {
	// Dir is the bucket directory; default DefaultBucketDir.
	Dir string
	// NoFsync turns durability off (BHIV_BUCKET_FSYNC=false): a write
	// returns once the file is renamed into place, without waiting for the
	// disk. The default is durable.
	NoFsync bool
	// Retries is how many times a write failing with a disk error is
	// retried; 0 means DefaultBucketRetries, a negative value none.
	Retries int
	// RetryDelay is the wait between retries; default DefaultBucketRetryDelay.
	RetryDelay time.Duration
	// Logger receives warnings about retried writes; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default. A
// negative Retries stays as it is (none), so that applying the defaults
// twice changes nothing.
func (c BucketConfig) WithDefaults() BucketConfig {
	config.Default(&c.Dir, DefaultBucketDir)
	config.Default(&c.Retries, DefaultBucketRetries)
	config.Default(&c.RetryDelay, DefaultBucketRetryDelay)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c BucketConfig) Validate() error {
	c = c.WithDefaults()
	if c.RetryDelay < 0 {
		return fmt.Errorf("bucket: retry delay %s is negative", c.RetryDelay)
	}
	return nil
}

// Bucket is the Bucket sink: it writes each event as one JSON file at
// <dir>/<kind>/<YYYY-MM-DD>/<id>.json, the date being that of the event time
// in UTC.
//
// A write is crash-safe: the envelope goes to a temporary file (under
// <dir>/.tmp/, see tempShards), which is made durable and then renamed into
// place without replacing anything, and the rename is made durable in turn;
// a crash never leaves a partial <id>.json, and the temporary files a crash
// leaves are removed by NewBucket. Writing the same event twice leaves one
// file with the same content.
//
// With durability on (the default), the syncs of concurrent writes are
// grouped (group commit) by one syncer goroutine, in pipelined rounds: a
// writer writes its temporary file and hands it over; a round makes durable
// with one syncfs(2) the data of every file handed over since the last
// round together with the renames done since the last round; between
// rounds the syncer renames into place the files whose data the round just
// made durable, and the next round makes those renames durable. The writer
// is woken once, when both the data and the rename of its file are durable;
// only then does Deliver return. Each file is synced on the file system it
// is on (a kind or date directory may be a mount of its own, and a volume
// may be mounted over the bucket directory after start): a round runs one
// syncfs per file system among its files, through a directory kept open on
// each until Close. syncfs flushes a whole file system: on a disk shared
// with heavy writers, put the bucket on a file system of its own.
//
// Disk errors (ENOSPC, EACCES, EROFS, EIO, ...) are retried a few times
// (failsafe-go); the error then names the path and says why.
//
// A Bucket is safe for concurrent use.
type Bucket struct {
	cfg   BucketConfig
	dir   string // absolute, clean
	log   *slog.Logger
	retry retrypolicy.RetryPolicy[any]

	dirs sync.Map // directory path → *bucketDir: directories known to exist

	// The group-commit syncer (durable mode only).
	// fsDirs holds, for each file system the bucket has written to, a
	// directory open on it, for syncfs (the syncer's alone after NewBucket).
	fsDirs     map[fsID]*os.File
	fsSeen     []fsID // the file systems of a round (the syncer's scratch)
	mu         sync.Mutex
	cond       *sync.Cond
	pending    []*syncItem // handed over, waiting for the next round
	closing    bool
	syncerDone chan struct{}

	// Outage: the bucket directory itself cannot take a file.
	outage

	syncs     atomic.Int64 // syncfs rounds, for the benchmarks
	synced    atomic.Int64 // files they served (a file is in two rounds)
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// Temporary files: the shard directories, taken in turn.
	shards      [tempShards]string
	nextShard   atomic.Uint32
	tempInPlace atomic.Bool // EXDEV seen: temp files next to their final file

	ops fileOps // the system calls that order a write; tests watch them
}

// fsID names the file system a file is on, so that the syncer syncs each
// file on its own: the id of its mount (statx STATX_MNT_ID), or, on kernels
// without it, its device with fsByDev set. Files of one mount share its
// super block; a file's own device would not do (overlayfs reports, for
// files, the device of the layer they come from).
type fsID uint64

const fsByDev fsID = 1 << 63

// NewBucket returns a Bucket writing under cfg.Dir. It creates the directory
// (0750) when missing and removes the temporary files a crash left there.
func NewBucket(cfg BucketConfig) (*Bucket, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("bucket: dir %q: %w", cfg.Dir, err)
	}
	b := &Bucket{cfg: cfg, dir: dir, log: cfg.Logger, ops: osOps{}}
	for i := range b.shards {
		b.shards[i] = filepath.Join(dir, tempDirName, fmt.Sprintf("%02d", i))
	}
	if err := b.mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("bucket: %w", err)
	}
	if err := b.removeStaleTemps(); err != nil {
		return nil, fmt.Errorf("bucket: %w", err)
	}
	b.retry = retrypolicy.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return retryableDisk(err) }).
		WithMaxRetries(max(cfg.Retries, 0)).
		WithDelay(cfg.RetryDelay).
		ReturnLastFailure().
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[any]) {
			b.log.Warn("bucket: write failed, retrying", "attempt", e.Attempts(), "delay", e.Delay, tint.Err(e.LastError()))
		}).
		Build()
	if !cfg.NoFsync {
		b.fsDirs = map[fsID]*os.File{}
		if haveSyncfs {
			// Opened now, so that a sync reports the write-back errors of
			// the bucket's file system from now on.
			root, id, err := openFS(dir)
			if err != nil {
				return nil, fmt.Errorf("bucket: %w", diskErr("open", dir, err))
			}
			b.fsDirs[id] = root
		}
		b.cond = sync.NewCond(&b.mu)
		b.syncerDone = make(chan struct{})
		go b.syncLoop()
	}
	return b, nil
}

// Name returns "bucket".
func (b *Bucket) Name() string { return BucketName }

// Dir returns the absolute bucket directory.
func (b *Bucket) Dir() string { return b.dir }

// EventKey returns where a bucket keeps the event, relative to its root:
// <kind>/<YYYY-MM-DD>/<id>.json, the date being that of the event time in
// UTC, with slashes. Both buckets, the file one and the S3 one, and the
// audit use it. It fails when the event's kind, id or time cannot make a
// safe key.
func EventKey(ev *bhiv.Event) (string, error) {
	if ev == nil {
		return "", errors.New("no event")
	}
	kind := ev.Kind()
	if !kind.Valid() {
		return "", &bhiv.DecodeError{Reason: bhiv.ErrUnknownKind, Detail: fmt.Sprintf("type %q is not one of bhiv.execution, bhiv.reward", ev.Type)}
	}
	if err := bhiv.CheckID(ev.ID); err != nil {
		return "", err
	}
	if ev.Time.IsZero() {
		return "", &bhiv.DecodeError{Reason: bhiv.ErrInvalidEnvelope, Detail: "time is missing"}
	}
	return string(kind) + "/" + ev.Time.UTC().Format(time.DateOnly) + "/" + ev.ID + ".json", nil
}

// Path returns the file the event is written to. It fails when the event's
// kind, id or time cannot make a safe path; the path is always inside the
// bucket directory.
func (b *Bucket) Path(ev *bhiv.Event) (string, error) {
	key, err := EventKey(ev)
	if err != nil {
		return "", err
	}
	p := filepath.Join(b.dir, filepath.FromSlash(key))
	// The parts above cannot leave the bucket; check anyway.
	if filepath.Dir(filepath.Dir(filepath.Dir(p))) != b.dir {
		return "", &bhiv.DecodeError{Reason: bhiv.ErrInvalidID, Detail: fmt.Sprintf("path %q leaves the bucket", p)}
	}
	return p, nil
}

// Deliver writes the event to its file. It returns nil once the file is in
// place (and durable, unless NoFsync). Otherwise it returns a
// *bhiv.SinkError with Sink "bucket": permanent when the event cannot make a
// safe path, retryable_exhausted when disk errors outlasted the retries.
// When ctx ends first, it returns promptly an error that wraps ctx.Err() and
// is not a *bhiv.SinkError (a write may still complete). After Close it
// returns an error wrapping ErrClosed.
func (b *Bucket) Deliver(ctx context.Context, ev *bhiv.Event) error {
	path, err := b.Path(ev)
	if err != nil {
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Err: fmt.Errorf("bucket path: %w", err)}
	}
	attempts, err, done := storeEvent(ctx, ev, path, b.closed.Load(), b.retry, func(data []byte) error {
		return b.write(ctx, path, data)
	})
	if done {
		return err
	}
	if perr := b.probe(); perr != nil {
		// Not this event's path: the bucket cannot take any file. Say so
		// (bhiv.ErrUnavailable), so that the event waits for the bucket
		// instead of going to the failure log, as during a Core outage.
		if b.markDown() {
			b.log.Warn("bucket: unavailable, events wait until it can be written again", "dir", b.dir, tint.Err(perr))
		}
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts,
			Err: fmt.Errorf("%w: %w", bhiv.ErrUnavailable, err)}
	}
	return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts, Err: err}
}

// Close stops the syncer after it has finished every write in flight.
// Deliver fails with ErrClosed afterwards.
func (b *Bucket) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if b.syncerDone == nil {
			return
		}
		b.mu.Lock()
		b.closing = true
		b.mu.Unlock()
		b.cond.Broadcast()
		<-b.syncerDone
		var errs []error
		for _, f := range b.fsDirs {
			errs = append(errs, f.Close())
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// storeEvent is what both buckets do to store ev at where (a file path or
// an object's location): refuse after Close or once ctx has ended, make the
// stored bytes (the envelope and a newline), write them with the retry
// policy, and turn into Deliver's answer every result that does not depend
// on the kind of bucket: stored, a different event under the id
// (ErrConflict, permanent), closed meanwhile, the caller's context ended.
// done is false, with the write's last error and the attempts made, when
// the bucket must judge the failure itself (an outage or this event's own
// problem).
func storeEvent(ctx context.Context, ev *bhiv.Event, where string, closed bool, retry retrypolicy.RetryPolicy[any],
	write func(data []byte) error) (attempts int, err error, done bool) {
	if closed {
		return 0, fmt.Errorf("bucket: write %s: %w", where, ErrClosed), true
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bucket: write %s: %w", where, err), true
	}
	enc, err := ev.JSON()
	if err != nil {
		return 0, &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Err: fmt.Errorf("encode event %s: %w", ev.ID, err)}, true
	}
	data := make([]byte, len(enc)+1) // enc may be shared: never append to it
	copy(data, enc)
	data[len(enc)] = '\n'
	var last error
	err = failsafe.With(retry).WithContext(ctx).Run(func() error {
		attempts++
		last = write(data)
		return last
	})
	switch {
	case err == nil:
		return attempts, nil, true
	case errors.Is(err, ErrConflict):
		return attempts, &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Attempts: attempts, Err: err}, true
	case errors.Is(err, ErrClosed):
		return attempts, fmt.Errorf("bucket: write %s: %w", where, ErrClosed), true
	case ctx.Err() != nil:
		if last != nil && !errors.Is(last, ctx.Err()) {
			return attempts, fmt.Errorf("bucket: write %s: %w (after %d attempt(s), last error: %v)", where, ctx.Err(), attempts, last), true
		}
		return attempts, fmt.Errorf("bucket: write %s: %w", where, ctx.Err()), true
	}
	return attempts, err, false
}
