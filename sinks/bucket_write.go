package sinks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"github.com/lmittmann/tint"
)

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

// linkAndRemove is renameNoReplace by link(2), which never replaces, then
// removing oldpath.
func linkAndRemove(oldpath, newpath string) error {
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return os.Remove(oldpath)
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

func randomSuffix() string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}
