package sinks

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
)

// rewriter writes the lines that stay in a rotated file to a temporary file
// beside it, which then replaces it atomically.
type rewriter struct {
	name string // the rotated file
	tmp  *os.File
	out  *bufio.Writer
	kept int
}

// newRewriter starts the rewrite of the rotated file name.
func newRewriter(name string) (*rewriter, error) {
	dir, base := filepath.Split(name)
	tmp, err := os.CreateTemp(dir, "."+base+replayTmpMark+"*")
	if err != nil {
		return nil, fmt.Errorf("replay: %w", diskErr("create temp file in", dir, err))
	}
	return &rewriter{name: name, tmp: tmp, out: bufio.NewWriterSize(tmp, 64<<10)}, nil
}

// keep writes one line that stays.
func (w *rewriter) keep(line []byte) error {
	w.kept++
	_, _ = w.out.Write(line)
	return w.out.WriteByte('\n')
}

// commit puts the lines kept in place of the file, durably, or removes the
// file when none was kept.
func (w *rewriter) commit() error {
	if err := w.out.Flush(); err != nil {
		return fmt.Errorf("replay: %w", diskErr("write", w.tmp.Name(), err))
	}
	if w.kept == 0 {
		if err := os.Remove(w.name); err != nil {
			return fmt.Errorf("replay: %w", diskErr("remove", w.name, err))
		}
	} else {
		if err := w.tmp.Chmod(logFilePerm); err != nil {
			return fmt.Errorf("replay: %w", diskErr("chmod", w.tmp.Name(), err))
		}
		if err := w.tmp.Sync(); err != nil {
			return fmt.Errorf("replay: %w", diskErr("sync", w.tmp.Name(), err))
		}
		if err := os.Rename(w.tmp.Name(), w.name); err != nil {
			return fmt.Errorf("replay: %w", diskErr("rename", w.name, err))
		}
	}
	dir := filepath.Dir(w.name)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("replay: %w", diskErr("sync directory", dir, err))
	}
	return nil
}

// discard closes the temporary file and removes it, unless commit renamed
// it into place.
func (w *rewriter) discard() {
	_ = w.tmp.Close()
	_ = os.Remove(w.tmp.Name())
}
