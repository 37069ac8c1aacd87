package bench

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fileChangeTime returns the file's ctime: the last change of its inode,
// which a rename sets on Linux file systems (ext4, xfs, btrfs, tmpfs).
func fileChangeTime(fi os.FileInfo) (time.Time, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec), true
}

// changeTimeTick returns the resolution of the kernel's coarse clock, from
// which it takes file times: a ctime reads up to this much early.
func changeTimeTick() time.Duration {
	var ts unix.Timespec
	if unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
