// Package audit reconciles a run of the pipeline: every event the stream
// holds must be at Core and in the bucket, or in the failure log for the
// sink that lacks it (invalid input: in the failure log as such). It is the
// accounting check of the fault-injection suite and of `bhiv audit`.
package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/sinks"
)

// Config says where to look.
type Config struct {
	JS         jetstream.JetStream
	Stream     string // default bhiv.DefaultStreamName
	Durable    string // the consumer's durable, to tell pending from lost; "" skips that
	Decode     bhiv.DecodeOptions
	BucketDir  string
	FailureLog string
	// CoreSeen holds how many times Core received each event id; nil when
	// what Core received is unknown (then Core is not checked).
	CoreSeen map[string]int
	Logger   *slog.Logger
}

// Lost is an event that is neither where it belongs nor in the failure log.
type Lost struct {
	ID        string   `json:"id,omitempty"`
	StreamSeq uint64   `json:"stream_seq"`
	Missing   []string `json:"missing"` // sinks lacking it: "core", "bucket", or "decode" for invalid input
}

// Report is the outcome of a reconciliation.
type Report struct {
	StreamMessages int            `json:"stream_messages"`
	Events         int            `json:"events"`        // distinct valid event ids
	Invalid        int            `json:"invalid_input"` // messages that are not valid events
	CoreKnown      bool           `json:"core_known"`
	AtCore         int            `json:"at_core"`         // distinct ids Core received
	CoreDuplicates int            `json:"core_duplicates"` // extra receipts (allowed)
	InBucket       int            `json:"in_bucket"`
	FailureRecords int            `json:"failure_records"`
	ByClass        map[string]int `json:"failure_records_by_sink_class"`
	Pending        int            `json:"pending"` // not yet processed (above the ack floor)
	Lost           []Lost         `json:"lost"`
	Unexplained    []string       `json:"unexplained_bucket_files"`
}

// OK reports whether nothing is lost.
func (r *Report) OK() bool { return len(r.Lost) == 0 }

// String renders the report as a short table.
func (r *Report) String() string {
	var b strings.Builder
	core := "unknown"
	if r.CoreKnown {
		core = fmt.Sprintf("%d (duplicates %d)", r.AtCore, r.CoreDuplicates)
	}
	fmt.Fprintf(&b, "stream messages  %d\n", r.StreamMessages)
	fmt.Fprintf(&b, "events           %d (+ %d invalid input)\n", r.Events, r.Invalid)
	fmt.Fprintf(&b, "at Core          %s\n", core)
	fmt.Fprintf(&b, "in bucket        %d\n", r.InBucket)
	fmt.Fprintf(&b, "failure records  %d", r.FailureRecords)
	if len(r.ByClass) > 0 {
		keys := make([]string, 0, len(r.ByClass))
		for k := range r.ByClass {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, r.ByClass[k]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "\npending          %d\n", r.Pending)
	fmt.Fprintf(&b, "unexplained      %d bucket file(s)\n", len(r.Unexplained))
	fmt.Fprintf(&b, "lost             %d\n", len(r.Lost))
	for i, l := range r.Lost {
		if i == 20 {
			fmt.Fprintf(&b, "  … and %d more\n", len(r.Lost)-20)
			break
		}
		fmt.Fprintf(&b, "  seq %d id %q missing from %s\n", l.StreamSeq, l.ID, strings.Join(l.Missing, ", "))
	}
	return b.String()
}

// Check reconciles the stream with Core, the bucket and the failure log.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Stream == "" {
		cfg.Stream = bhiv.DefaultStreamName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Report{ByClass: map[string]int{}, CoreKnown: cfg.CoreSeen != nil}

	// What the failure log holds.
	bySinkID := map[string]map[string]bool{} // sink → event id
	bySeq := map[uint64]bool{}               // invalid input and unfetchable messages, by stream seq
	err := sinks.ReadFailureLog(cfg.FailureLog, cfg.Logger, func(rec bhiv.FailureRecord) error {
		r.FailureRecords++
		r.ByClass[rec.Sink+"/"+string(rec.ErrorClass)]++
		if rec.EventID != "" {
			if bySinkID[rec.Sink] == nil {
				bySinkID[rec.Sink] = map[string]bool{}
			}
			bySinkID[rec.Sink][rec.EventID] = true
		} else if rec.StreamSeq != 0 {
			bySeq[rec.StreamSeq] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit: failure log: %w", err)
	}

	// What the bucket holds: event id → present.
	bucket := map[string]bool{}
	if cfg.BucketDir != "" {
		err := filepath.WalkDir(cfg.BucketDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.IsDir() && strings.HasSuffix(path, ".json") {
				bucket[strings.TrimSuffix(d.Name(), ".json")] = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("audit: bucket: %w", err)
		}
	}

	// The durable's ack floor: above it, an unaccounted event may just be pending.
	var floor uint64
	haveFloor := false
	if cfg.Durable != "" {
		cons, err := cfg.JS.Consumer(ctx, cfg.Stream, cfg.Durable)
		if err == nil {
			info, err := cons.Info(ctx)
			if err == nil {
				floor, haveFloor = info.AckFloor.Stream, true
			}
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("audit: durable %s: %w", cfg.Durable, err)
		}
	}

	// Every message of the stream.
	seen := map[string]bool{}
	err = eachMessage(ctx, cfg.JS, cfg.Stream, func(m bhiv.Message) {
		r.StreamMessages++
		pending := haveFloor && m.Sequence > floor
		ev, derr := bhiv.Decode(m, cfg.Decode)
		if derr != nil {
			r.Invalid++
			if !bySeq[m.Sequence] {
				if pending {
					r.Pending++
				} else {
					r.Lost = append(r.Lost, Lost{StreamSeq: m.Sequence, Missing: []string{bhiv.SinkDecode}})
				}
			}
			return
		}
		if seen[ev.ID] {
			return // the same id again: one event
		}
		seen[ev.ID] = true
		r.Events++
		whole := bySeq[m.Sequence] // recorded as a whole (max deliveries, not fetchable)
		var missing []string
		if cfg.CoreSeen != nil && cfg.CoreSeen[ev.ID] == 0 && !bySinkID["core"][ev.ID] && !whole {
			missing = append(missing, "core")
		}
		if bucket[ev.ID] {
			r.InBucket++
		} else if !bySinkID["bucket"][ev.ID] && !whole {
			missing = append(missing, "bucket")
		}
		if len(missing) > 0 {
			if pending {
				r.Pending++
			} else {
				r.Lost = append(r.Lost, Lost{ID: ev.ID, StreamSeq: m.Sequence, Missing: missing})
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for _, n := range cfg.CoreSeen {
		if n > 0 {
			r.AtCore++
			r.CoreDuplicates += n - 1
		}
	}
	for id := range bucket {
		if !seen[id] {
			r.Unexplained = append(r.Unexplained, id)
		}
	}
	sort.Strings(r.Unexplained)
	return r, nil
}

// eachMessage calls fn with every message of the stream, in order.
func eachMessage(ctx context.Context, js jetstream.JetStream, stream string, fn func(bhiv.Message)) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	last := info.State.LastSeq
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("audit: read stream %s: %w", stream, err)
	}
	for {
		batch, err := oc.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("audit: read stream %s: %w", stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("audit: read stream %s: %w", stream, err)
			}
			fn(bhiv.Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
				Stream: stream, Sequence: md.Sequence.Stream, Timestamp: md.Timestamp})
			if md.Sequence.Stream >= last {
				return nil
			}
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) {
			return fmt.Errorf("audit: read stream %s: %w", stream, batch.Error())
		}
		if n == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// ReadCoreRecord reads the core stub's record file into id → receipts.
func ReadCoreRecord(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: core record: %w", err)
	}
	defer f.Close()
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec corestub.Record
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.ID != "" {
			seen[rec.ID]++
		}
	}
	return seen, sc.Err()
}
