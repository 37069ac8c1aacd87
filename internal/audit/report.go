package audit

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hackaverse/bhiv"
)

// Lost is a published message that is neither where it belongs nor in the
// failure log.
type Lost struct {
	ID        string    `json:"id,omitempty"` // empty for invalid input without a valid Nats-Msg-Id
	Kind      bhiv.Kind `json:"kind,omitempty"`
	StreamSeq uint64    `json:"stream_seq"` // the first message with this id
	// Missing names what lacks it: MissingCore, MissingBucket, or
	// MissingDecode for invalid input.
	Missing []string `json:"missing"`
}

// ConsumerState is what the durable consumer reported before the check.
type ConsumerState struct {
	Durable       string `json:"durable"`
	Found         bool   `json:"found"`
	AckFloor      uint64 `json:"ack_floor_stream_seq"`
	Delivered     uint64 `json:"delivered_stream_seq"`
	NumPending    uint64 `json:"num_pending"`
	NumAckPending int    `json:"num_ack_pending"`
}

// Report is the outcome of a reconciliation.
type Report struct {
	Stream         string `json:"stream"`
	FirstSeq       uint64 `json:"first_seq"`
	LastSeq        uint64 `json:"last_seq"`
	StreamMessages int    `json:"stream_messages"`
	// Published is Events + Invalid: what had to be accounted for.
	Published int `json:"published"`
	// Events counts distinct valid event ids; RepeatedIDs the further
	// messages that carried an id already seen (counted once).
	Events      int `json:"events"`
	RepeatedIDs int `json:"repeated_ids"`
	Invalid     int `json:"invalid_input"` // messages that are not valid events
	// CoreKnown tells whether AtCore comes from what Core received (true)
	// or is inferred from the consumer's acks and the bucket (false).
	CoreKnown      bool `json:"core_known"`
	AtCore         int  `json:"at_core"`         // events Core has
	CoreDuplicates int  `json:"core_duplicates"` // receipts beyond the first (allowed)
	CoreOther      int  `json:"core_unpublished"`
	InBucket       int  `json:"in_bucket"`
	// FailureRecords counts the failure log's lines, ByClass them by
	// "sink/class"; InFailureLog counts the published messages that at least
	// one record accounts for.
	FailureRecords int            `json:"failure_records"`
	ByClass        map[string]int `json:"failure_records_by_sink_class"`
	InFailureLog   int            `json:"in_failure_log"`
	Consumer       *ConsumerState `json:"consumer,omitempty"`
	// Pending counts messages not accounted for yet that the consumer has
	// not processed (above its ack floor); they are not judged.
	Pending int    `json:"pending"`
	Lost    []Lost `json:"lost"`
	// Unexplained lists bucket keys (files or objects, relative to the
	// bucket's root) that no message of the stream explains.
	Unexplained []string `json:"unexplained_bucket_files"`
}

// OK reports whether nothing is lost.
func (r *Report) OK() bool { return len(r.Lost) == 0 }

// maxListed is how many lost ids and unexplained files String lists.
const maxListed = 20

// String renders the report as a table.
func (r *Report) String() string {
	var b strings.Builder
	row := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "%-16s %s\n", name, fmt.Sprintf(format, args...))
	}
	row("stream", "%s seq %d..%d, %d message(s)", r.Stream, r.FirstSeq, r.LastSeq, r.StreamMessages)
	row("published", "%d (%d events, %d invalid input; %d repeated id(s) counted once)", r.Published, r.Events, r.Invalid, r.RepeatedIDs)
	if c := r.Consumer; c != nil {
		if c.Found {
			row("consumer", "%s: ack floor %d, pending %d, ack pending %d", c.Durable, c.AckFloor, c.NumPending, c.NumAckPending)
		} else {
			row("consumer", "%s: not found (every message judged as processed)", c.Durable)
		}
	}
	if r.CoreKnown {
		row("at Core", "%d (duplicates %d, not in the stream %d)", r.AtCore, r.CoreDuplicates, r.CoreOther)
	} else {
		row("at Core", "%d (inferred from acks and the bucket: no Core record given)", r.AtCore)
	}
	row("in bucket", "%d", r.InBucket)
	fl := fmt.Sprintf("%d record(s)", r.FailureRecords)
	if len(r.ByClass) > 0 {
		keys := make([]string, 0, len(r.ByClass))
		for k := range r.ByClass {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, r.ByClass[k])
		}
		fl += " (" + strings.Join(parts, ", ") + ")"
	}
	row("failure log", "%s, accounting for %d published", fl, r.InFailureLog)
	row("pending", "%d", r.Pending)
	row("unexplained", "%d bucket file(s)", len(r.Unexplained))
	for i, p := range r.Unexplained {
		if i == maxListed {
			fmt.Fprintf(&b, "  … and %d more\n", len(r.Unexplained)-maxListed)
			break
		}
		fmt.Fprintf(&b, "  %s\n", p)
	}
	row("lost", "%d", len(r.Lost))
	for i, l := range r.Lost {
		if i == maxListed {
			fmt.Fprintf(&b, "  … and %d more\n", len(r.Lost)-maxListed)
			break
		}
		if l.ID == "" {
			fmt.Fprintf(&b, "  seq %d invalid input missing from the failure log\n", l.StreamSeq)
			continue
		}
		fmt.Fprintf(&b, "  seq %d id %q missing from %s\n", l.StreamSeq, l.ID, strings.Join(l.Missing, ", "))
	}
	return b.String()
}
