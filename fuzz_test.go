package bhiv_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// parseFuzzHeader turns "Key: value" lines into a header map.
func parseFuzzHeader(s string) map[string][]string {
	if s == "" {
		return nil
	}
	h := make(map[string][]string)
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, ":")
		h[k] = append(h[k], strings.TrimSpace(v))
	}
	return h
}

// FuzzDecode shows that Decode never panics and that it either returns an
// event that validates and survives a re-encode and re-decode unchanged, or a
// *bhiv.DecodeError. The seed corpus is testdata/fuzz/FuzzDecode, which plain
// `go test` runs; `go test -fuzz FuzzDecode` explores further.
func FuzzDecode(f *testing.F) {
	f.Add("bhiv.events.execution", "", []byte(`{"team_id":"team_42","action":"analyze_data"}`), "BHIV", uint64(1), int64(1714557600000000000), 0)
	f.Fuzz(func(t *testing.T, subject, header string, data []byte, stream string, seq uint64, unixNano int64, maxBytes int) {
		msg := bhiv.Message{
			Subject:  subject,
			Header:   parseFuzzHeader(header),
			Data:     data,
			Stream:   stream,
			Sequence: seq,
		}
		if unixNano != 0 {
			msg.Timestamp = time.Unix(0, unixNano)
		}
		opts := bhiv.DecodeOptions{MaxBytes: maxBytes}
		ev, err := bhiv.Decode(msg, opts)
		if err != nil {
			var de *bhiv.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *bhiv.DecodeError", err, err)
			}
			if de.Reason == nil {
				t.Fatalf("DecodeError without a reason: %v", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("decoded event does not validate: %v\n%+v", err, ev)
		}
		b1, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v\n%+v", err, ev)
		}
		// (json.Marshal also HTML-escapes what MarshalJSON returns.)
		if enc, err := ev.JSON(); err != nil {
			t.Fatal(err)
		} else if m, _ := ev.MarshalJSON(); !bytes.Equal(enc, m) {
			t.Fatalf("the encoding made at decode differs from MarshalJSON's:\n%s\n%s", enc, m)
		}
		ev2, err := bhiv.Decode(bhiv.Message{Subject: subject, Data: b1}, bhiv.DecodeOptions{MaxBytes: len(b1)})
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, b1)
		}
		b2, err := json.Marshal(ev2)
		if err != nil {
			t.Fatalf("second encode: %v", err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("re-decode changed the event:\n%s\n%s", b1, b2)
		}
		if ev2.ID != ev.ID || ev2.Type != ev.Type || ev2.Subject != ev.Subject || !ev2.Time.Equal(ev.Time) {
			t.Fatalf("re-decode changed attributes: %+v vs %+v", ev, ev2)
		}
	})
}
