package bhiv

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// SpecVersion is the CloudEvents version every envelope carries.
const SpecVersion = "1.0"

// ContentTypeJSON is the data content type of every event.
const ContentTypeJSON = "application/json"

// Kind is the kind of an event: execution or reward.
type Kind string

// The event kinds.
const (
	KindExecution Kind = "execution"
	KindReward    Kind = "reward"
)

// Kinds lists every known kind.
var Kinds = []Kind{KindExecution, KindReward}

// typePrefix prefixes a kind to make its CloudEvents type.
const typePrefix = "bhiv."

// Type returns the CloudEvents type of the kind, such as "bhiv.execution".
func (k Kind) Type() string { return typePrefix + string(k) }

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindExecution || k == KindReward }

// ParseKind returns the kind named s ("execution" or "reward").
func ParseKind(s string) (Kind, error) {
	k := Kind(s)
	if !k.Valid() {
		return "", &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("%q is not one of execution, reward", s)}
	}
	return k, nil
}

// KindFromType returns the kind of a CloudEvents type such as "bhiv.reward".
func KindFromType(t string) (Kind, error) {
	k := Kind(strings.TrimPrefix(t, typePrefix))
	if !strings.HasPrefix(t, typePrefix) || !k.Valid() {
		return "", &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("type %q is not one of bhiv.execution, bhiv.reward", t)}
	}
	return k, nil
}

// MaxIDLen is the longest id accepted.
const MaxIDLen = 128

// ValidID reports whether id is a valid event id: it matches
// [A-Za-z0-9][A-Za-z0-9._:-]{0,127}. A valid id is safe as a file name.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen || !isAlnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// CheckID returns a *DecodeError wrapping ErrInvalidID when id is not valid.
func CheckID(id string) error {
	if ValidID(id) {
		return nil
	}
	shown := id
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return &DecodeError{Reason: ErrInvalidID, Detail: fmt.Sprintf("%q does not match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}", shown)}
}

var (
	entropyMu sync.Mutex
	entropy   = ulid.Monotonic(rand.Reader, 0)
)

// NewID returns a new ULID: unique and sortable by creation time.
func NewID() string {
	entropyMu.Lock()
	defer entropyMu.Unlock()
	return ulid.MustNew(ulid.Now(), entropy).String()
}

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
		names := make([]string, 0, len(e.Extensions))
		for n := range e.Extensions {
			if !coreAttrs[n] {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
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

// hasMemberFold reports whether the valid JSON object obj has a member
// named name, matched without regard to case (as encoding/json matches
// struct fields).
func hasMemberFold(obj []byte, name string) bool {
	found := false
	eachMember(obj, func(key, _ []byte) bool {
		found = bytes.EqualFold(key, []byte(name))
		return !found
	})
	return found
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

// dataFields names the fields of each kind's data whose type is checked.
var dataFields = map[Kind]struct{ numeric, strs []string }{
	KindExecution: {numeric: []string{"duration_ms"}, strs: []string{"action", "status", "error"}},
	KindReward:    {numeric: []string{"reward"}, strs: []string{"execution_id", "reason"}},
}

// checkData checks that data is a JSON object whose known fields have the
// right types, and returns its team_id ("" when absent). It reads the object
// in one pass without decoding it: publishers call it for every event.
func checkData(kind Kind, data json.RawMessage, valid bool) (string, error) {
	if len(data) == 0 {
		return "", &DecodeError{Reason: ErrMissingTeam, Detail: "data is missing"}
	}
	if !valid {
		valid, _ = scanJSON(data)
	}
	if !valid {
		if firstNonSpace(data) != '{' {
			return "", &DecodeError{Reason: ErrNotObject, Detail: "data is not a JSON object"}
		}
		var v any
		err := json.Unmarshal(data, &v)
		detail := "data: invalid JSON"
		if err != nil {
			detail = "data: " + err.Error()
		}
		return "", &DecodeError{Reason: ErrNotJSON, Detail: detail}
	}
	if firstNonSpace(data) != '{' {
		return "", &DecodeError{Reason: ErrNotObject, Detail: "data is not a JSON object"}
	}
	want := dataFields[kind]
	var team string
	var err error
	eachMember(data, func(key, val []byte) bool {
		if string(key) == "team_id" {
			team = ""
			if string(val) != "null" {
				if val[0] != '"' {
					err = &DecodeError{Reason: ErrInvalidData, Detail: "data.team_id is not a string"}
					return false
				}
				team = jsonStringValue(val)
			}
			return true
		}
		if string(val) == "null" {
			return true
		}
		for _, name := range want.numeric {
			if string(key) == name {
				if !isJSONNumber(val) {
					err = &DecodeError{Reason: ErrInvalidData, Detail: fmt.Sprintf("data.%s is not a number", name)}
					return false
				}
				return true
			}
		}
		for _, name := range want.strs {
			if string(key) == name && val[0] != '"' {
				err = &DecodeError{Reason: ErrInvalidData, Detail: fmt.Sprintf("data.%s is not a string", name)}
				return false
			}
		}
		return true
	})
	if err != nil {
		return "", err
	}
	return team, nil
}

// eachMember calls fn with the name and raw value of each member of the
// valid JSON object obj, in order, until fn returns false. Names are
// unescaped (and invalid UTF-8 replaced, as encoding/json does) only when
// they need it; otherwise key aliases obj, as val always does.
func eachMember(obj []byte, fn func(key, val []byte) bool) {
	i := skipSpace(obj, 0) + 1 // past '{'
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return
		}
		kEnd := endOfString(obj, i)
		rawKey := obj[i:kEnd]
		i = skipSpace(obj, kEnd) + 1 // past ':'
		i = skipSpace(obj, i)
		vEnd := endOfValue(obj, i)
		key := rawKey[1 : len(rawKey)-1]
		if bytes.IndexByte(key, '\\') >= 0 || !utf8.Valid(key) {
			key = []byte(jsonStringValue(rawKey))
		}
		if !fn(key, obj[i:vEnd]) {
			return
		}
		i = skipSpace(obj, vEnd)
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// endOfString returns the index just past the JSON string starting at b[i].
func endOfString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// endOfValue returns the index just past the JSON value starting at b[i].
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = endOfString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	for j := i; j < len(b); j++ {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
	}
	return len(b)
}

// jsonStringValue returns the value of the valid JSON string literal q, as
// encoding/json decodes it.
func jsonStringValue(q []byte) string {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var s string
	_ = json.Unmarshal(q, &s)
	return s
}

// isJSONNumber reports whether the valid JSON value v is a number that fits
// a float64, as decoding it into a float64 requires.
func isJSONNumber(v []byte) bool {
	if c := v[0]; c != '-' && (c < '0' || c > '9') {
		return false
	}
	_, err := strconv.ParseFloat(string(v), 64)
	return err == nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// Execution is the data of an execution event. Extra holds any other fields;
// they are encoded beside the known ones and never dropped. Decoded numbers
// in Extra are json.Number, so they keep every digit.
type Execution struct {
	TeamID     string         `json:"team_id"`
	Action     string         `json:"action"`
	Status     string         `json:"status,omitempty"`
	Output     any            `json:"output,omitempty"`
	Error      string         `json:"error,omitempty"`
	DurationMS int64          `json:"duration_ms"`
	Extra      map[string]any `json:"-"`
}

// Reward is the data of a reward event. Extra holds any other fields; they
// are encoded beside the known ones and never dropped. Decoded numbers in
// Extra are json.Number, so they keep every digit.
type Reward struct {
	TeamID      string         `json:"team_id"`
	ExecutionID string         `json:"execution_id,omitempty"`
	Reward      float64        `json:"reward"`
	Reason      string         `json:"reason,omitempty"`
	Extra       map[string]any `json:"-"`
}

type executionFields Execution
type rewardFields Reward

// MarshalJSON encodes the known fields and the extra ones in one object.
func (x Execution) MarshalJSON() ([]byte, error) { return mergeExtra(executionFields(x), x.Extra) }

// UnmarshalJSON decodes the known fields and keeps the rest in Extra.
func (x *Execution) UnmarshalJSON(b []byte) error {
	var f executionFields
	extra, err := splitExtra(b, &f, "team_id", "action", "status", "output", "error", "duration_ms")
	if err != nil {
		return err
	}
	*x = Execution(f)
	x.Extra = extra
	return nil
}

// MarshalJSON encodes the known fields and the extra ones in one object.
func (x Reward) MarshalJSON() ([]byte, error) { return mergeExtra(rewardFields(x), x.Extra) }

// UnmarshalJSON decodes the known fields and keeps the rest in Extra.
func (x *Reward) UnmarshalJSON(b []byte) error {
	var f rewardFields
	extra, err := splitExtra(b, &f, "team_id", "execution_id", "reward", "reason")
	if err != nil {
		return err
	}
	*x = Reward(f)
	x.Extra = extra
	return nil
}

func mergeExtra(known any, extra map[string]any) ([]byte, error) {
	b, err := json.Marshal(known)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	// Keep the known fields as encoded (a map[string]any would turn large
	// integers into float64 and lose digits).
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range extra {
		if _, taken := m[k]; taken {
			continue
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("extra field %s: %w", k, err)
		}
		m[k] = raw
	}
	return json.Marshal(m)
}

// splitExtra decodes b into known and returns the fields known does not
// name.
func splitExtra(b []byte, known any, names ...string) (map[string]any, error) {
	if err := json.Unmarshal(b, known); err != nil {
		return nil, err
	}
	// Numbers stay json.Number so that no digit is lost on the way back.
	var all map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&all); err != nil {
		return nil, err
	}
	for _, n := range names {
		delete(all, n)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
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

// Execution decodes the event's data as execution data.
func (e *Event) Execution() (Execution, error) {
	var x Execution
	if e.Kind() != KindExecution {
		return x, errors.New("event is not an execution")
	}
	err := json.Unmarshal(e.Data, &x)
	return x, err
}

// Reward decodes the event's data as reward data.
func (e *Event) Reward() (Reward, error) {
	var x Reward
	if e.Kind() != KindReward {
		return x, errors.New("event is not a reward")
	}
	err := json.Unmarshal(e.Data, &x)
	return x, err
}
