package bhiv

import (
	"encoding/json"
	"time"
)

// SinkDecode is the sink name recorded for messages that are not valid
// events (class invalid_input).
const SinkDecode = "decode"

// FailureRecord is one line of the failure log: an event a sink finally
// could not take, or a message that is not a valid event. Event holds the
// envelope; for invalid input, Raw holds the message bytes (base64 in JSON)
// and Headers the NATS headers.
type FailureRecord struct {
	Time       time.Time  `json:"time"`
	Sink       string     `json:"sink"`
	EventID    string     `json:"event_id,omitempty"`
	Kind       Kind       `json:"kind,omitempty"`
	Subject    string     `json:"subject,omitempty"`
	StreamSeq  uint64     `json:"stream_seq,omitempty"`
	Attempts   int        `json:"attempts"`
	Status     int        `json:"status,omitempty"`
	Error      string     `json:"error"`
	ErrorClass ErrorClass `json:"error_class"`
	// LastError and Replays are set by a replay that failed again: Error,
	// ErrorClass and Status stay those of the failure that sent the event
	// here; LastError is the latest replay's failure and Replays counts the
	// failed replays.
	LastError string              `json:"last_error,omitempty"`
	Replays   int                 `json:"replays,omitempty"`
	Event     json.RawMessage     `json:"event,omitempty"`
	Raw       []byte              `json:"raw,omitempty"`
	Headers   map[string][]string `json:"headers,omitempty"`
}

// DecodeEvent returns the envelope held by the record.
func (r *FailureRecord) DecodeEvent() (Event, error) {
	var e Event
	if len(r.Event) == 0 {
		return e, &DecodeError{Reason: ErrInvalidEnvelope, Detail: "the record holds no event (invalid input cannot be replayed)"}
	}
	if err := json.Unmarshal(r.Event, &e); err != nil {
		return e, &DecodeError{Reason: ErrInvalidEnvelope, Detail: err.Error()}
	}
	if err := e.Validate(); err != nil {
		return e, err
	}
	return e, nil
}
