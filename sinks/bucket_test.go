package sinks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

func TestBucketPath(t *testing.T) {
	b := newTestBucket(t, BucketConfig{NoFsync: true})
	ok := testEvent(t, bhiv.KindReward, "01OK", 0)
	traversal := func(id string) *bhiv.Event {
		ev := *ok
		ev.ID = id
		return &ev
	}
	badType := *ok
	badType.Type = "bhiv.../../x"
	noTime := *ok
	noTime.Time = time.Time{}
	tests := []struct {
		name string
		ev   *bhiv.Event
		want string // relative to the bucket dir; "" = error
	}{
		{"valid", ok, "reward/2026-11-28/01OK.json"},
		{"date is utc", testEvent(t, bhiv.KindExecution, "a.b:c-d_e", 0), "execution/2026-11-28/a.b:c-d_e.json"},
		{"dot dot slash", traversal("../../etc/passwd"), ""},
		{"slash", traversal("a/b"), ""},
		{"backslash", traversal(`a\..\..\b`), ""},
		{"dot dot", traversal(".."), ""},
		{"hidden", traversal(".tmp-x"), ""},
		{"empty", traversal(""), ""},
		{"nul", traversal("a\x00b"), ""},
		{"absolute", traversal("/etc/passwd"), ""},
		{"too long", traversal(strings.Repeat("a", bhiv.MaxIDLen+1)), ""},
		{"unknown type", &badType, ""},
		{"no time", &noTime, ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := b.Path(tt.ev)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("Path = %q, want an error", p)
				}
				derr := b.Deliver(context.Background(), tt.ev)
				var se *bhiv.SinkError
				if !errors.As(derr, &se) || se.Class != bhiv.ClassPermanent || se.Sink != BucketName {
					t.Fatalf("Deliver error %v, want a permanent bucket SinkError", derr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(b.Dir(), tt.want); p != want {
				t.Fatalf("Path = %q, want %q", p, want)
			}
		})
	}
	// Nothing was written anywhere: the parent of the bucket holds only the
	// empty bucket directory.
	parent := filepath.Dir(b.Dir())
	var files []string
	_ = filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("files written: %v", files)
	}
}

func TestBucketDeliver(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			b := newTestBucket(t, BucketConfig{NoFsync: noFsync})
			ev := testEvent(t, bhiv.KindExecution, "01DELIVER", 1000)
			want, _ := json.Marshal(ev)
			want = append(want, '\n')
			for range 2 {
				if err := b.Deliver(context.Background(), ev); err != nil {
					t.Fatal(err)
				}
			}
			p, _ := b.Path(ev)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("file holds\n%s\nwant\n%s", got, want)
			}
			checkBucketTree(t, b.Dir(), 1)
		})
	}
}

// The first event written under an id wins: the same event again (or the
// same JSON spelled differently) is a success, a different one a permanent
// ErrConflict that leaves the file alone.
func TestBucketConflictingEvent(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			b := newTestBucket(t, BucketConfig{NoFsync: noFsync})
			first := testEvent(t, bhiv.KindExecution, "01CONFLICT", 100)
			if err := b.Deliver(context.Background(), first); err != nil {
				t.Fatal(err)
			}
			p, _ := b.Path(first)
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}

			second := testEvent(t, bhiv.KindExecution, "01CONFLICT", 100)
			second.Source = "another-service"
			err = b.Deliver(context.Background(), second)
			var se *bhiv.SinkError
			if !errors.As(err, &se) || se.Class != bhiv.ClassPermanent || se.Sink != BucketName || !errors.Is(err, ErrConflict) {
				t.Fatalf("Deliver of a different event under the same id: %v, want a permanent ErrConflict", err)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
			if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
				t.Errorf("the file changed:\n%s\nwant\n%s", got, want)
			}

			// The same JSON value, spelled with other spacing by an older
			// writer, is the same event.
			var v any
			if err := json.Unmarshal(want, &v); err != nil {
				t.Fatal(err)
			}
			indented, _ := json.MarshalIndent(v, "", "  ")
			writeFile(t, p, string(indented))
			if err := b.Deliver(context.Background(), first); err != nil {
				t.Errorf("the same event, spelled differently on disk: %v", err)
			}
			checkBucketTree(t, b.Dir(), 1)
		})
	}
}

// Two events that differ only in an integer beyond float64's 53 bits are
// different events: the second is a conflict, not a redelivery.
func TestBucketConflictLargeInteger(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			b := newTestBucket(t, BucketConfig{NoFsync: noFsync})
			event := func(n string) *bhiv.Event {
				ev, err := bhiv.New(bhiv.KindReward, "test", "01BIGINT", json.RawMessage(`{"team_id":"t","points":`+n+`}`))
				if err != nil {
					t.Fatal(err)
				}
				ev.Time = testTime.UTC()
				return &ev
			}
			if err := b.Deliver(context.Background(), event("9007199254740993")); err != nil {
				t.Fatal(err)
			}
			err := b.Deliver(context.Background(), event("9007199254740992"))
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("Deliver of the same id with points 9007199254740992 after 9007199254740993: %v, want ErrConflict", err)
			}
			// The same number spelled otherwise is the same event.
			if err := b.Deliver(context.Background(), event("9.007199254740993e15")); err != nil {
				t.Fatalf("the same event with the number spelled 9.007199254740993e15: %v", err)
			}
			checkBucketTree(t, b.Dir(), 1)
		})
	}
}

func TestSameJSON(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{`{"a":1,"b":"x"}`, `{"a":1,"b":"x"}`, true},
		{`{"a":1,"b":"x"}`, "{\n  \"b\": \"x\",\n  \"a\": 1\n}\n", true},
		{`{"n":9007199254740993}`, `{"n":9007199254740992}`, false},
		{`{"n":123456789012345678901234567890}`, `{"n":123456789012345678901234567891}`, false},
		{`{"n":0.1}`, `{"n":0.10000000000000001}`, false},
		{`{"n":1}`, `{"n":1.0}`, true},
		{`{"n":1}`, `{"n":1e0}`, true},
		{`{"n":100}`, `{"n":1E+2}`, true},
		{`{"n":1.5}`, `{"n":15e-1}`, true},
		{`{"n":-2500}`, `{"n":-2.5e3}`, true},
		{`{"n":0}`, `{"n":-0.0}`, true},
		{`{"n":0}`, `{"n":0e99}`, true},
		{`{"n":1}`, `{"n":-1}`, false},
		{`{"n":1e400}`, `{"n": 10E399}`, true}, // beyond float64
		{`{"n":1e400}`, `{"n":1e401}`, false},
		{`{"n":1e99999999999999999999}`, `{ "n":1e99999999999999999999}`, true},
		{`[1,2,3]`, `[1,3,2]`, false},
		{`{"a":"1"}`, `{"a":1}`, false},
		{`{"a":null}`, `{}`, false},
		{`{"a":1}`, `{"a":1} {"a":1}`, false},
		{`{"a":1}`, `{"a":`, false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" vs "+tt.b, func(t *testing.T) {
			if got := sameJSON([]byte(tt.a), []byte(tt.b)); got != tt.same {
				t.Errorf("sameJSON = %v, want %v", got, tt.same)
			}
			if got := sameJSON([]byte(tt.b), []byte(tt.a)); got != tt.same {
				t.Errorf("sameJSON reversed = %v, want %v", got, tt.same)
			}
		})
	}
}

// checkBucketTree checks that the bucket holds exactly files event files
// with mode 0640 under directories with mode 0750, each a valid envelope
// named after its id, and no temporary file.
func checkBucketTree(t *testing.T, dir string, files int) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && fi.Mode().Perm() != 0o750 {
				t.Errorf("dir %s has mode %v, want 0750", p, fi.Mode().Perm())
			}
			return nil
		}
		n++
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("file %s has mode %v, want 0640", p, fi.Mode().Perm())
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			t.Errorf("temporary file left: %s", p)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var ev bhiv.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if d.Name() != ev.ID+".json" {
			t.Errorf("%s holds event %s", p, ev.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != files {
		t.Errorf("bucket holds %d files, want %d", n, files)
	}
}

func newTestBucket(t *testing.T, cfg BucketConfig) *Bucket {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "bucket")
	}
	b, err := NewBucket(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func TestClassifyDisk(t *testing.T) {
	tests := []struct {
		err       error
		reason    string
		retryable bool
	}{
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, "disk full", true},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, "permission denied", true},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EROFS}, "read-only file system", true},
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.EIO}, "I/O error", true},
		{&os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EDQUOT}, "disk quota exceeded", true},
		{syscall.ENOTDIR, "a file stands where a directory must be", true},
		{syscall.EXDEV, syscall.EXDEV.Error(), true},
		{context.Canceled, "cancelled", false},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "cancelled", false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			err := diskErr("write", "/b/x.json", tt.err)
			var de *DiskError
			if !errors.As(err, &de) {
				t.Fatalf("%T is not a *DiskError", err)
			}
			if de.Reason != tt.reason || de.Retryable != tt.retryable {
				t.Errorf("reason %q retryable %v, want %q %v", de.Reason, de.Retryable, tt.reason, tt.retryable)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("errors.Is(%v, %v) is false", err, tt.err)
			}
			if !strings.Contains(err.Error(), "/b/x.json") || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not name the path and the reason", err)
			}
		})
	}
	if diskErr("x", "y", nil) != nil {
		t.Error("diskErr(nil) is not nil")
	}
}

// TestBucketDiskErrors provokes real disk errors (the tests run as root, so
// permission bits alone stop nothing) and checks that each is retried and
// then reported as retryable_exhausted, naming the path and why.
func TestBucketDiskErrors(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, dir string) // makes the bucket unwritable
		errno  syscall.Errno
		reason string
	}{
		{
			name: "file where the kind dir must be",
			break_: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "reward"), "")
			},
			errno:  syscall.ENOTDIR,
			reason: "a file stands where a directory must be",
		},
		{
			name: "immutable date dir",
			break_: func(t *testing.T, dir string) {
				d := filepath.Join(dir, "reward", "2026-11-28")
				if err := os.MkdirAll(d, 0o750); err != nil {
					t.Fatal(err)
				}
				chattr(t, "+i", d)
			},
			errno:  syscall.EPERM,
			reason: "operation not permitted",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "bucket")
			b := newTestBucket(t, BucketConfig{Dir: dir, Retries: 2, RetryDelay: time.Millisecond})
			tt.break_(t, dir)
			ev := testEvent(t, bhiv.KindReward, "01DISK", 0)
			err := b.Deliver(context.Background(), ev)
			var se *bhiv.SinkError
			if !errors.As(err, &se) {
				t.Fatalf("Deliver error %v is not a SinkError", err)
			}
			if se.Class != bhiv.ClassRetryableExhausted || se.Attempts != 3 {
				t.Errorf("class %s after %d attempts, want retryable_exhausted after 3", se.Class, se.Attempts)
			}
			if !errors.Is(err, tt.errno) {
				t.Errorf("error %v is not %v", err, tt.errno)
			}
			msg := err.Error()
			if !strings.Contains(msg, dir) || !strings.Contains(msg, tt.reason) {
				t.Errorf("error %q does not name the path under %s and the reason %q", msg, dir, tt.reason)
			}
			checkNoEventFile(t, dir)
		})
	}
}

// TestBucketPermissionDenied runs a Bucket as an unprivileged user (uid
// 65534) in a child process, in a directory it may not write: a real EACCES.
func TestBucketPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	tmp := t.TempDir()
	for _, d := range []string{tmp, filepath.Dir(tmp)} { // t.TempDir makes them 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary's own directory is private to root: copy it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "sinks.test")
	copyFile(t, self, bin, 0o755)
	dir := filepath.Join(tmp, "bucket") // root's, 0755: nobody may not write
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), childEnv+"=bucket-denied", "BHIV_TEST_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	msg := string(out)
	for _, want := range []string{"class=retryable_exhausted", "attempts=3", "eacces=true", "permission denied", dir} {
		if !strings.Contains(msg, want) {
			t.Errorf("child reported %q, want it to contain %q", msg, want)
		}
	}
	checkNoEventFile(t, dir)
}

func init() {
	children["bucket-denied"] = func() int {
		b, err := NewBucket(BucketConfig{Dir: os.Getenv("BHIV_TEST_DIR"), Retries: 2, RetryDelay: time.Millisecond})
		if err != nil {
			fmt.Println("NewBucket:", err)
			return 1
		}
		defer b.Close()
		err = b.Deliver(context.Background(), testEvent(nopTB{}, bhiv.KindReward, "01DENIED", 0))
		var se *bhiv.SinkError
		if !errors.As(err, &se) {
			fmt.Println("not a SinkError:", err)
			return 1
		}
		fmt.Printf("class=%s attempts=%d eacces=%v err=%v\n", se.Class, se.Attempts, errors.Is(err, syscall.EACCES), err)
		return 0
	}
}

// TestBucketRetryRecovers checks that a disk error cleared during the
// retries does not fail the write.
func TestBucketRetryRecovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bucket")
	block := filepath.Join(dir, "reward")
	var once sync.Once
	logger := slog.New(hookHandler{fn: func(r slog.Record) {
		if strings.Contains(r.Message, "retrying") {
			once.Do(func() { _ = os.Remove(block) }) // the operator fixes the disk
		}
	}})
	b := newTestBucket(t, BucketConfig{Dir: dir, Retries: 5, RetryDelay: time.Millisecond, Logger: logger})
	writeFile(t, block, "")
	if err := b.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01RECOVER", 0)); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	checkBucketTree(t, dir, 1)
}

func TestBucketConcurrentWriters(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			b := newTestBucket(t, BucketConfig{NoFsync: noFsync})
			const writers, each = 64, 20
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						// Every event is written by two writers.
						id := fmt.Sprintf("01W%02dE%02d", w/2, i)
						if err := b.Deliver(context.Background(), testEvent(t, bhiv.Kinds[(w/2)%2], id, 500)); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			checkBucketTree(t, b.Dir(), writers/2*each)
		})
	}
}

// Temp files are created in the shard directories under .tmp and renamed
// across into place; when the file system refuses that (EXDEV), they go
// next to their final file from then on.
func TestBucketTempDirs(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			b := newTestBucket(t, BucketConfig{NoFsync: noFsync})
			ctx := context.Background()
			for i := range 3 {
				if err := b.Deliver(ctx, testEvent(t, bhiv.KindExecution, fmt.Sprintf("01SHARD%d", i), 10)); err != nil {
					t.Fatal(err)
				}
			}
			shards, _ := filepath.Glob(filepath.Join(b.Dir(), tempDirName, "*"))
			if len(shards) != 3 || b.tempInPlace.Load() {
				t.Errorf("shard directories %v (in place %v), want 3 used", shards, b.tempInPlace.Load())
			}
			checkBucketTree(t, b.Dir(), 3)

			// A rename across directories refused: the write is redone
			// with the temp file next to its final file.
			ev := testEvent(t, bhiv.KindReward, "01XDEV", 10)
			p, _ := b.Path(ev)
			data, _ := json.Marshal(ev)
			data = append(data, '\n')
			tmp := filepath.Join(b.Dir(), tempDirName, "00", tmpPrefix+"01XDEV.json-x")
			writeFile(t, tmp, "partial")
			exdev := diskErr("rename", p, &os.LinkError{Op: "rename", Old: tmp, New: p, Err: syscall.EXDEV})
			_ = os.Remove(tmp) // as place does
			if err := b.placed(ctx, tmp, p, data, exdev); err != nil {
				t.Fatal(err)
			}
			if !b.tempInPlace.Load() {
				t.Error("EXDEV did not move temp files next to their final file")
			}
			if err := b.Deliver(ctx, testEvent(t, bhiv.KindReward, "01XDEV2", 10)); err != nil {
				t.Fatal(err)
			}
			checkBucketTree(t, b.Dir(), 5)
		})
	}
}

func TestBucketClose(t *testing.T) {
	b := newTestBucket(t, BucketConfig{})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err := b.Deliver(context.Background(), testEvent(t, bhiv.KindReward, "01CLOSED", 0))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Deliver after Close: %v, want ErrClosed", err)
	}
}

// Close while writers are delivering: every Deliver either succeeded, and
// its file is in place, or failed with ErrClosed; Close returns after the
// files handed over are done, and no temp file is left.
func TestBucketCloseInFlight(t *testing.T) {
	b := newTestBucket(t, BucketConfig{})
	const writers = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	var written []string
	started := make(chan struct{}, writers)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				ev := testEvent(t, bhiv.KindExecution, fmt.Sprintf("01CLOSING%02dE%04d", w, i), 100)
				err := b.Deliver(context.Background(), ev)
				if i == 0 {
					started <- struct{}{}
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				p, _ := b.Path(ev)
				mu.Lock()
				written = append(written, p)
				mu.Unlock()
			}
		})
	}
	for range writers {
		<-started
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, p := range written {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Deliver succeeded but: %v", err)
		}
	}
	checkBucketTree(t, b.Dir(), len(written))
}

func TestBucketRemovesStaleTemps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bucket")
	stale := filepath.Join(dir, "reward", "2026-11-28", tmpPrefix+"01X.json-abc")
	keep := filepath.Join(dir, "reward", "2026-11-28", "01X.json")
	fresh := filepath.Join(dir, "reward", "2026-11-28", tmpPrefix+"01Y.json-def")
	staleShard := filepath.Join(dir, tempDirName, "05", tmpPrefix+"01Z.json-abc")
	writeFile(t, stale, `{"partial`)
	writeFile(t, staleShard, `{"partial`)
	if err := os.Chtimes(staleShard, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fresh, `{"another process is writing`)
	writeFile(t, keep, `{}`)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	newTestBucket(t, BucketConfig{Dir: dir})
	for _, p := range []string{stale, staleShard} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp file %s still there: %v", p, err)
		}
	}
	// A fresh temp file may be another replica's write in progress.
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh temp file was removed: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("event file removed: %v", err)
	}
}

// TestBucketKilledWriter kills a child process writing large events from 8
// goroutines with SIGKILL in mid-stream, then checks that every event file
// is complete: a crash never leaves a partial <id>.json.
func TestBucketKilledWriter(t *testing.T) {
	for _, noFsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("nofsync=%v", noFsync), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "bucket")
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), childEnv+"=bucket-writer", "BHIV_TEST_DIR="+dir, "BHIV_TEST_NOFSYNC="+strconv.FormatBool(noFsync))
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until the child has written 100 events, then kill it.
			sc := bufio.NewScanner(stdout)
			written := 0
			for written < 100 && sc.Scan() {
				written++
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, stdout)
			_ = cmd.Wait()
			if written < 100 {
				t.Fatalf("child wrote only %d events before it died", written)
			}
			// Every event file must hold the exact envelope.
			files := 0
			temps := 0
			_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				if strings.HasPrefix(d.Name(), tmpPrefix) {
					temps++
					return nil
				}
				files++
				id := strings.TrimSuffix(d.Name(), ".json")
				want, _ := json.Marshal(killedWriterEvent(t, id))
				got, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(want)+"\n" {
					t.Errorf("%s is partial: %d bytes, want %d", p, len(got), len(want)+1)
				}
				return nil
			})
			if files < 100 {
				t.Errorf("%d event files, want at least the 100 reported written", files)
			}
			t.Logf("%d event files, %d temporary files after the kill", files, temps)
			// A restart removes the temporary files.
			newTestBucket(t, BucketConfig{Dir: dir})
			checkBucketTree(t, dir, files)
		})
	}
}

func killedWriterEvent(tb testing.TB, id string) *bhiv.Event {
	return testEvent(tb, bhiv.KindExecution, id, 32<<10)
}

func init() {
	children["bucket-writer"] = func() int {
		noFsync, _ := strconv.ParseBool(os.Getenv("BHIV_TEST_NOFSYNC"))
		b, err := NewBucket(BucketConfig{Dir: os.Getenv("BHIV_TEST_DIR"), NoFsync: noFsync})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					id := fmt.Sprintf("01K%dE%06d", w, i)
					if err := b.Deliver(context.Background(), killedWriterEvent(nopTB{}, id)); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					mu.Lock()
					fmt.Println(id) // written: the parent counts these
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return 0
	}
}

func checkNoEventFile(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			t.Errorf("event file written: %s", p)
		}
		return nil
	})
}

// chattr runs chattr(1) on path and undoes it at cleanup; it skips the test
// when the file system or the capabilities do not allow it.
func chattr(t *testing.T, flag, path string) {
	t.Helper()
	if out, err := exec.Command("chattr", flag, path).CombinedOutput(); err != nil {
		t.Skipf("chattr %s %s: %v: %s", flag, path, err, out)
	}
	undo := "-" + flag[1:]
	t.Cleanup(func() {
		if out, err := exec.Command("chattr", undo, path).CombinedOutput(); err != nil {
			t.Errorf("chattr %s %s: %v: %s", undo, path, err, out)
		}
	})
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string, perm fs.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, perm); err != nil {
		t.Fatal(err)
	}
}

// nopTB is a testing.TB for helpers called from child processes; its
// Fatal exits.
type nopTB struct{ testing.TB }

func (nopTB) Helper()                      {}
func (nopTB) Fatal(args ...any)            { fmt.Fprintln(os.Stderr, args...); os.Exit(1) }
func (nopTB) Fatalf(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...); os.Exit(1) }

// hookHandler is a slog.Handler that calls fn with every record.
type hookHandler struct{ fn func(slog.Record) }

func (h hookHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h hookHandler) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h hookHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h hookHandler) WithGroup(string) slog.Handler                 { return h }
