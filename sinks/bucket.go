package sinks

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/lmittmann/tint"

	"github.com/hackaverse/bhiv"
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

// tmpPrefix starts the name of every temporary file. Event ids start with a
// letter or digit, so no event file can start with it.
const tmpPrefix = ".tmp-"

// Temporary files are created in tempShards directories
// <dir>/.tmp/00 ... <dir>/.tmp/31, taken in turn, and renamed from there
// into place: creating a file locks its directory and allocates its inode
// near the directory's, so writers spread over many directories create
// files in parallel instead of queueing on one date directory (2-3× the
// files/s of a single directory at 64 writers on ext4, measured). The
// layout is that of <kind>/<date>, so the stale-temp cleanup covers it; a
// kind is never named ".tmp". If a rename across directories fails with
// EXDEV (a directory of the tree mounted apart), temporary files go next to
// their final file from then on.
const (
	tempDirName = ".tmp"
	tempShards  = 32
)

// staleTempAge is how old a temp file of a live process must be before
// NewBucket removes it anyway. A writer keeps a temp file for milliseconds.
const staleTempAge = 10 * time.Minute

// pidTag names the writing process in its temp files, so that NewBucket
// removes the leftovers of dead processes at once and leaves alone the
// writes in progress of live ones.
// The tag also names the host (a hash of its name), as a process id means
// nothing in another container sharing the volume.
var pidTag = hostTag() + "p" + strconv.Itoa(os.Getpid())

func hostTag() string {
	h, _ := os.Hostname()
	sum := sha256.Sum256([]byte(h))
	return "h" + hex.EncodeToString(sum[:4])
}

// tempOwnerAlive reports whether the process named in a temp file's name
// may still be running: true for another host's process or a name without
// a tag.
func tempOwnerAlive(name string) bool {
	parts := strings.Split(name, "-")
	if len(parts) < 3 {
		return true
	}
	host, pidStr, ok := strings.Cut(parts[len(parts)-2], "p")
	if !ok || host != hostTag() {
		return true
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return true
	}
	return processAlive(pid)
}

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

// withDefaults returns the config with every zero field set to its default.
func (c BucketConfig) withDefaults() BucketConfig {
	if c.Dir == "" {
		c.Dir = DefaultBucketDir
	}
	if c.Retries == 0 {
		c.Retries = DefaultBucketRetries
	} else if c.Retries < 0 {
		c.Retries = 0
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultBucketRetryDelay
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks the config.
func (c BucketConfig) Validate() error {
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
	down      atomic.Bool
	probeMu   sync.Mutex
	nextProbe time.Time // while down, no probe before then

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

// fileOps are the calls whose order makes a write crash-safe: syncing a
// file system, and renaming a file into place. Tests replace them (before
// the first Deliver) to check that order.
type fileOps interface {
	syncfs(f *os.File) error
	rename(oldpath, newpath string) error
}

// osOps are the real fileOps.
type osOps struct{}

func (osOps) syncfs(f *os.File) error              { return syncfs(f) }
func (osOps) rename(oldpath, newpath string) error { return renameNoReplace(oldpath, newpath) }

// syncItem is one file on its way through the syncer.
type syncItem struct {
	tmp, final string
	fs         fsID       // the file system it is on
	renamed    bool       // in place: what is left is a sync
	err        error      // the outcome of its last sync (the syncer's)
	done       chan error // buffered: the syncer never blocks on it
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
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
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
		WithMaxRetries(cfg.Retries).
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
	if b.closed.Load() {
		return fmt.Errorf("bucket: write %s: %w", path, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bucket: write %s: %w", path, err)
	}
	enc, err := ev.JSON()
	if err != nil {
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Err: fmt.Errorf("encode event %s: %w", ev.ID, err)}
	}
	data := make([]byte, len(enc)+1) // enc may be shared: never append to it
	copy(data, enc)
	data[len(enc)] = '\n'
	attempts := 0
	var last error
	err = failsafe.With(b.retry).WithContext(ctx).Run(func() error {
		attempts++
		last = b.write(ctx, path, data)
		return last
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrConflict):
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassPermanent, Attempts: attempts, Err: err}
	case errors.Is(err, ErrClosed):
		return fmt.Errorf("bucket: write %s: %w", path, ErrClosed)
	case ctx.Err() != nil:
		if last != nil && !errors.Is(last, ctx.Err()) {
			return fmt.Errorf("bucket: write %s: %w (after %d attempt(s), last error: %v)", path, ctx.Err(), attempts, last)
		}
		return fmt.Errorf("bucket: write %s: %w", path, ctx.Err())
	}
	if perr := b.probe(); perr != nil {
		// Not this event's path: the bucket cannot take any file. Say so
		// (bhiv.ErrUnavailable), so that the event waits for the bucket
		// instead of going to the failure log, as during a Core outage.
		if !b.down.Swap(true) {
			b.probeMu.Lock()
			b.nextProbe = time.Now().Add(bucketProbeEvery)
			b.probeMu.Unlock()
			b.log.Warn("bucket: unavailable, events wait until it can be written again", "dir", b.dir, tint.Err(perr))
		}
		return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts,
			Err: fmt.Errorf("%w: %w", bhiv.ErrUnavailable, err)}
	}
	return &bhiv.SinkError{Sink: BucketName, Class: bhiv.ClassRetryableExhausted, Attempts: attempts, Err: err}
}

// bucketProbeEvery is how often an unavailable bucket is probed.
const bucketProbeEvery = 500 * time.Millisecond

// Available reports whether the bucket can take files: false after a write
// failed and a probe file could not be written in the bucket directory
// either (read-only, full, gone, replaced by a file), until a probe, at most
// every 500ms, succeeds. The consumer holds events (and pauses intake) while
// it is false.
func (b *Bucket) Available() bool {
	if !b.down.Load() {
		return true
	}
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	if !b.down.Load() {
		return true
	}
	if time.Now().Before(b.nextProbe) {
		return false
	}
	if err := b.probe(); err != nil {
		b.nextProbe = time.Now().Add(bucketProbeEvery)
		return false
	}
	b.down.Store(false)
	b.log.Info("bucket: available again", "dir", b.dir)
	return true
}

// probe writes, syncs (unless NoFsync) and removes a small file in the
// bucket directory, recreating the directory when it is missing.
func (b *Bucket) probe() error {
	if err := b.mkdirAll(b.dir); err != nil {
		return err
	}
	name := filepath.Join(b.dir, tmpPrefix+"probe-"+pidTag+"-"+randomSuffix())
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, bucketFilePerm)
	if err != nil {
		return diskErr("create probe file", name, err)
	}
	defer os.Remove(name)
	_, err = f.Write(make([]byte, 512))
	if err == nil && !b.cfg.NoFsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return diskErr("write probe file", name, err)
	}
	return nil
}

// write makes one attempt at writing data to path.
func (b *Bucket) write(ctx context.Context, path string, data []byte) error {
	dir := filepath.Dir(path)
	if _, err := b.ensureDir(dir); err != nil {
		return err
	}
	tdir := dir
	if !b.tempInPlace.Load() {
		tdir = b.shards[b.nextShard.Add(1)%tempShards]
	}
	td, err := b.ensureDir(tdir)
	if err != nil {
		return err
	}
	tmp := filepath.Join(tdir, tmpPrefix+filepath.Base(path)+"-"+pidTag+"-"+randomSuffix())
	id, created, err := writeNewFile(tmp, data, &td.mode)
	if err != nil {
		if !created {
			b.forgetDirs(tdir, err) // perhaps removed under us: recreate on retry
			return diskErr("create temp file", tmp, err)
		}
		_ = os.Remove(tmp)
		return diskErr("write", tmp, err)
	}
	if b.cfg.NoFsync {
		return b.placed(ctx, tmp, path, data, b.place(tmp, path, data))
	}
	// The syncer makes the data durable, renames the file into place and
	// makes the rename durable, and only then tells us: one wake-up.
	it := &syncItem{tmp: tmp, final: path, fs: id, done: make(chan error, 1)}
	err = b.awaitSync(ctx, it)
	var re *renameError
	if !errors.As(err, &re) {
		if errors.Is(err, ErrClosed) {
			_ = os.Remove(tmp) // never handed over
		}
		return err
	}
	// The rename failed (the syncer removed the temp file). The same event
	// may be in place already, perhaps just written by another writer or
	// process: then a sync that begins now makes sure it is durable.
	err = b.existing(path, data, re.err)
	if err == nil {
		err = b.awaitSync(ctx, &syncItem{final: path, fs: id, renamed: true, done: make(chan error, 1)})
	}
	return b.placed(ctx, tmp, path, data, err)
}

// placed handles the error of place: a rename across directories that the
// file system refuses (EXDEV) makes temp files go next to their final file
// and writes again; a vanished directory is forgotten, to be recreated.
func (b *Bucket) placed(ctx context.Context, tmp, path string, data []byte, err error) error {
	switch {
	case err == nil:
	case errors.Is(err, syscall.EXDEV) && !b.tempInPlace.Load():
		if !b.tempInPlace.Swap(true) {
			b.log.Warn("bucket: cannot rename across its directories; temporary files go next to their final file", "dir", b.dir, tint.Err(err))
		}
		return b.write(ctx, path, data)
	case errors.Is(err, fs.ErrNotExist):
		b.forgetDirs(filepath.Dir(path), err)
	}
	return err
}

// forgetDirs forgets that dir exists, so that the next write creates it
// again; when it is gone (ENOENT), it forgets every directory: the tree
// was removed or mounted over, and every cached directory may be gone too.
func (b *Bucket) forgetDirs(dir string, err error) {
	if errors.Is(err, fs.ErrNotExist) {
		b.dirs.Clear()
		return
	}
	b.dirs.Delete(dir)
}

// place renames the written temp file to path unless path exists. The
// first event written under an id wins: when path holds the same event
// (a redelivery), place succeeds; when it holds a different one, it fails
// with ErrConflict and path is left as it was. tmp is gone afterwards.
func (b *Bucket) place(tmp, path string, data []byte) error {
	if err := b.rename(tmp, path); err != nil {
		return b.existing(path, data, err)
	}
	return nil
}

// rename renames tmp to path unless path exists; when it fails, it removes
// tmp.
func (b *Bucket) rename(tmp, path string) error {
	err := b.ops.rename(tmp, path)
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// existing decides on a rename to path that failed with err: nil when path
// holds the same event as data, an error wrapping ErrConflict when it holds
// another, else the rename's *DiskError.
func (b *Bucket) existing(path string, data []byte, err error) error {
	if !errors.Is(err, fs.ErrExist) {
		return diskErr("rename", path, err)
	}
	existing, rerr := os.ReadFile(path)
	if rerr != nil {
		return diskErr("read existing", path, rerr)
	}
	if !sameJSON(existing, data) {
		return fmt.Errorf("bucket: %s: %w", path, ErrConflict)
	}
	return nil
}

// renameError is how the syncer tells a writer that renaming its file
// failed with err (the temp file is removed). It never leaves write.
type renameError struct{ err error }

func (e *renameError) Error() string { return e.err.Error() }

// sameJSON reports whether a and b are the same JSON value: the same bytes,
// or the same once decoded (another encoder may order or space them
// differently, or spell a number otherwise: 1.0, 1e0). Numbers compare by
// exact decimal value, never through float64, which cannot tell
// 9007199254740993 from 9007199254740992.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	va, err := decodeExact(a)
	if err != nil {
		return false
	}
	vb, err := decodeExact(b)
	if err != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// decodeExact decodes one JSON value, with every number as its canonical
// literal (canonNumber).
func decodeExact(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return canonNumbers(v), nil
}

// canonNumbers replaces, in a decoded value, each json.Number by its
// canonical literal.
func canonNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		return json.Number(canonNumber(string(v)))
	case map[string]any:
		for k, e := range v {
			v[k] = canonNumbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = canonNumbers(e)
		}
	}
	return v
}

// canonNumber spells a JSON number literal so that literals of the same
// exact value come out the same: its digits without leading or trailing
// zeros and a power of ten ("-1.50e3" and "-1500" are "-15e2"; "0", "-0.0"
// and "0e7" are "0"). A literal whose exponent does not fit in 62 bits is
// kept as it is.
func canonNumber(lit string) string {
	sign := ""
	if rest, ok := strings.CutPrefix(lit, "-"); ok {
		sign, lit = "-", rest
	}
	mant, exp := lit, int64(0)
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		e, err := strconv.ParseInt(strings.TrimPrefix(lit[i+1:], "+"), 10, 64)
		if err != nil || e > 1<<62 || e < -1<<62 {
			return sign + lit
		}
		mant, exp = lit[:i], e
	}
	whole, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(whole+frac, "0")
	if digits == "" {
		return "0"
	}
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	return sign + trimmed + "e" + strconv.FormatInt(exp, 10)
}

// linkAndRemove is renameNoReplace by link(2), which never replaces, then
// removing oldpath.
func linkAndRemove(oldpath, newpath string) error {
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
}

// awaitSync hands the item to the syncer and waits until it is done with
// it: a written file is then durable in place, or the error says why not;
// a file in place already (renamed set) is durable.
func (b *Bucket) awaitSync(ctx context.Context, it *syncItem) error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return ErrClosed
	}
	b.pending = append(b.pending, it)
	b.mu.Unlock()
	b.cond.Signal()
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		// The syncer goes on: the file may still land in place.
		return ctx.Err()
	}
}

// syncLoop is the group commit. Each round takes every file handed over
// since the last one and makes durable, with one sync per file system,
// both their data and the renames done since the last round. Then it tells
// the writers of those renamed files that they are done, and renames into
// place the files whose data the round made durable; the next round makes
// those renames durable, together with the data of the next files. So a
// file goes through two rounds, a round serves two generations of files,
// and each writer is woken once. It ends when Close was called and nothing
// is left.
func (b *Bucket) syncLoop() {
	defer close(b.syncerDone)
	var batch, spare, renamed, round []*syncItem
	for {
		b.mu.Lock()
		for len(b.pending) == 0 && len(renamed) == 0 && !b.closing {
			b.cond.Wait()
		}
		if len(b.pending) == 0 && len(renamed) == 0 {
			b.mu.Unlock()
			return
		}
		batch, b.pending = b.pending, spare[:0]
		b.mu.Unlock()

		round = append(append(round[:0], batch...), renamed...)
		b.syncRound(round)
		b.syncs.Add(1)
		b.synced.Add(int64(len(round)))
		for _, it := range renamed {
			it.done <- it.err
		}
		clear(renamed)
		renamed = renamed[:0]
		for _, it := range batch {
			switch {
			case it.renamed: // in place already: durable now
				it.done <- it.err
			case it.err != nil:
				_ = os.Remove(it.tmp)
				it.done <- it.err
			default:
				if err := b.rename(it.tmp, it.final); err != nil {
					it.done <- &renameError{err}
					continue
				}
				it.renamed = true
				renamed = append(renamed, it)
			}
		}
		clear(round)
		clear(batch)
		spare = batch
	}
}

// syncRound makes durable the data of the written files and the directory
// entries of the renamed ones, and sets the outcome of each (it.err): one
// syncfs of each file system they are on where there is syncfs, else an
// fsync of each.
func (b *Bucket) syncRound(items []*syncItem) {
	if !haveSyncfs {
		b.fsyncEach(items)
		return
	}
	ids := b.fsSeen[:0]
	for _, it := range items {
		if !slices.Contains(ids, it.fs) {
			ids = append(ids, it.fs)
		}
	}
	b.fsSeen = ids
	for _, id := range ids {
		dir, err := b.fsDir(id, items)
		if err == nil {
			err = diskErr("sync file system of", dir.Name(), b.ops.syncfs(dir))
		}
		for _, it := range items {
			if it.fs == id {
				it.err = err
			}
		}
	}
}

// errFSGone says that no directory of the bucket is on a file system that a
// file was written to any more: the tree was mounted over since.
var errFSGone = errors.New("its file system is no longer under the bucket directory")

// fsDir returns a directory open on file system id, opening the directory
// of one of the items on it (its temp file's before the rename, its
// final one after) when the bucket has none yet. It keeps it until Close:
// a sync then reports the write-back errors of that file system since.
func (b *Bucket) fsDir(id fsID, items []*syncItem) (*os.File, error) {
	if f := b.fsDirs[id]; f != nil {
		return f, nil
	}
	var last string
	for _, it := range items {
		if it.fs != id {
			continue
		}
		last = filepath.Dir(it.tmp)
		if it.renamed {
			last = filepath.Dir(it.final)
		}
		f, got, err := openFS(last)
		if err != nil {
			continue
		}
		if got == id {
			b.fsDirs[id] = f
			return f, nil
		}
		f.Close()
	}
	return nil, diskErr("sync", last, errFSGone)
}

// fsyncEach is syncRound where there is no syncfs.
func (b *Bucket) fsyncEach(items []*syncItem) {
	seen := map[string]error{}
	for _, it := range items {
		if !it.renamed {
			it.err = diskErr("sync", it.tmp, fsyncPath(it.tmp))
			continue
		}
		// The file's directory, and its parents, which may be new.
		it.err = nil
		for d := filepath.Dir(it.final); len(d) >= len(b.dir) && it.err == nil; d = filepath.Dir(d) {
			err, ok := seen[d]
			if !ok {
				err = diskErr("sync", d, fsyncPath(d))
				seen[d] = err
			}
			it.err = err
		}
	}
}

func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// bucketDir is a directory known to exist.
type bucketDir struct {
	// mode says whether a file created there with mode 0640 comes out
	// 0640: modeUnknown until the first file tells (the umask, or a
	// default ACL, may strip bits), then modeExact or modeChmod.
	mode atomic.Int32
}

// The states of bucketDir.mode.
const (
	modeUnknown int32 = iota
	modeExact         // created files are 0640: no chmod needed
	modeChmod         // created files lose bits: chmod each to 0640
)

// ensureDir creates dir and its parents (0750) unless known to exist.
func (b *Bucket) ensureDir(dir string) (*bucketDir, error) {
	if v, ok := b.dirs.Load(dir); ok {
		return v.(*bucketDir), nil
	}
	if err := b.mkdirAll(dir); err != nil {
		return nil, err
	}
	v, _ := b.dirs.LoadOrStore(dir, &bucketDir{})
	return v.(*bucketDir), nil
}

// mkdirAll creates dir and its missing parents with mode 0750 whatever the
// umask.
func (b *Bucket) mkdirAll(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return diskErr("create directory", dir, syscall.ENOTDIR)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := b.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, bucketDirPerm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
				return nil // made by a concurrent writer
			}
		}
		return diskErr("create directory", dir, err)
	}
	if err := os.Chmod(dir, bucketDirPerm); err != nil {
		return diskErr("chmod", dir, err)
	}
	return nil
}

// removeStaleTemps removes the temporary files a crash left in
// <dir>/<kind>/<date>/.
func (b *Bucket) removeStaleTemps() error {
	kinds, err := os.ReadDir(b.dir)
	if err != nil {
		return diskErr("read directory", b.dir, err)
	}
	removed := 0
	for _, k := range kinds {
		if !k.IsDir() {
			// A probe file left by a crash.
			if strings.HasPrefix(k.Name(), tmpPrefix) && !tempOwnerAlive(k.Name()) {
				if err := os.Remove(filepath.Join(b.dir, k.Name())); err == nil {
					removed++
				}
			}
			continue
		}
		kdir := filepath.Join(b.dir, k.Name())
		dates, err := os.ReadDir(kdir)
		if err != nil {
			return diskErr("read directory", kdir, err)
		}
		for _, d := range dates {
			if !d.IsDir() {
				continue
			}
			ddir := filepath.Join(kdir, d.Name())
			files, err := os.ReadDir(ddir)
			if err != nil {
				return diskErr("read directory", ddir, err)
			}
			for _, f := range files {
				if !strings.HasPrefix(f.Name(), tmpPrefix) || f.IsDir() {
					continue
				}
				// A temp file of a live process may be another replica's
				// write in progress (replicas sharing a volume): leave it,
				// unless it is too old to be one.
				if info, err := f.Info(); err != nil || (tempOwnerAlive(f.Name()) && time.Since(info.ModTime()) < staleTempAge) {
					continue
				}
				p := filepath.Join(ddir, f.Name())
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return diskErr("remove stale temp file", p, err)
				}
				removed++
			}
		}
	}
	if removed > 0 {
		b.log.Info("bucket: removed stale temp files", "dir", b.dir, "count", removed)
	}
	return nil
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

func randomSuffix() string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}
