package bhiv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// SpecVersion is the CloudEvents version every envelope carries.
const SpecVersion = "1.0"

// ContentTypeJSON is the data content type of every event.
const ContentTypeJSON = "application/json"

// Event is a CloudEvents 1.0 envelope in JSON structured form. Data holds the
// event's data object exactly as received; fields the typed views do not know
// are kept. Extensions holds any other top-level CloudEvents attributes.
type Event struct {
	SpecVersion     string
	ID              string
	Source          string
	Type            string
	Time            time.Time
	Subject         string // the team id
	DataContentType string
	Data            json.RawMessage
	Extensions      map[string]json.RawMessage

	// enc is the envelope's encoding, made once by Decode and shared by
	// every sink and the failure log; nil for an event built otherwise.
	enc []byte
}

// JSON returns the envelope's JSON encoding (MarshalJSON's bytes). For an
// event returned by Decode these are the bytes made once when it was
// decoded, shared by every caller: neither they nor the event may be
// modified. For any other event JSON encodes it anew.
func (e *Event) JSON() ([]byte, error) {
	if e.enc != nil {
		return e.enc, nil
	}
	return e.MarshalJSON()
}

// ExtensionNames returns the names of the event's extension attributes,
// sorted: the order they are encoded in.
func (e *Event) ExtensionNames() []string {
	names := make([]string, 0, len(e.Extensions))
	for n := range e.Extensions {
		if !coreAttrs[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Kind returns the kind named by the event's type, or "" when it is unknown.
func (e *Event) Kind() Kind {
	k, err := KindFromType(e.Type)
	if err != nil {
		return ""
	}
	return k
}

// TeamID returns the team the event belongs to: its subject attribute.
func (e *Event) TeamID() string { return e.Subject }

var coreAttrs = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "time": true,
	"subject": true, "datacontenttype": true, "data": true,
}

// MarshalJSON encodes the envelope with its attributes in a fixed order,
// then extensions sorted by name. Time is RFC 3339 in UTC.
func (e Event) MarshalJSON() ([]byte, error) { return e.encode(false) }

// encode is MarshalJSON; dataCompact says that Data is known to be valid,
// compact JSON (Decode scanned it), so that it is copied without another
// scan.
func (e *Event) encode(dataCompact bool) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(e.Data) + 256)
	b.WriteByte('{')
	str := func(name, v string, first bool) {
		if !first {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(name)
		b.WriteString(`":`)
		writeJSONString(&b, v)
	}
	str("specversion", e.SpecVersion, true)
	str("id", e.ID, false)
	str("source", e.Source, false)
	str("type", e.Type, false)
	if !e.Time.IsZero() {
		b.WriteString(`,"time":"`)
		var tb [64]byte
		b.Write(e.Time.UTC().AppendFormat(tb[:0], time.RFC3339Nano))
		b.WriteByte('"')
	}
	if e.Subject != "" {
		str("subject", e.Subject, false)
	}
	if e.DataContentType != "" {
		str("datacontenttype", e.DataContentType, false)
	}
	if len(e.Extensions) > 0 {
		for _, n := range e.ExtensionNames() {
			q, _ := json.Marshal(n)
			b.WriteByte(',')
			b.Write(q)
			b.WriteByte(':')
			b.Write(e.Extensions[n])
		}
	}
	if len(e.Data) > 0 {
		b.WriteString(`,"data":`)
		if dataCompact {
			b.Write(e.Data)
		} else if valid, compact := scanJSON(e.Data); valid && compact {
			b.Write(e.Data)
		} else if err := json.Compact(&b, e.Data); err != nil {
			return nil, fmt.Errorf("event %s: data: %w", e.ID, err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// writeJSONString writes s as a JSON string, escaped as json.Marshal does.
func writeJSONString(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			b.Write(q)
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}

// UnmarshalJSON decodes a structured-mode envelope. It checks only the JSON
// shape; use Validate (or Decode) for the rules.
func (e *Event) UnmarshalJSON(b []byte) error {
	if valid, _ := scanJSON(b); !valid {
		return errors.New("envelope: invalid JSON")
	}
	if firstNonSpace(b) != '{' {
		return errors.New("envelope: not a JSON object")
	}
	return e.readEnvelope(b)
}

// envelopeStrings are the attributes held as strings, in the order of
// readEnvelope's table.
var envelopeStrings = [...]string{"specversion", "id", "source", "type", "subject", "datacontenttype", "time"}

// readEnvelope reads the envelope in b, a valid JSON object, walking it
// once without decoding it. Of a member given twice the last counts, as
// with encoding/json.
func (e *Event) readEnvelope(b []byte) error {
	*e = Event{}
	var strs [len(envelopeStrings)][]byte
	var data []byte
	eachMember(b, func(key, val []byte) bool {
		for i, name := range envelopeStrings {
			if string(key) == name {
				strs[i] = val
				return true
			}
		}
		if string(key) == "data" {
			data = val
			return true
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]json.RawMessage)
		}
		e.Extensions[string(key)] = append(json.RawMessage(nil), val...)
		return true
	})
	dsts := [...]*string{&e.SpecVersion, &e.ID, &e.Source, &e.Type, &e.Subject, &e.DataContentType}
	var ts string
	for i, raw := range strs {
		if raw == nil || string(raw) == "null" {
			continue
		}
		if raw[0] != '"' {
			return fmt.Errorf("attribute %s is not a string", envelopeStrings[i])
		}
		if i < len(dsts) {
			*dsts[i] = jsonStringValue(raw)
		} else {
			ts = jsonStringValue(raw)
		}
	}
	if ts != "" {
		t, err := parseTime(ts)
		if err != nil {
			return fmt.Errorf("attribute time %q is not RFC 3339", ts)
		}
		e.Time = t
	}
	if data != nil && string(data) != "null" {
		e.Data = append(json.RawMessage(nil), data...)
	}
	return nil
}

// Validate checks the envelope against the model's rules and returns a
// *DecodeError saying what is wrong.
func (e *Event) Validate() error { return e.validate(false) }

// validate is Validate; dataValid says that Data is known to be valid JSON
// (Decode scanned it), so that it is not scanned again.
func (e *Event) validate(dataValid bool) error {
	if e.SpecVersion != SpecVersion {
		return &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("specversion %q, want %q", e.SpecVersion, SpecVersion)}
	}
	if e.ID == "" {
		return &DecodeError{Reason: ErrInvalidID, Detail: "id is missing"}
	}
	if err := CheckID(e.ID); err != nil {
		return err
	}
	kind, err := KindFromType(e.Type)
	if err != nil {
		return err
	}
	if e.Source == "" {
		return &DecodeError{Reason: ErrInvalidEnvelope, Detail: "source is missing"}
	}
	if e.Time.IsZero() {
		return &DecodeError{Reason: ErrInvalidEnvelope, Detail: "time is missing"}
	}
	if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
		return &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("time %s is outside years 0000 to 9999 UTC", e.Time.UTC().Format(time.RFC3339))}
	}
	if ct := e.DataContentType; ct != "" && !isJSONContentType(ct) {
		return &DecodeError{Reason: ErrInvalidEnvelope, Detail: fmt.Sprintf("datacontenttype %q is not JSON", ct)}
	}
	if _, ok := e.Extensions["data_base64"]; ok {
		return &DecodeError{Reason: ErrInvalidEnvelope, Detail: "data_base64 is not supported: data must be a JSON object"}
	}
	team, err := checkData(kind, e.Data, dataValid)
	if err != nil {
		return err
	}
	if e.Subject == "" {
		e.Subject = team
	}
	if e.Subject == "" {
		return &DecodeError{Reason: ErrMissingTeam, Detail: "neither data.team_id nor subject is set"}
	}
	if team != "" && team != e.Subject {
		return &DecodeError{Reason: ErrInvalidData, Detail: fmt.Sprintf("subject %q differs from data.team_id %q", e.Subject, team)}
	}
	return nil
}

// parseTime parses an RFC 3339 time and returns it in UTC. A time whose UTC
// year falls outside 0000 to 9999 (such as 9999-12-31T23:00:00-02:00) is
// rejected, since it could not be written back as RFC 3339.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, fmt.Errorf("time %q is outside years 0000 to 9999 UTC", s)
	}
	return t, nil
}

func isJSONContentType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(strings.ToLower(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "text/json"
}

// New returns a valid envelope for data of the given kind, with a new ULID
// when id is empty, the current time, the source given and the team id taken
// from data.team_id.
func New(kind Kind, source, id string, data any) (Event, error) {
	if !kind.Valid() {
		return Event{}, &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("%q is not one of execution, reward", kind)}
	}
	var raw json.RawMessage
	switch d := data.(type) {
	case json.RawMessage:
		raw = d
	case []byte:
		raw = d
	default:
		b, err := json.Marshal(data)
		if err != nil {
			return Event{}, fmt.Errorf("encode %s data: %w", kind, err)
		}
		raw = b
	}
	if id == "" {
		id = NewID()
	}
	e := Event{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            kind.Type(),
		Time:            time.Now().UTC(),
		DataContentType: ContentTypeJSON,
		Data:            raw,
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}
