//go:build !linux

package sinks

import (
	"errors"
	"os"
	"sync/atomic"
)

// haveSyncfs says whether syncfs(2) is there to sync a whole file system:
// not here, so the syncer fsyncs each file and directory instead.
const haveSyncfs = false

func syncfs(*os.File) error { return errors.ErrUnsupported }

// openFS is not used where there is no syncfs.
func openFS(string) (*os.File, fsID, error) { return nil, 0, errors.ErrUnsupported }

// processAlive cannot tell here: every process counts as alive, so only
// old temp files are removed.
func processAlive(int) bool { return true }

// renameNoReplace renames oldpath to newpath unless newpath exists, in which
// case it fails with an error that matches fs.ErrExist.
func renameNoReplace(oldpath, newpath string) error { return linkAndRemove(oldpath, newpath) }

// writeNewFile creates name (it must not exist) with mode 0640 whatever the
// umask, writes data and closes it. The fsID it returns means nothing here
// (every file is synced on its own). created is false when name could not
// be created.
func writeNewFile(name string, data []byte, _ *atomic.Int32) (_ fsID, created bool, err error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, bucketFilePerm)
	if err != nil {
		return 0, false, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(bucketFilePerm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return 0, true, err
}
