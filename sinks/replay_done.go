package sinks

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// donePath is the file of the keys of the records a replay has sent
// (crash safety, see Replay): <path>.replay-done.
func (r *replayer) donePath() string { return r.path + ".replay-done" }

// readDone reads the keys a killed replay left, if any.
func (r *replayer) readDone() error {
	r.done = map[string]bool{}
	f, err := os.Open(r.donePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("replay: %w", diskErr("open", r.donePath(), err))
	}
	defer f.Close()
	err = scanLines(f, func(line []byte, _ int, torn bool) error {
		if !torn {
			r.done[string(line)] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	return nil
}

// loadDone reads the keys a killed replay left and opens the file for more.
func (r *replayer) loadDone() error {
	if err := r.readDone(); err != nil {
		return err
	}
	if len(r.done) > 0 {
		r.log.Info("replay: resuming after an interrupted replay", "sent_before", len(r.done))
	}
	f, err := openAppend(r.donePath())
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	r.doneFile = f
	return nil
}

func (r *replayer) closeDone() error {
	if r.doneFile == nil {
		return nil
	}
	err := r.doneFile.Close()
	r.doneFile = nil
	if err != nil {
		return fmt.Errorf("replay: %w", diskErr("close", r.donePath(), err))
	}
	return nil
}

// markDone durably records that the record with key went through.
func (r *replayer) markDone(key string) error {
	if _, err := r.doneFile.WriteString(key + "\n"); err != nil {
		return diskErr("append to", r.donePath(), err)
	}
	if err := r.doneFile.Sync(); err != nil {
		return diskErr("sync", r.donePath(), err)
	}
	return nil
}

func lineKey(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}
