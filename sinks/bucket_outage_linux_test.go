//go:build linux

package sinks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hackaverse/bhiv"
)

// A bucket directory that cannot take any file (here: replaced by a plain
// file, which even root cannot write into) is an outage: Deliver says
// bhiv.ErrUnavailable and Available is false until a probe succeeds. A
// failure of one event's own path is not.
func TestBucketOutage(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			b := newTestBucket(t, BucketConfig{NoFsync: noFsync, Retries: -1})
			ctx := context.Background()
			if err := b.Deliver(ctx, testEvent(t, bhiv.KindExecution, "01OUTAGE0", 10)); err != nil {
				t.Fatal(err)
			}

			// One event's date directory is a file: that event fails, the
			// bucket stays available.
			other := testEvent(t, bhiv.KindReward, "01OUTAGE1", 10)
			other.Time = time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC)
			p, _ := b.Path(other)
			writeFile(t, filepath.Dir(p), "in the way")
			err := b.Deliver(ctx, other)
			if err == nil || errors.Is(err, bhiv.ErrUnavailable) || !b.Available() {
				t.Fatalf("one event's path blocked: %v, available %v; want a plain failure, still available", err, b.Available())
			}

			swap := func() {
				t.Helper()
				if err := unix.Renameat2(unix.AT_FDCWD, b.Dir()+".swap", unix.AT_FDCWD, b.Dir(), unix.RENAME_EXCHANGE); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(b.Dir()+".swap", []byte("not a directory"), 0o640); err != nil {
				t.Fatal(err)
			}
			swap()
			ev := testEvent(t, bhiv.KindExecution, "01OUTAGE2", 10)
			err = b.Deliver(ctx, ev)
			var se *bhiv.SinkError
			if !errors.Is(err, bhiv.ErrUnavailable) || !errors.As(err, &se) || se.Class != bhiv.ClassRetryableExhausted {
				t.Fatalf("Deliver with the bucket gone: %v, want a retryable_exhausted bhiv.ErrUnavailable", err)
			}
			if b.Available() {
				t.Fatal("available while the bucket directory is a file")
			}
			time.Sleep(2 * bucketProbeEvery)
			if b.Available() {
				t.Fatal("available after a probe while the bucket directory is a file")
			}

			swap()
			deadline := time.Now().Add(5 * time.Second)
			for !b.Available() {
				if time.Now().After(deadline) {
					t.Fatal("still unavailable 5s after the bucket came back")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := b.Deliver(ctx, ev); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Dir(p)); err != nil {
				t.Fatal(err)
			}
			checkBucketTree(t, b.Dir(), 2) // no probe file left behind
		})
	}
}

// Files are 0640 and directories 0750 whatever the umask: the bucket checks
// the first file of each directory and chmods when the umask stripped bits.
func TestBucketModeUnderUmask(t *testing.T) {
	for _, mask := range []int{0o022, 0o077, 0o277} {
		t.Run(fmt.Sprintf("umask=%03o", mask), func(t *testing.T) {
			old := unix.Umask(mask)
			defer unix.Umask(old)
			b := newTestBucket(t, BucketConfig{})
			for i := range 3 {
				for _, k := range []bhiv.Kind{bhiv.KindExecution, bhiv.KindReward} {
					if err := b.Deliver(context.Background(), testEvent(t, k, fmt.Sprintf("01UMASK%d", i), 10)); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkBucketTree(t, b.Dir(), 6)
		})
	}
}
