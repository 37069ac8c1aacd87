package corestub

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Record is one line of the record file: an accepted event, the content
// mode of the request that carried it, and its envelope in the JSON event
// format, encoded the same way whichever mode it came in.
type Record struct {
	ID    string          `json:"id"`
	Kind  string          `json:"kind"`
	Mode  string          `json:"mode,omitempty"`
	Event json.RawMessage `json:"event,omitempty"`
}

// ReadRecords calls fn with every record of the record file at path, in
// order; a line that is not a record (a torn last line) is skipped.
func ReadRecords(path string, fn func(Record)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ID == "" {
			continue
		}
		fn(r)
	}
	return sc.Err()
}

// loadRecord counts the events the record file at path holds, as if they
// had just been received; a missing file holds none.
func (s *Stub) loadRecord(path string) error {
	err := ReadRecords(path, func(r Record) { s.note(r) })
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("core stub: read record: %w", err)
	}
	return nil
}
