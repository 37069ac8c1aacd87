package bench

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncfs flushes the whole file system holding f, as the Bucket does.
func syncfs(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
