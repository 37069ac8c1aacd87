package sinks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
)

// fileOps are the calls whose order makes a write crash-safe: syncing a
// file system, and renaming a file into place. Tests replace them (before
// the first Deliver) to check that order.
type fileOps interface {
	syncfs(f *os.File) error
	rename(oldpath, newpath string) error
}

// osOps are the real fileOps.
type osOps struct{}

func (osOps) syncfs(f *os.File) error { return syncfs(f) }

func (osOps) rename(oldpath, newpath string) error { return renameNoReplace(oldpath, newpath) }

// syncItem is one file on its way through the syncer.
type syncItem struct {
	tmp, final string
	fs         fsID       // the file system it is on
	renamed    bool       // in place: what is left is a sync
	err        error      // the outcome of its last sync (the syncer's)
	done       chan error // buffered: the syncer never blocks on it
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
