//go:build linux

package sinks

import (
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
