package sinks

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// rotateLocked renames the log at path to <path>.<UTC time> and makes the
// rename durable; the caller holds the lock. It returns the new name, or ""
// when there was no file.
func rotateLocked(path string) (string, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	now := time.Now().UTC()
	var name string
	for {
		name = path + "." + now.Format(rotatedLayout)
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			break
		}
		now = now.Add(time.Nanosecond)
	}
	if err := os.Rename(path, name); err != nil {
		return "", diskErr("rotate", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", diskErr("sync directory", filepath.Dir(path), err)
	}
	return name, nil
}

// rotatedFiles returns the rotated files of the log at path, oldest first.
func rotatedFiles(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, diskErr("read directory", dir, err)
	}
	var names []string
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || e.IsDir() {
			continue
		}
		if _, err := time.Parse(rotatedLayout, suffix); err != nil {
			continue
		}
		names = append(names, filepath.Join(dir, e.Name()))
	}
	sort.Strings(names)
	return names, nil
}

// openLockFile opens (creating) the lock file at path.
func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, logFilePerm)
	if err != nil {
		return nil, diskErr("open lock file", path, err)
	}
	return f, nil
}

// withFlock runs fn holding a flock(2) of the given kind on f.
func withFlock(f *os.File, how int, fn func() error) error {
	if err := flock(f, how); err != nil {
		return err
	}
	defer func() { _ = flock(f, unix.LOCK_UN) }()
	return fn()
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			if err != nil {
				return diskErr("lock", f.Name(), err)
			}
			return nil
		}
	}
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error { return fsyncPath(dir) }
