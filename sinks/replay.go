package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
)

// ErrReplayRunning is returned by Replay when another replay of the same
// log is running.
var ErrReplayRunning = errors.New("another replay of this failure log is running")

// DefaultReplayWait is how long Replay waits, by default, for a sink in an
// outage to take records again: a few probes of Core's breaker at its
// default delay.
const DefaultReplayWait = 30 * time.Second

// ReplayConfig configures Replay.
type ReplayConfig struct {
	// Path is the failure log; default DefaultFailureLogPath.
	Path string
	// Sinks are the sinks to re-send to, by the name records carry in
	// their sink field ("core", "bucket"). Records of other sinks are
	// skipped and stay.
	Sinks map[string]bhiv.Sink
	// Filters; the zero value of each matches every record.
	Sink  string    // only records of this sink
	Kind  bhiv.Kind // only events of this kind
	Since time.Time // only records written at or after this time
	// DryRun reads and counts without sending or changing anything; Sent
	// then counts the records that would be sent. With a nil Sinks, a dry
	// run counts every record holding a valid event as one to send.
	DryRun bool
	// Rate limits sending to this many events per second; 0 = unlimited.
	Rate float64
	// Wait is how long Replay waits for a sink that reports an outage
	// (bhiv.ErrUnavailable: Core's breaker open, the bucket unwritable) to
	// take records again before it stops sending to it; default
	// DefaultReplayWait, negative: no wait.
	Wait time.Duration
	// Progress, when set, is called after each record that matches the
	// filters, with how many are done and how many there are.
	Progress func(done, total int)
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c ReplayConfig) WithDefaults() ReplayConfig {
	config.Default(&c.Path, DefaultFailureLogPath)
	config.Default(&c.Wait, DefaultReplayWait)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c ReplayConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("replay: rate %v: must not be negative", c.Rate))
	}
	if c.Kind != "" && !c.Kind.Valid() {
		errs = append(errs, fmt.Errorf("replay: kind %q: want execution or reward", c.Kind))
	}
	if err := (FailureLogConfig{Path: c.Path}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("replay: %w", err))
	}
	return errors.Join(errs...)
}

// ReplayResult counts what Replay did with the records that match the
// filters.
type ReplayResult struct {
	Sent    int // went through: removed from the log
	Failed  int // failed again: they stay, with last_error set and attempts and replays raised
	Skipped int // cannot be replayed (invalid input, no such sink): they stay
	// Unavailable counts the records left as they were because their sink
	// was in an outage.
	Unavailable int
}

// Replay re-sends the records of the failure log to their sinks. Records
// that go through are removed. A record that fails again stays with the
// error that sent it to the log (error, error_class, status), its attempts
// raised, the new failure in last_error and replays counting the failed
// replays. Lines that are not records stay as they are.
//
// Outages: a sink that reports one (an error wrapping bhiv.ErrUnavailable,
// such as Core's open circuit breaker) is waited for, up to Wait from its
// first outage answer, until it may be called again; if it is still
// unavailable then, Replay stops sending to it: that record and the rest of
// that sink's records stay exactly as they were (counted in Unavailable),
// the other sinks' records go on, and Replay returns an error wrapping
// bhiv.ErrUnavailable once it has gone through the log.
//
// Hand-over: Replay never rewrites the file appenders write to. Under the
// log's exclusive lock (flock on <path>.lock, the lock every FailureLog
// write takes) it renames the current log to a rotated file, as a rotation
// would, and releases the lock at once; appenders, in this process or
// another such as a running consumer, notice the rename under the same lock
// and go on in a new file at <path>. Replay then works only on rotated
// files, which nobody appends to, so neither side can lose the other's
// records and appenders are never held up for longer than a rename. A
// second replay of the same log fails with ErrReplayRunning (flock on
// <path>.replay.lock).
//
// Crash safety: each rotated file is rewritten atomically (temporary file,
// fsync, rename, fsync of the directory) once its records are processed.
// So that a replay killed before that repeats at most the records in
// flight, the key (SHA-256 of the line) of every record that went through
// is first appended, fsynced, to <path>.replay-done; the next replay
// removes those records without sending them again, and removes the file
// when it has rewritten everything.
//
// On ctx's end Replay stops sending, rewrites the file it was working on,
// and returns what it did with ctx.Err().
func Replay(ctx context.Context, cfg ReplayConfig) (ReplayResult, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return ReplayResult{}, err
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return ReplayResult{}, fmt.Errorf("replay: %w", err)
	}
	r := &replayer{cfg: cfg, path: path, log: cfg.Logger, wait: max(cfg.Wait, 0), unavailable: map[string]error{}}
	if cfg.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), 1)
	}
	return r.run(ctx)
}

type replayer struct {
	cfg     ReplayConfig
	path    string
	log     *slog.Logger
	limiter *rate.Limiter
	wait    time.Duration // for a sink in an outage

	unavailable map[string]error // sinks given up as unavailable, with their last answer
	done        map[string]bool  // keys of records already sent by a killed replay
	doneFile    *os.File         // <path>.replay-done, appended to
	res         ReplayResult
	total       int
	progress    int
}

// run replays the log: it takes the replay lock, hands the live log over
// (see Replay), replays every rotated file in turn and then forgets the keys
// of the records sent.
func (r *replayer) run(ctx context.Context) (ReplayResult, error) {
	if r.cfg.DryRun {
		return r.dryRun()
	}
	dir := filepath.Dir(r.path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return r.res, nil // no log, nothing to do
	}
	unlock, err := r.lock()
	if err != nil {
		return r.res, err
	}
	defer unlock()
	r.removeStaleTemps()
	if err := r.loadDone(); err != nil {
		return r.res, err
	}
	if err := r.handOver(); err != nil {
		return r.res, err
	}
	files, err := rotatedFiles(r.path)
	if err != nil {
		return r.res, fmt.Errorf("replay: %w", err)
	}
	if err := r.count(files); err != nil {
		return r.res, err
	}
	for _, f := range files {
		if err := r.replayFile(ctx, f); err != nil {
			_ = r.closeDone()
			return r.res, err
		}
		if ctx.Err() != nil {
			_ = r.closeDone()
			return r.res, ctx.Err()
		}
	}
	if err := r.forgetDone(); err != nil {
		return r.res, err
	}
	return r.res, r.outageErr()
}

// lock takes the replay lock (flock on <path>.replay.lock), so that one
// replay runs at a time, and returns the function that releases it.
func (r *replayer) lock() (unlock func(), err error) {
	rlock, err := openLockFile(r.path + ".replay.lock")
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if err := unix.Flock(int(rlock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = rlock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("replay %s: %w", r.path, ErrReplayRunning)
		}
		return nil, fmt.Errorf("replay: %w", diskErr("lock", rlock.Name(), err))
	}
	return func() {
		_ = unix.Flock(int(rlock.Fd()), unix.LOCK_UN)
		_ = rlock.Close()
	}, nil
}

// handOver makes the live log a rotated file, under the log's lock, so that
// appenders go on in a new file and the replay works on files nobody
// appends to.
func (r *replayer) handOver() error {
	lock, err := openLockFile(r.path + ".lock")
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	err = withFlock(lock, unix.LOCK_EX, func() error {
		fi, err := os.Stat(r.path)
		if err != nil || fi.Size() == 0 {
			return nil
		}
		_, err = rotateLocked(r.path)
		return err
	})
	_ = lock.Close()
	if err != nil {
		return fmt.Errorf("replay: hand-over: %w", err)
	}
	return nil
}

// forgetDone removes the keys of the records sent, once every file is
// rewritten without them.
func (r *replayer) forgetDone() error {
	if err := r.closeDone(); err != nil {
		return err
	}
	if err := os.Remove(r.donePath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replay: %w", diskErr("remove", r.donePath(), err))
	}
	return nil
}

// outageErr says which sinks were given up as unavailable, if any.
func (r *replayer) outageErr() error {
	if len(r.unavailable) == 0 {
		return nil
	}
	names := make([]string, 0, len(r.unavailable))
	for n := range r.unavailable {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Errorf("replay: %s still unavailable after waiting %s (%v): %d record(s) left as they were; replay again once it is back: %w",
		strings.Join(names, ", "), r.wait, r.unavailable[names[0]], r.res.Unavailable, bhiv.ErrUnavailable)
}

// deliver sends ev to d. While d reports an outage it waits, up to r.wait
// from the first outage answer, until d may be called again, and retries.
// It returns d's last answer.
func (r *replayer) deliver(ctx context.Context, sink string, d bhiv.Sink, ev *bhiv.Event) error {
	var deadline time.Time
	for pause := 250 * time.Millisecond; ; pause = min(2*pause, 5*time.Second) {
		cp := *ev
		err := d.Deliver(ctx, &cp)
		if err == nil || !errors.Is(err, bhiv.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(r.wait)
			if r.wait > 0 {
				r.log.Warn("replay: sink unavailable; waiting for it", "sink", sink, "for", r.wait, tint.Err(err))
			}
		}
		if !r.awaitSink(ctx, d, pause, deadline) {
			return err
		}
	}
}

// awaitSink waits until d may be called again: until its Available reports
// true when it has one, else for pause. It returns false when deadline or
// ctx's end comes first.
func (r *replayer) awaitSink(ctx context.Context, d bhiv.Sink, pause time.Duration, deadline time.Time) bool {
	avail, hasAvail := d.(bhiv.Availability)
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ready := (hasAvail && avail.Available()) || (!hasAvail && time.Since(start) >= pause)
		switch {
		case ready:
			return true
		case !time.Now().Before(deadline):
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// removeStaleTemps removes the temporary files of a killed replay.
func (r *replayer) removeStaleTemps() {
	dir, base := filepath.Split(r.path)
	matches, _ := filepath.Glob(filepath.Join(dir, "."+base+".*"+replayTmpMark+"*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

const replayTmpMark = ".replay-tmp-"

// matches reports whether rec passes the filters.
func (r *replayer) matches(rec *bhiv.FailureRecord) bool {
	if r.cfg.Sink != "" && rec.Sink != r.cfg.Sink {
		return false
	}
	if r.cfg.Kind != "" && rec.Kind != r.cfg.Kind {
		return false
	}
	if !r.cfg.Since.IsZero() && rec.Time.Before(r.cfg.Since) {
		return false
	}
	return true
}

// count sets the total for Progress: the matching records not already sent.
func (r *replayer) count(files []string) error {
	if r.cfg.Progress == nil {
		return nil
	}
	for _, name := range files {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("replay: %w", diskErr("open", name, err))
		}
		err = scanLines(f, func(line []byte, _ int, _ bool) error {
			if rec, err := parseRecord(line); err == nil && r.matches(&rec) && !r.done[lineKey(line)] {
				r.total++
			}
			return nil
		})
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	return nil
}

func (r *replayer) step() {
	r.progress++
	if r.cfg.Progress != nil {
		r.cfg.Progress(r.progress, r.total)
	}
}

// replayFile replays the records of one rotated file and rewrites it with
// those that stay, or removes it when none does.
func (r *replayer) replayFile(ctx context.Context, name string) error {
	in, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("replay: %w", diskErr("open", name, err))
	}
	defer in.Close()
	w, err := newRewriter(name)
	if err != nil {
		return err
	}
	defer w.discard()
	err = scanLines(in, func(line []byte, n int, torn bool) error {
		if stays := r.replayLine(ctx, name, line, n, torn); stays != nil {
			return w.keep(stays)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	return w.commit()
}

// replayLine replays the record on one line of the file name, when it
// matches the filters, and returns what stays in the file in its place: the
// line as it is, the record with its failed replay counted, or nil when it
// went through (or had already, in a replay that was killed).
func (r *replayer) replayLine(ctx context.Context, name string, line []byte, n int, torn bool) []byte {
	if ctx.Err() != nil {
		return line // stopped: the rest stays as it is
	}
	rec, err := parseRecord(line)
	if err != nil {
		warnBadLine(r.log, name, n, torn, err)
		return line
	}
	key := lineKey(line)
	if r.done[key] {
		return nil // sent by an interrupted replay
	}
	if !r.matches(&rec) {
		return line
	}
	defer r.step()
	if r.unavailable[rec.Sink] != nil {
		r.res.Unavailable++
		return line // its sink was given up as unavailable: as it is
	}
	sink := r.cfg.Sinks[rec.Sink]
	if sink == nil {
		r.res.Skipped++
		r.log.Warn("replay: no such sink, record stays", "sink", rec.Sink, "event_id", rec.EventID)
		return line
	}
	ev, err := rec.DecodeEvent()
	if err != nil {
		r.res.Skipped++ // invalid input cannot be replayed
		return line
	}
	if r.limiter != nil {
		if err := r.limiter.Wait(ctx); err != nil {
			return line
		}
	}
	return r.settle(ctx, &rec, line, key, r.deliver(ctx, rec.Sink, sink, &ev))
}

// settle counts how the replay of rec (on line, with key) ended, derr being
// its sink's last answer, and returns what stays in the file in its place.
func (r *replayer) settle(ctx context.Context, rec *bhiv.FailureRecord, line []byte, key string, derr error) []byte {
	switch {
	case derr == nil:
		r.res.Sent++
		if err := r.markDone(key); err != nil {
			// Cannot record it: keep it, to be sent again.
			r.log.Error("replay: cannot record a sent record; it stays and will be sent again", tint.Err(err))
			return line
		}
		return nil
	case ctx.Err() != nil:
		return line // in flight when stopped: unchanged
	case errors.Is(derr, bhiv.ErrUnavailable):
		r.res.Unavailable++
		r.unavailable[rec.Sink] = derr
		r.log.Warn("replay: sink still unavailable; its records stay as they are", "sink", rec.Sink, tint.Err(derr))
		return line
	}
	r.res.Failed++
	r.log.Warn("replay: failed again", "sink", rec.Sink, "event_id", rec.EventID, tint.Err(derr))
	raiseAttempts(rec, derr)
	b, err := json.Marshal(rec)
	if err != nil {
		return line
	}
	return b
}

// raiseAttempts records another failed replay of rec: its attempts, the
// failure as last_error and one more replay. The error that sent the event
// to the log (error, error_class, status) stays.
func raiseAttempts(rec *bhiv.FailureRecord, err error) {
	attempts := 1
	rec.LastError = err.Error()
	var se *bhiv.SinkError
	if errors.As(err, &se) {
		if se.Attempts > 0 {
			attempts = se.Attempts
		}
		if se.Body != "" {
			rec.LastError += " (response body: " + se.Body + ")"
		}
	}
	rec.Attempts += attempts
	rec.Replays++
}

// dryRun counts what a replay would do, changing nothing.
func (r *replayer) dryRun() (ReplayResult, error) {
	// Keys of an interrupted replay: those records are as good as gone.
	_ = r.readDone()
	files, err := openLogFiles(r.path)
	if err != nil {
		return r.res, fmt.Errorf("replay: %w", err)
	}
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	var recs []bhiv.FailureRecord
	for _, f := range files {
		err := scanLines(f, func(line []byte, n int, torn bool) error {
			rec, err := parseRecord(line)
			if err != nil {
				warnBadLine(r.log, f.Name(), n, torn, err)
				return nil
			}
			if r.matches(&rec) && !r.done[lineKey(line)] {
				recs = append(recs, rec)
			}
			return nil
		})
		if err != nil {
			return r.res, fmt.Errorf("replay: %w", err)
		}
	}
	r.total = len(recs)
	for i := range recs {
		rec := &recs[i]
		_, err := rec.DecodeEvent()
		if err != nil || (r.cfg.Sinks != nil && r.cfg.Sinks[rec.Sink] == nil) {
			r.res.Skipped++
		} else {
			r.res.Sent++
		}
		r.step()
	}
	return r.res, nil
}
