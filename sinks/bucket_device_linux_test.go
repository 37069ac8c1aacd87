//go:build linux

package sinks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hackaverse/bhiv"
)

// A write is durable only once both its data and its rename are synced on
// the file system the file is on, in that order: the rename only after a
// sync of the file's data returned, and Deliver only after a sync that
// began after the rename. TestBucketSyncOrder watches the syncs and renames
// of the Bucket (through its fileOps) while writers deliver events, also
// with a part of the tree on another file system (a tmpfs mount), and with
// a file system mounted over the bucket directory after the Bucket started.
func TestBucketSyncOrder(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares dir before NewBucket; it returns what to do
		// between the first and the second half of the deliveries.
		setup func(t *testing.T, dir string) (midway func())
	}{
		{"one file system", func(*testing.T, string) func() { return nil }},
		{"kind directory on another file system", func(t *testing.T, dir string) func() {
			mountTmpfs(t, filepath.Join(dir, string(bhiv.KindExecution)))
			return nil
		}},
		{"date directory on another file system", func(t *testing.T, dir string) func() {
			mountTmpfs(t, filepath.Join(dir, string(bhiv.KindReward), testTime.UTC().Format("2006-01-02")))
			return nil
		}},
		{"bucket directory mounted over after start", func(t *testing.T, dir string) func() {
			return func() { mountTmpfs(t, dir) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "bucket")
			if err := os.MkdirAll(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			midway := tt.setup(t, dir)
			b := newTestBucket(t, BucketConfig{Dir: dir, Retries: 8, RetryDelay: 0})
			ops := &orderOps{real: b.ops, dir: dir, renames: map[string]renameRec{}}
			b.ops = ops

			const writers, each = 8, 6
			deliver := func(half int) {
				var wg sync.WaitGroup
				for w := range writers {
					wg.Go(func() {
						for i := range each {
							// Writers pair up on the same events: the second
							// finds the file in place.
							ev := testEvent(t, bhiv.Kinds[(w/2)%2], fmt.Sprintf("01ORDER%dW%dE%d", half, w/2, i), 100)
							if err := b.Deliver(context.Background(), ev); err != nil {
								t.Error(err)
								continue
							}
							p, _ := b.Path(ev)
							ops.checkDurable(p, ops.tick())
						}
					})
				}
				wg.Wait()
			}
			deliver(0)
			if midway != nil {
				midway()
				// Close before the unmount (cleanups run last first).
				t.Cleanup(func() { _ = b.Close() })
			}
			deliver(1)
			ops.mu.Lock()
			for i, e := range ops.errs {
				if i == 5 {
					t.Errorf("... %d violations of the order in all", len(ops.errs))
					break
				}
				t.Error(e)
			}
			ops.mu.Unlock()
			n := writers / 2 * each * 2
			if midway != nil {
				n /= 2 // the first half is under the mount
			}
			checkBucketTree(t, dir, n)
		})
	}
}

// orderOps records the syncs and renames of a Bucket in one sequence, and
// checks each rename against the syncs before it.
type orderOps struct {
	real fileOps
	dir  string // the bucket directory, to list its temp files

	mu      sync.Mutex // held across each rename, so the sequence is exact
	seq     int
	rounds  []*syncRound
	renames map[string]renameRec // by final path
	errs    []string
}

// syncRound is one sync of a file system.
type syncRound struct {
	begin, end int    // seq when it began and returned (0: not yet)
	mnt        uint64 // the mount it synced
	// The temp files on that mount when it began, with their sizes.
	temps map[string]int64
}

// renameRec is a file renamed into place.
type renameRec struct {
	seq int
	mnt uint64
}

func (o *orderOps) tick() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	return o.seq
}

func (o *orderOps) syncfs(f *os.File) error {
	var mnt uint64
	rc, err := f.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { mnt, _, err = statxMountAt(int(fd), "", unix.AT_EMPTY_PATH) })
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.seq++
	r := &syncRound{begin: o.seq, mnt: mnt, temps: map[string]int64{}}
	_ = filepath.WalkDir(o.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		if m, size, err := statxMount(p); err == nil && m == mnt {
			r.temps[p] = size
		}
		return nil
	})
	o.rounds = append(o.rounds, r)
	o.mu.Unlock()
	err = o.real.syncfs(f)
	o.mu.Lock()
	o.seq++
	r.end = o.seq
	o.mu.Unlock()
	return err
}

func (o *orderOps) rename(oldpath, newpath string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	mnt, size, err := statxMount(oldpath)
	if err != nil {
		return o.real.rename(oldpath, newpath) // let it fail as it would
	}
	covered := false
	for _, r := range o.rounds {
		if s, ok := r.temps[oldpath]; ok && s == size && r.end != 0 && r.mnt == mnt {
			covered = true
			break
		}
	}
	if err := o.real.rename(oldpath, newpath); err != nil {
		return err
	}
	if !covered {
		o.errs = append(o.errs, fmt.Sprintf("%s renamed to %s before a sync of its file system (mount %d) that began after it was written had returned", oldpath, newpath, mnt))
	}
	o.seq++
	o.renames[newpath] = renameRec{seq: o.seq, mnt: mnt}
	return nil
}

// checkDurable checks that the file was renamed into place and that a sync
// of its file system began after the rename and returned before returned.
func (o *orderOps) checkDurable(path string, returned int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	rec, ok := o.renames[path]
	if !ok {
		o.errs = append(o.errs, fmt.Sprintf("Deliver returned but no rename into %s was seen", path))
		return
	}
	for _, r := range o.rounds {
		if r.begin > rec.seq && r.end != 0 && r.end < returned && r.mnt == rec.mnt {
			return
		}
	}
	o.errs = append(o.errs, fmt.Sprintf("Deliver of %s returned (at %d) before a sync of its file system (mount %d) that began after its rename (at %d) had returned", path, returned, rec.mnt, rec.seq))
}

// statxMount returns the id of the mount path is on, and its size.
func statxMount(path string) (mnt uint64, size int64, err error) {
	return statxMountAt(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW)
}

func statxMountAt(dirfd int, path string, flags int) (mnt uint64, size int64, err error) {
	var st unix.Statx_t
	if err := unix.Statx(dirfd, path, flags, unix.STATX_SIZE|unix.STATX_MNT_ID, &st); err != nil {
		return 0, 0, err
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, 0, fmt.Errorf("statx %s: no mount id (kernel before 5.8)", path)
	}
	return st.Mnt_id, int64(st.Size), nil
}

// mountTmpfs mounts a small tmpfs on dir (created if missing) until the
// end of the test. It skips the test when it cannot (not root, no
// CAP_SYS_ADMIN). Cleanups run last-in first-out: call it before making a
// Bucket that uses dir, so that the Bucket is closed before the unmount.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=0750"); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v (detaching it)", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

// A file whose file system the syncer cannot reach under the bucket
// directory any more (mounted over since it was written) is not reported
// durable.
func TestBucketSyncUnreachableFS(t *testing.T) {
	b := newTestBucket(t, BucketConfig{})
	// No Deliver runs: the syncer is idle, the round is the test's.
	it := &syncItem{tmp: filepath.Join(b.Dir(), ".tmp", "00", "x"), final: filepath.Join(b.Dir(), "x"), fs: 1<<62 + 12345}
	b.syncRound([]*syncItem{it})
	if !errors.Is(it.err, errFSGone) || !retryableDisk(it.err) {
		t.Fatalf("sync of a file on a file system out of reach: %v, want a retryable errFSGone", it.err)
	}
}
