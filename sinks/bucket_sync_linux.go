//go:build linux

package sinks

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// haveSyncfs says whether syncfs(2) is there to sync a whole file system.
const haveSyncfs = true

// syncfs makes every dirty file and directory entry of the file system
// holding f durable.
func syncfs(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Syncfs(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("syncfs", serr)
	}
	return nil
}

// processAlive reports whether a process with this id runs on this host.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}

// renameNoReplace renames oldpath to newpath unless newpath exists, in which
// case it fails with an error that matches fs.ErrExist. It is atomic
// (renameat2 RENAME_NOREPLACE); on a file system without that flag it links
// and then removes oldpath.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return linkAndRemove(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}
