//go:build !linux

package bench

import "os"

// syncfs has no portable equivalent: fsync the directory instead (a lower
// bound on the cost of the Bucket's group commit on Linux).
func syncfs(f *os.File) error { return f.Sync() }
