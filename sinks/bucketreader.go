package sinks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// BucketReader reads what a bucket holds, whichever kind it is: the files
// of a Bucket (DirReader) or the objects of an S3Bucket (S3Reader). Keys
// are relative to the bucket's root, as EventKey makes them. The audit
// reads buckets through it.
type BucketReader interface {
	// List calls fn with the key of every event in the bucket, in no set
	// order, and stops at fn's first error. Temporary files and probes are
	// not events: they are left out.
	List(ctx context.Context, fn func(key string) error) error
	// Read returns the bytes stored under key, or an error wrapping
	// fs.ErrNotExist when there is nothing.
	Read(ctx context.Context, key string) ([]byte, error)
}

var (
	_ BucketReader = (*DirReader)(nil)
	_ BucketReader = (*S3Reader)(nil)
)

// hiddenKey reports whether a key is not an event's: one of its parts
// starts with a dot (the file Bucket's .tmp directory, temporary and probe
// files; the S3Bucket's .bhiv probes).
func hiddenKey(key string) bool {
	for part := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// DirReader reads the files of a Bucket directory. It changes nothing: a
// missing directory is an empty bucket.
type DirReader struct {
	dir string
}

// NewDirReader returns a reader of the Bucket directory dir.
func NewDirReader(dir string) *DirReader { return &DirReader{dir: dir} }

// List calls fn with the key of every event file.
func (r *DirReader) List(ctx context.Context, fn func(key string) error) error {
	err := filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone while walking, or no bucket yet
			}
			return err
		}
		if path == r.dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return ctx.Err()
		}
		rel, err := filepath.Rel(r.dir, path)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel))
	})
	if err != nil {
		return fmt.Errorf("bucket: list %s: %w", r.dir, err)
	}
	return nil
}

// Read returns the bytes of the file under key.
func (r *DirReader) Read(_ context.Context, key string) ([]byte, error) {
	if hiddenKey(key) || !fs.ValidPath(key) {
		return nil, fmt.Errorf("bucket: read %q: not an event key: %w", key, fs.ErrNotExist)
	}
	data, err := os.ReadFile(filepath.Join(r.dir, filepath.FromSlash(key)))
	if err != nil {
		return nil, fmt.Errorf("bucket: %w", err)
	}
	return data, nil
}
