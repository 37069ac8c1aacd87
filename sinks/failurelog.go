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
	"strings"
	"sync"

	"github.com/lmittmann/tint"
	"golang.org/x/sys/unix"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
)

// Defaults of FailureLogConfig.
const (
	DefaultFailureLogPath     = "./data/failed_core_sends.log"
	DefaultFailureLogMaxBytes = 100 << 20
)

// Permissions of what the failure log creates.
const (
	logDirPerm  fs.FileMode = 0o750
	logFilePerm fs.FileMode = 0o640
)

// rotatedLayout is the time layout of the suffix of a rotated failure log:
// <path>.20261128T152200.123456789Z. Its names sort in time order.
const rotatedLayout = "20060102T150405.000000000Z"

// FailureLogConfig configures the failure log. The zero value is valid.
type FailureLogConfig struct {
	// Path is the log file; default DefaultFailureLogPath.
	Path string
	// MaxBytes is the size past which the log is rotated; default
	// DefaultFailureLogMaxBytes (BHIV_FAILED_LOG_MAX_MB), negative for
	// never.
	MaxBytes int64
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c FailureLogConfig) WithDefaults() FailureLogConfig {
	config.Default(&c.Path, DefaultFailureLogPath)
	config.Default(&c.MaxBytes, DefaultFailureLogMaxBytes)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults: the path must name a file, not a
// directory.
func (c FailureLogConfig) Validate() error {
	c = c.WithDefaults()
	base := filepath.Base(c.Path)
	if strings.HasSuffix(c.Path, string(filepath.Separator)) || base == "." || base == ".." || base == string(filepath.Separator) {
		return fmt.Errorf("failure log %q: names a directory, want a file such as %s", c.Path, DefaultFailureLogPath)
	}
	return nil
}

// FailureLog is the dead-letter file: append-only JSON Lines, one
// bhiv.FailureRecord a line.
//
// Append returns only once its records are durable. Concurrent appends are
// grouped: one goroutine writes everything appended meanwhile with one
// write and one fsync, so many appenders share a sync.
//
// When the file grows past MaxBytes it is rotated: renamed to
// <path>.<UTC time> (such as failed_core_sends.log.20261128T152200.000000000Z),
// and a new file is started. ReadFailureLog reads rotated files too, oldest
// first.
//
// Several processes may append to one log, and Replay may work on it
// meanwhile: every write, rotation and hand-over happens under an exclusive
// flock(2) on <path>.lock, and a writer that finds the file it has open
// renamed away (rotated, or handed over to a replay) reopens <path> before
// it writes. See Replay for the hand-over.
//
// A crash can leave a torn last line; the reader skips it with a warning,
// and the next FailureLog to open the file ends it with a newline first, so
// that new records are never glued to it.
type FailureLog struct {
	path     string
	maxBytes int64
	log      *slog.Logger
	lock     *os.File // <path>.lock

	// Used by the flusher goroutine only.
	f *os.File

	mu      sync.Mutex
	buf     []byte
	cur     *logBatch
	closing bool
	kick    chan struct{} // an append is waiting
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the flusher ends

	closeOnce sync.Once
	closeErr  error
}

// logBatch is the records of one group commit.
type logBatch struct {
	done chan struct{} // closed once written and synced
	err  error
}

// OpenFailureLog opens the failure log for appending, creating it and its
// directory (0750) when missing.
func OpenFailureLog(cfg FailureLogConfig) (*FailureLog, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("failure log %q: %w", cfg.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), logDirPerm); err != nil {
		return nil, fmt.Errorf("failure log: %w", diskErr("create directory", filepath.Dir(path), err))
	}
	lock, err := openLockFile(path + ".lock")
	if err != nil {
		return nil, fmt.Errorf("failure log: %w", err)
	}
	l := &FailureLog{
		path:     path,
		maxBytes: cfg.MaxBytes,
		log:      cfg.Logger,
		lock:     lock,
		cur:      &logBatch{done: make(chan struct{})},
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	// Open the file now, so that a log that cannot be written fails here.
	if err := withFlock(lock, unix.LOCK_EX, l.ensureOpen); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("failure log: %w", err)
	}
	go l.flushLoop()
	return l, nil
}

// Path returns the absolute path of the log.
func (l *FailureLog) Path() string { return l.path }

// Append writes the records, one line each, and returns once they are
// durable. When ctx ends first it returns ctx.Err(); the records may still
// be written.
func (l *FailureLog) Append(ctx context.Context, recs ...bhiv.FailureRecord) error {
	if len(recs) == 0 {
		return nil
	}
	var lines []byte
	for i := range recs {
		b, err := json.Marshal(&recs[i])
		if err != nil {
			return fmt.Errorf("failure log: encode record of event %q: %w", recs[i].EventID, err)
		}
		lines = append(append(lines, b...), '\n')
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return fmt.Errorf("failure log %s: %w", l.path, ErrClosed)
	}
	l.buf = append(l.buf, lines...)
	batch := l.cur
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	select {
	case <-batch.done:
		return batch.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushLoop writes and syncs whatever was appended, one batch at a time,
// until Close.
func (l *FailureLog) flushLoop() {
	defer close(l.done)
	var spare []byte
	for {
		select {
		case <-l.kick:
		case <-l.stop:
		}
		for {
			l.mu.Lock()
			if len(l.buf) == 0 {
				closing := l.closing
				l.mu.Unlock()
				if closing {
					return
				}
				break
			}
			data, batch := l.buf, l.cur
			l.buf, l.cur = spare[:0], &logBatch{done: make(chan struct{})}
			l.mu.Unlock()
			batch.err = withFlock(l.lock, unix.LOCK_EX, func() error { return l.write(data) })
			if batch.err != nil {
				l.log.Error("failure log: append failed", "path", l.path, tint.Err(batch.err))
			}
			close(batch.done)
			spare = data
		}
	}
}

// write appends data to the log and syncs it; the caller holds the lock.
func (l *FailureLog) write(data []byte) error {
	if err := l.ensureOpen(); err != nil {
		return err
	}
	fi, err := l.f.Stat()
	if err != nil {
		l.closeFile()
		return diskErr("stat", l.path, err)
	}
	size := fi.Size()
	if l.maxBytes > 0 && size > 0 && size+int64(len(data)) > l.maxBytes {
		if _, err := rotateLocked(l.path); err != nil {
			return err
		}
		l.closeFile()
		if err := l.ensureOpen(); err != nil {
			return err
		}
		size = 0
	}
	if _, err := l.f.Write(data); err != nil {
		// Take back a partial write, so the next record starts a line.
		if terr := l.f.Truncate(size); terr != nil {
			l.log.Error("failure log: cannot take back a partial write", "path", l.path, tint.Err(terr))
		}
		l.closeFile()
		return diskErr("append to", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		l.closeFile()
		return diskErr("sync", l.path, err)
	}
	return nil
}

// ensureOpen makes l.f the file now at l.path, (re)opening it when it was
// renamed away; the caller holds the lock.
func (l *FailureLog) ensureOpen() error {
	if l.f != nil {
		fi, err := os.Stat(l.path)
		if err == nil {
			if ofi, err := l.f.Stat(); err == nil && os.SameFile(fi, ofi) {
				return nil
			}
		}
		l.closeFile()
	}
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	l.f = f
	return nil
}

func (l *FailureLog) closeFile() {
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// openAppend opens the log at path for appending, creating it durably when
// missing, and ends a torn last line with a newline.
func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, logFilePerm)
		if err == nil {
			if err = f.Chmod(logFilePerm); err == nil {
				err = syncDir(filepath.Dir(path))
			}
			if err != nil {
				_ = f.Close()
			}
		}
	}
	if err != nil {
		return nil, diskErr("open", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, diskErr("stat", path, err)
	}
	if size := fi.Size(); size > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], size-1); err != nil {
			_ = f.Close()
			return nil, diskErr("read", path, err)
		}
		if last[0] != '\n' {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				_ = f.Close()
				return nil, diskErr("end the torn last line of", path, err)
			}
		}
	}
	return f, nil
}

// Close writes what is still buffered and closes the log. Append fails with
// ErrClosed afterwards.
func (l *FailureLog) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		close(l.stop)
		<-l.done // the flusher wrote everything appended before closing
		l.closeFile()
		l.closeErr = l.lock.Close()
	})
	return l.closeErr
}
