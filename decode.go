package bhiv

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxEventBytes is the default size limit of one message (1 MiB).
const DefaultMaxEventBytes = 1 << 20

// MsgIDHeader is the JetStream de-duplication header. Publishers set it to the
// event id.
const MsgIDHeader = "Nats-Msg-Id"

// Message is a message as the consumer received it, free of any NATS type so
// that decoding can be tested and fuzzed on its own.
type Message struct {
	Subject   string
	Header    map[string][]string
	Data      []byte
	Stream    string    // JetStream stream name, when known
	Sequence  uint64    // JetStream stream sequence, when known
	Timestamp time.Time // JetStream timestamp, when known
}

// header returns the first value of the header named key (HeaderValue).
func (m *Message) header(key string) string { return HeaderValue(m.Header, key) }

// HeaderValue returns the first value of the header named key in h,
// matched without regard to case (NATS keeps header names as published:
// "ce-id" and "Ce-Id" are both seen), or "".
func HeaderValue(h map[string][]string, key string) string {
	if v, ok := h[key]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// DecodeOptions configure Decode. The zero value decodes events under the
// default subject prefix with the default size limit.
type DecodeOptions struct {
	SubjectPrefix string // default DefaultSubjectPrefix
	MaxBytes      int    // default DefaultMaxEventBytes
}

// Decode turns a message into a valid event. It accepts three forms:
//
//  1. a CloudEvents envelope in JSON structured mode (an object with
//     "specversion");
//  2. a bare JSON data object, as typed with `nats pub`: it is wrapped in an
//     envelope whose kind comes from the subject, whose id is the Nats-Msg-Id
//     header or else "<stream>-<sequence>" (stable across redeliveries), and
//     whose time is the JetStream timestamp;
//  3. CloudEvents binary mode: ce-* headers and the data as the body, as
//     the NATS binding and the CloudEvents SDKs send it (the datacontenttype
//     in ce-datacontenttype, else in Content-Type; header values as they
//     are, without percent-encoding).
//
// A Content-Type that starts with "application/cloudevents" (the binding's
// structured mode) means form 1 whatever ce-* headers come with it; the
// batched type is refused (the NATS binding has no batch: publish one
// message per event). Any other input gets a *DecodeError whose Reason is one of the Err*
// sentinels. Decode never panics.
//
// The message is scanned (validated) once; its parts are then read by
// walking the valid JSON, and the envelope is encoded once (Event.JSON).
func Decode(m Message, opts DecodeOptions) (Event, error) {
	e, compact, err := decode(m, opts)
	if err != nil {
		return Event{}, err
	}
	// Encoded once, here: Core, the Bucket and the failure log share it.
	if e.enc, err = e.encode(compact); err != nil {
		return Event{}, &DecodeError{Reason: ErrInvalidEnvelope, Detail: err.Error()}
	}
	return e, nil
}

// decode returns the event m holds, and whether its data is known to be
// compact JSON.
func decode(m Message, opts DecodeOptions) (e Event, compact bool, err error) {
	e, compact, err = decodeForm(m, opts)
	if err != nil {
		return Event{}, false, err
	}
	return e, compact, nil
}

func decodeForm(m Message, opts DecodeOptions) (Event, bool, error) {
	limit := opts.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxEventBytes
	}
	if len(m.Data) > limit {
		return Event{}, false, &DecodeError{Reason: ErrTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(m.Data), limit)}
	}
	kind, err := KindFromSubject(opts.SubjectPrefix, m.Subject)
	if err != nil {
		return Event{}, false, err
	}
	ct := strings.ToLower(strings.TrimSpace(m.header("content-type")))
	structured := strings.HasPrefix(ct, "application/cloudevents")
	if strings.HasPrefix(ct, "application/cloudevents-batch") {
		return Event{}, false, &DecodeError{Reason: ErrNotObject, Detail: fmt.Sprintf("content-type %q: a CloudEvents batch; publish one message per event", m.header("content-type"))}
	}
	if structured && !strings.HasPrefix(ct, "application/cloudevents+json") {
		return Event{}, false, &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("content-type %q: only the JSON event format is supported", m.header("content-type"))}
	}
	if !structured && (m.header("ce-specversion") != "" || m.header("ce-type") != "" || m.header("ce-id") != "") {
		return decodeBinary(m, kind)
	}
	// The one validating scan of the message.
	valid, compact := scanJSON(m.Data)
	if !valid {
		detail := "body is not valid JSON"
		if len(m.Data) == 0 {
			detail = "body is empty"
		}
		return Event{}, false, &DecodeError{Reason: ErrNotJSON, Detail: detail}
	}
	if firstNonSpace(m.Data) != '{' {
		return Event{}, false, &DecodeError{Reason: ErrNotObject, Detail: "body is JSON but not an object"}
	}
	if hasMemberFold(m.Data, "specversion") {
		e, err := decodeEnvelope(m, kind)
		return e, compact, err
	}
	if structured {
		return Event{}, false, &DecodeError{Reason: ErrInvalidEnvelope, Detail: "structured mode (content-type application/cloudevents+json) but no specversion"}
	}
	e, err := wrapBare(m, kind, m.Data, "")
	return e, compact, err
}

// decodeEnvelope reads the structured-mode envelope in the valid JSON
// object m.Data.
func decodeEnvelope(m Message, kind Kind) (Event, error) {
	var e Event
	if err := e.readEnvelope(m.Data); err != nil {
		return Event{}, &DecodeError{Reason: ErrInvalidEnvelope, Detail: err.Error()}
	}
	if e.Type != kind.Type() {
		if _, err := KindFromType(e.Type); err != nil {
			return Event{}, err
		}
		return Event{}, &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("type %q published on subject %q (want %q)", e.Type, m.Subject, kind.Type())}
	}
	if e.Time.IsZero() {
		e.Time = msgTime(m)
	}
	if e.Source == "" {
		e.Source = defaultSource(m)
	}
	if err := e.validate(true); err != nil {
		return Event{}, err
	}
	return e, nil
}

func decodeBinary(m Message, kind Kind) (Event, bool, error) {
	if sv := m.header("ce-specversion"); sv != "" && sv != SpecVersion {
		return Event{}, false, &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("ce-specversion %q, want %q", sv, SpecVersion)}
	}
	if t := m.header("ce-type"); t != "" && t != kind.Type() {
		if _, err := KindFromType(t); err != nil {
			return Event{}, false, err
		}
		return Event{}, false, &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("ce-type %q published on subject %q (want %q)", t, m.Subject, kind.Type())}
	}
	valid, compact := scanJSON(m.Data)
	if !valid {
		return Event{}, false, &DecodeError{Reason: ErrNotJSON, Detail: "binary-mode body is not valid JSON"}
	}
	if firstNonSpace(m.Data) != '{' {
		return Event{}, false, &DecodeError{Reason: ErrNotObject, Detail: "binary-mode body is JSON but not an object"}
	}
	// The NATS binding (and the SDKs) carry the datacontenttype in
	// ce-datacontenttype; some publishers use Content-Type, as HTTP does.
	ct, from := m.header("ce-datacontenttype"), "ce-datacontenttype"
	if ct == "" {
		ct, from = m.header("content-type"), "content-type"
	}
	if ct != "" && !isJSONContentType(ct) {
		return Event{}, false, &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("%s %q is not JSON", from, ct)}
	}
	// Build the whole envelope before validating it: ce-subject may supply
	// the team id that the data leaves out.
	e := bareEvent(m, kind, m.Data, m.header("ce-id"))
	if ct != "" {
		e.DataContentType = ct
	}
	if src := m.header("ce-source"); src != "" {
		e.Source = src
	}
	if ts := m.header("ce-time"); ts != "" {
		t, err := parseTime(ts)
		if err != nil {
			return Event{}, false, &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("ce-time %q is not RFC 3339", ts)}
		}
		e.Time = t
	}
	if subj := m.header("ce-subject"); subj != "" {
		e.Subject = subj
	}
	e.Extensions = binaryExtensions(m.Header)
	if err := e.validate(true); err != nil {
		return Event{}, false, err
	}
	return e, compact, nil
}

// binaryAttrs are the ce-* headers Decode maps to envelope attributes; every
// other ce-<name> header is kept as an extension attribute.
var binaryAttrs = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "time": true,
	"subject": true, "datacontenttype": true, "data": true, "data_base64": true,
}

// binaryExtensions returns the CloudEvents extension attributes carried as
// ce-<name> headers, as JSON strings. Names must be CloudEvents attribute
// names (lower-case letters and digits, at most 20).
func binaryExtensions(h map[string][]string) map[string]json.RawMessage {
	var ext map[string]json.RawMessage
	for k, v := range h {
		if len(v) == 0 || len(k) < 4 || !strings.EqualFold(k[:3], "ce-") {
			continue
		}
		name := strings.ToLower(k[3:])
		if binaryAttrs[name] || !ValidAttrName(name) {
			continue
		}
		q, err := json.Marshal(v[0])
		if err != nil {
			continue
		}
		if ext == nil {
			ext = make(map[string]json.RawMessage)
		}
		ext[name] = q
	}
	return ext
}

// ValidAttrName reports whether name is a CloudEvents attribute name:
// lower-case ASCII letters and digits, at most 20 (the spec's rule, which
// lets an attribute travel as a ce-<name> header).
func ValidAttrName(name string) bool {
	if name == "" || len(name) > 20 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// wrapBare builds the envelope around a bare data object and validates it.
// data must be valid JSON (checked by the caller).
func wrapBare(m Message, kind Kind, data []byte, id string) (Event, error) {
	e := bareEvent(m, kind, data, id)
	if err := e.validate(true); err != nil {
		return Event{}, err
	}
	return e, nil
}

// bareEvent builds, without validating, the envelope around a bare data
// object. Its id is id, else the Nats-Msg-Id header, else DerivedID, else a
// new ULID.
func bareEvent(m Message, kind Kind, data []byte, id string) Event {
	if id == "" {
		id = m.header(MsgIDHeader)
	}
	if id == "" {
		id = DerivedID(m.Stream, m.Sequence)
	}
	if id == "" {
		id = NewID()
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          defaultSource(m),
		Type:            kind.Type(),
		Time:            msgTime(m),
		DataContentType: ContentTypeJSON,
		Data:            append(json.RawMessage(nil), data...),
	}
}

// DerivedID returns the id given to a bare event that has no Nats-Msg-Id:
// "<stream>-<sequence>", with characters an id may not hold replaced by "x"
// (the stream name "nats" when stream is empty).
// It is "" when the sequence is unknown.
func DerivedID(stream string, seq uint64) string {
	if seq == 0 {
		return ""
	}
	if stream == "" {
		stream = "nats"
	}
	b := []byte(stream)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		if !ok || (i == 0 && !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')) {
			b[i] = 'x'
		}
	}
	id := string(b) + "-" + strconv.FormatUint(seq, 10)
	if len(id) > MaxIDLen {
		id = id[len(id)-MaxIDLen:]
		id = "x" + id[1:]
	}
	return id
}

func msgTime(m Message) time.Time {
	if !m.Timestamp.IsZero() {
		return m.Timestamp.UTC()
	}
	return time.Now().UTC()
}

func defaultSource(m Message) string { return "nats:" + m.Subject }
