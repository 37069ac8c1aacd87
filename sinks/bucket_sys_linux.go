//go:build linux

package sinks

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"sync/atomic"

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

// statxMask asks statx for the mode and the mount id of a file.
const statxMask = unix.STATX_MODE | unix.STATX_MNT_ID

// fsOf returns the fsID of a statx result: the mount id, or, on kernels
// before 5.8, which do not give it, the device.
func fsOf(st *unix.Statx_t) fsID {
	if st.Mask&unix.STATX_MNT_ID != 0 {
		return fsID(st.Mnt_id)
	}
	return fsID(unix.Mkdev(st.Dev_major, st.Dev_minor)) | fsByDev
}

// openFS opens dir and returns it with the fsID of the file system it is on.
func openFS(dir string) (*os.File, fsID, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, 0, err
	}
	rc, err := f.SyscallConn()
	var st unix.Statx_t
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.Statx(int(fd), "", unix.AT_EMPTY_PATH, statxMask, &st)
		})
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		f.Close()
		return nil, 0, os.NewSyscallError("statx", err)
	}
	return f, fsOf(&st), nil
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

// writeNewFile creates name (it must not exist) with mode 0640, writes data
// and closes it, with bare system calls: no poller registration, no
// finalizer. It returns the file system the file is on. mode (a
// bucketDir's) says whether files created in that directory come out 0640;
// the first file tells, and while they do not, each is chmod-ed. created is
// false when name could not be created.
func writeNewFile(name string, data []byte, mode *atomic.Int32) (id fsID, created bool, err error) {
	var fd int
	for {
		fd, err = unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, uint32(bucketFilePerm))
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, false, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	for rest := data; len(rest) > 0 && err == nil; {
		var n int
		n, err = unix.Write(fd, rest)
		switch {
		case err == unix.EINTR:
			err = nil
		case err == nil && n == 0:
			err = io.ErrShortWrite
		case err == nil:
			rest = rest[n:]
		}
	}
	var st unix.Statx_t
	if err == nil {
		err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &st)
	}
	if err == nil {
		err = fixMode(fd, fs.FileMode(st.Mode), mode)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, true, &fs.PathError{Op: "write", Path: name, Err: err}
	}
	return fsOf(&st), true, nil
}

// fixMode makes the file 0640 whatever the umask: it checks the first file
// of a directory (its mode is got) and chmods only when files there come
// out otherwise.
func fixMode(fd int, got fs.FileMode, mode *atomic.Int32) error {
	switch mode.Load() {
	case modeExact:
		return nil
	case modeUnknown:
		if got&fs.ModePerm == bucketFilePerm {
			mode.Store(modeExact)
			return nil
		}
		mode.Store(modeChmod)
	}
	return unix.Fchmod(fd, uint32(bucketFilePerm))
}
