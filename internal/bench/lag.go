package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// bucketLag returns publish → the event's file renamed into the bucket, for
// every event of sentByID (id → publish time) found in the bucket dir
// (<kind>/<date>/<id>.json). The moment of the rename is the file's ctime,
// which the rename sets (fileChangeTime), read after the run so that the
// measured pipeline pays nothing for it.
func bucketLag(dir string, sentByID map[string]int64) (*Latency, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*", "*", "*.json"))
	if err != nil {
		return nil, err
	}
	var lag []time.Duration
	for _, f := range files {
		sent, ok := sentByID[strings.TrimSuffix(filepath.Base(f), ".json")]
		if !ok {
			continue
		}
		fi, err := os.Lstat(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bench: bucket lag: %w", err)
		}
		ct, ok := fileChangeTime(fi)
		if !ok {
			return nil, nil // not on this system
		}
		lag = append(lag, ct.Sub(time.Unix(0, sent)))
	}
	return percentiles(lag), nil
}
