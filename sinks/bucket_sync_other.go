//go:build !linux

package sinks

import (
	"errors"
	"os"
)

// haveSyncfs says whether syncfs(2) is there to sync a whole file system:
// not here, so the syncer fsyncs each file and directory instead.
const haveSyncfs = false

func syncfs(*os.File) error { return errors.ErrUnsupported }

// processAlive cannot tell here: every process counts as alive, so only
// old temp files are removed.
func processAlive(int) bool { return true }

// renameNoReplace renames oldpath to newpath unless newpath exists, in which
// case it fails with an error that matches fs.ErrExist.
func renameNoReplace(oldpath, newpath string) error { return linkAndRemove(oldpath, newpath) }
