package sinks

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/lmittmann/tint"
	"golang.org/x/sys/unix"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
)

// ReadFailureLog calls fn with every record of the log at path: those of the
// rotated files first, oldest first, then those of path. Lines that are not
// records, such as a torn last line a crash left, are skipped with a warning
// to logger. A missing log holds no records. It stops at the first error fn
// returns and returns it.
func ReadFailureLog(path string, logger *slog.Logger, fn func(bhiv.FailureRecord) error) error {
	logger = config.Logger(logger)
	files, err := openLogFiles(path)
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	for _, f := range files {
		err := scanLines(f, func(line []byte, n int, torn bool) error {
			rec, err := parseRecord(line)
			if err != nil {
				warnBadLine(logger, f.Name(), n, torn, err)
				return nil
			}
			return fn(rec)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// openLogFiles opens the rotated files of the log at path and the log
// itself, oldest first, all at one instant: under the shared lock, so that
// no rotation happens in between.
func openLogFiles(path string) (files []*os.File, err error) {
	open := func() error {
		names, err := rotatedFiles(path)
		if err != nil {
			return err
		}
		names = append(names, path)
		for _, n := range names {
			f, err := os.Open(n)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return diskErr("open", n, err)
			}
			files = append(files, f)
		}
		return nil
	}
	if lock, lerr := os.Open(path + ".lock"); lerr == nil {
		err = withFlock(lock, unix.LOCK_SH, open)
		_ = lock.Close()
	} else {
		err = open()
	}
	if err != nil {
		for _, f := range files {
			_ = f.Close()
		}
		return nil, err
	}
	return files, nil
}

// scanLines calls fn with each line of r, without its newline, numbered
// from 1; torn is set for a last line with no newline.
func scanLines(r io.Reader, fn func(line []byte, n int, torn bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			torn := line[len(line)-1] != '\n'
			if !torn {
				line = line[:len(line)-1]
			}
			if len(line) > 0 {
				if ferr := fn(line, n, torn); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return diskErr("read", nameOf(r), err)
		}
	}
}

func nameOf(r io.Reader) string {
	if f, ok := r.(*os.File); ok {
		return f.Name()
	}
	return "failure log"
}

// parseRecord decodes one line of the log.
func parseRecord(line []byte) (bhiv.FailureRecord, error) {
	var rec bhiv.FailureRecord
	if err := json.Unmarshal(line, &rec); err != nil {
		return rec, err
	}
	if rec.Sink == "" || rec.ErrorClass == "" {
		return rec, errors.New("not a failure record: sink or error_class missing")
	}
	return rec, nil
}

func warnBadLine(logger *slog.Logger, file string, n int, torn bool, err error) {
	if torn {
		logger.Warn("failure log: skipping torn last line (a crash during a write)", "file", file, "line", n, tint.Err(err))
		return
	}
	logger.Warn("failure log: skipping a line that is not a record", "file", file, "line", n, tint.Err(err))
}
