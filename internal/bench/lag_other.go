//go:build !linux

package bench

import (
	"os"
	"time"
)

// fileChangeTime is not implemented here: the bucket lag is not measured.
func fileChangeTime(os.FileInfo) (time.Time, bool) { return time.Time{}, false }

// changeTimeTick is unknown here.
func changeTimeTick() time.Duration { return 0 }
