package sinks

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
