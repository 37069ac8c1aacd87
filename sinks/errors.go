package sinks

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// ErrClosed is returned by a sink or the failure log used after Close.
var ErrClosed = errors.New("closed")

// ErrConflict is wrapped by the permanent error of a Bucket asked to write
// an event whose id it already holds with different content. The bucket
// keeps the first, as Core does with its Idempotency-Key; the second goes
// to the failure log.
var ErrConflict = errors.New("a different event is already stored under this id")

// DiskError is a file-system failure of the Bucket sink or the failure log.
// It says what was done (Op), to which path, and why in plain words
// (Reason); Err is the underlying error, so errors.Is(err, syscall.ENOSPC)
// and the like work.
type DiskError struct {
	Op        string // such as "create temp file", "rename", "sync"
	Path      string
	Reason    string // such as "disk full"
	Retryable bool   // whether a later attempt may succeed
	Err       error
}

func (e *DiskError) Error() string {
	return fmt.Sprintf("%s %s: %s: %v", e.Op, e.Path, e.Reason, unwrapPathError(e.Err))
}

// Unwrap returns the underlying error.
func (e *DiskError) Unwrap() error { return e.Err }

// unwrapPathError strips the *fs.PathError or *os.LinkError wrapper, whose
// text would repeat the path already named by DiskError.
func unwrapPathError(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// diskErrnos says, for the errors a disk can give, why in plain words and
// whether a short retry may fix it. Every one of them is a fault of the
// machine, not of the event: none is permanent, so the event reaches the
// failure log as retryable_exhausted and can be replayed once the disk is
// fixed.
var diskErrnos = map[syscall.Errno]string{
	syscall.ENOSPC:  "disk full",
	syscall.EDQUOT:  "disk quota exceeded",
	syscall.EACCES:  "permission denied",
	syscall.EPERM:   "operation not permitted (read-only or immutable directory?)",
	syscall.EROFS:   "read-only file system",
	syscall.EIO:     "I/O error",
	syscall.ENOTDIR: "a file stands where a directory must be",
	syscall.EISDIR:  "a directory stands where a file must be",
	syscall.EEXIST:  "a file stands where a directory must be",
	syscall.ENOENT:  "directory vanished",
	syscall.EMFILE:  "too many open files",
	syscall.ENFILE:  "too many open files in the system",
	syscall.EINTR:   "interrupted",
	syscall.EAGAIN:  "resource temporarily unavailable",
	syscall.EBUSY:   "device or resource busy",
	syscall.ENOMEM:  "out of memory",
	syscall.ESTALE:  "stale file handle",
}

// classifyDisk returns why err happened in plain words and whether a retry
// may fix it. Errors not in the table are reported by their own text and
// treated as retryable too: a disk error is never the event's fault, so
// giving up early would gain nothing. Only a cancelled context is not
// retryable.
func classifyDisk(err error) (reason string, retryable bool) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "cancelled", false
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if r, ok := diskErrnos[errno]; ok {
			return r, true
		}
		return errno.Error(), true
	}
	return "disk error", true
}

// diskErr wraps err from op on path in a *DiskError, or returns nil when
// err is nil.
func diskErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var de *DiskError
	if errors.As(err, &de) {
		return err
	}
	reason, retryable := classifyDisk(err)
	return &DiskError{Op: op, Path: path, Reason: reason, Retryable: retryable, Err: err}
}

// retryableDisk reports whether err is a *DiskError a retry may fix.
func retryableDisk(err error) bool {
	var de *DiskError
	return errors.As(err, &de) && de.Retryable
}
