package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/cehttp"
)

// mode is the content mode of a request.
type mode int

const (
	// modeData: the body is event data — a bare JSON object, as the Python
	// connectors POSTed it, or a CloudEvent in binary mode (ce-* headers).
	// bhiv.Decode tells the two apart, as the consumer does.
	modeData       mode = iota
	modeStructured      // one CloudEvent in the JSON format
	modeBatch           // a JSON array of CloudEvents in the JSON format
)

var modeNames = [...]string{"data", "structured", "batch"}

func (m mode) String() string { return modeNames[m] }

// The media types of the CloudEvents JSON event format and JSON batch format.
const (
	mediaStructured = "application/cloudevents+json"
	mediaBatch      = "application/cloudevents-batch+json"
)

// Reasons of answers that are not a bhiv.Decode reason.
const (
	reasonUnauthorized = "unauthorized"
	reasonTooLarge     = "too large" // bhiv.ErrTooLarge's text
	reasonMediaType    = "unsupported media type"
	reasonBadRequest   = "bad request"
	reasonUnavailable  = "unavailable"
	reasonFailed       = "publish failed"
)

// problem is an answer decided before anything is published: nothing was
// stored.
type problem struct {
	status  int
	reason  string // short and stable: a bhiv.Err* text or one of the reason* constants
	msg     string
	invalid []InvalidEvent
}

func (p *problem) Error() string { return p.msg }

func badRequest(reason, format string, args ...any) *problem {
	return &problem{status: http.StatusBadRequest, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// invalidInput turns an error of bhiv.Decode (or of the checks made around
// it) into a problem: 413 when the event is too large, else 400.
func invalidInput(err error) *problem {
	var p *problem
	if errors.As(err, &p) {
		return p
	}
	reason, status := "invalid event", http.StatusBadRequest
	var de *bhiv.DecodeError
	if errors.As(err, &de) {
		reason = de.Reason.Error()
		if errors.Is(err, bhiv.ErrTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
	}
	return &problem{status: status, reason: reason, msg: err.Error()}
}

// event is an event ready to publish.
type event struct {
	id      string
	kind    bhiv.Kind
	subject string
	body    []byte // the envelope, as published
}

// mediaType returns the media type of a Content-Type value, lower-cased,
// without parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// isJSON reports whether the media type is JSON, as bhiv.Decode takes it.
func isJSON(mt string) bool {
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// modeOf picks the content mode as the HTTP binding's §3 says, from
// Content-Type: a media type prefixed application/cloudevents-batch is
// batched, one prefixed application/cloudevents structured, and anything
// else binary — or a bare data object, which bhiv.Decode tells apart. Only
// the JSON formats are taken, and only JSON data (415 otherwise).
func modeOf(h http.Header) (mode, *problem) {
	ct := h.Get("Content-Type")
	mt := mediaType(ct)
	switch {
	case strings.HasPrefix(mt, "application/cloudevents-batch"):
		if mt != mediaBatch {
			return 0, &problem{status: http.StatusUnsupportedMediaType, reason: reasonMediaType,
				msg: fmt.Sprintf("Content-Type %q: the only batch format taken is %s", ct, mediaBatch)}
		}
		return modeBatch, nil
	case strings.HasPrefix(mt, "application/cloudevents"):
		if mt != mediaStructured {
			return 0, &problem{status: http.StatusUnsupportedMediaType, reason: reasonMediaType,
				msg: fmt.Sprintf("Content-Type %q: the only event format taken is %s", ct, mediaStructured)}
		}
		return modeStructured, nil
	}
	if mt != "" && !isJSON(mt) {
		return 0, &problem{status: http.StatusUnsupportedMediaType, reason: reasonMediaType,
			msg: fmt.Sprintf("Content-Type %q: event data must be JSON (send Content-Type: application/json; with curl, --json or -H 'Content-Type: application/json')", ct)}
	}
	return modeData, nil
}

func isCEHeader(name string) bool { return len(name) > 3 && strings.EqualFold(name[:3], "ce-") }

// ceHeaders returns the ce-* headers, names lower-cased, values decoded as
// the HTTP binding's §3.1.3.2 says: a double-quoted string is unquoted,
// then one round of percent-decoding, and the result must be UTF-8.
func ceHeaders(h http.Header) (map[string]string, *problem) {
	out := make(map[string]string)
	for k, vals := range h {
		if !isCEHeader(k) {
			continue
		}
		name := strings.ToLower(k)
		if len(vals) != 1 {
			return nil, badRequest(bhiv.ErrInvalidEnvelope.Error(), "header %s is given %d times", name, len(vals))
		}
		v, err := cehttp.HeaderValue(vals[0])
		if err != nil {
			return nil, badRequest(bhiv.ErrInvalidEnvelope.Error(), "header %s: %v", name, err)
		}
		out[name] = v
	}
	if _, ok := out["ce-datacontenttype"]; ok {
		return nil, badRequest(bhiv.ErrInvalidEnvelope.Error(),
			"header ce-datacontenttype: in binary mode Content-Type carries the data content type (HTTP binding §3.1.1)")
	}
	return out, nil
}

// idempotencyKey returns the Idempotency-Key header, unquoted (the IETF
// draft makes it a structured-field string; plain tokens are taken too).
func idempotencyKey(h http.Header) (string, *problem) {
	vals := h.Values("Idempotency-Key")
	if len(vals) == 0 {
		return "", nil
	}
	if len(vals) > 1 {
		return "", badRequest(bhiv.ErrInvalidID.Error(), "Idempotency-Key is given %d times", len(vals))
	}
	key := strings.TrimSpace(vals[0])
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	if err := bhiv.CheckID(key); err != nil {
		return "", badRequest(bhiv.ErrInvalidID.Error(), "Idempotency-Key: %v", err)
	}
	return key, nil
}

// members returns the top-level members of a JSON object, or nil when body
// is not one.
func members(body []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	return m
}

// isEnvelope reports whether the object's members make it a CloudEvent in
// the JSON format: it has specversion, as bhiv.Decode decides.
func isEnvelope(m map[string]json.RawMessage) bool {
	_, ok := m["specversion"]
	return ok
}

// kindOf returns the kind of an event POSTed to /bhiv/core, which does not
// name one: the CloudEvents type when the event has one (ceType, or the
// envelope's type), else a reward when the data has a numeric "reward"
// field, else an execution. Anything that is not an object is taken as an
// execution, for bhiv.Decode to say what is wrong with it.
func kindOf(m map[string]json.RawMessage, ceType string, hasCEType bool) (bhiv.Kind, error) {
	if hasCEType {
		return bhiv.KindFromType(ceType)
	}
	if isEnvelope(m) {
		var t string
		if err := json.Unmarshal(m["type"], &t); err != nil && m["type"] != nil {
			return "", &bhiv.DecodeError{Reason: bhiv.ErrInvalidEnvelope, Detail: "attribute type is not a string"}
		}
		return bhiv.KindFromType(t)
	}
	if r := m["reward"]; len(r) > 0 && (r[0] == '-' || r[0] >= '0' && r[0] <= '9') {
		return bhiv.KindReward, nil
	}
	return bhiv.KindExecution, nil
}

// decodeRequest turns a request body into the events to publish, each
// decoded by bhiv.Decode from the message the consumer would receive, so
// that ingest takes and refuses exactly what the consumer would. kind is
// the route's kind, or "" to take each event's own (POST /bhiv/core).
func (s *Server) decodeRequest(h http.Header, kind bhiv.Kind, md mode, body []byte) ([]event, *problem) {
	key, p := idempotencyKey(h)
	if p != nil {
		return nil, p
	}
	switch md {
	case modeBatch:
		if key != "" {
			return nil, badRequest(bhiv.ErrInvalidID.Error(),
				"Idempotency-Key names one event; the events of a batch carry their own ids")
		}
		return s.decodeBatch(kind, body)
	case modeStructured:
		m := members(body)
		if m != nil && !isEnvelope(m) {
			return nil, badRequest(bhiv.ErrInvalidEnvelope.Error(), "the %s body is not a CloudEvent: it has no specversion", mediaStructured)
		}
		ev, err := s.decodeEnvelope(kind, m, body)
		if err != nil {
			return nil, invalidInput(err)
		}
		if key != "" && key != ev.id {
			return nil, badRequest(bhiv.ErrInvalidID.Error(), "Idempotency-Key %q differs from the event id %q", key, ev.id)
		}
		return []event{ev}, nil
	}
	ev, err := s.decodeData(h, kind, key, body)
	if err != nil {
		return nil, invalidInput(err)
	}
	return []event{ev}, nil
}

// decodeEnvelope decodes one CloudEvent in the JSON format; m are its
// members (nil when body is not an object).
func (s *Server) decodeEnvelope(kind bhiv.Kind, m map[string]json.RawMessage, body []byte) (event, error) {
	if kind == "" {
		k, err := kindOf(m, "", false)
		if err != nil {
			return event{}, err
		}
		kind = k
	}
	return s.decode(bhiv.Message{Subject: bhiv.Subject(s.cfg.Stream.SubjectPrefix, kind), Data: body})
}

// decodeData decodes a body that is event data: a CloudEvent in binary mode
// when bhiv.Decode finds its ce-* attributes, else a bare data object (or an
// envelope POSTed as application/json, which the consumer takes too). The
// ce-* headers are decoded as the HTTP binding says and handed to Decode as
// the NATS binding carries them, Content-Type as the data content type. The
// id is the event's own (ce-id), else the Idempotency-Key, else a new ULID.
func (s *Server) decodeData(h http.Header, kind bhiv.Kind, key string, body []byte) (event, error) {
	ce, p := ceHeaders(h)
	if p != nil {
		return event{}, p
	}
	if id := ce["ce-id"]; id != "" && key != "" && id != key {
		return event{}, badRequest(bhiv.ErrInvalidID.Error(), "Idempotency-Key %q differs from ce-id %q", key, id)
	}
	if kind == "" {
		t, ok := ce["ce-type"]
		k, err := kindOf(members(body), t, ok && t != "")
		if err != nil {
			return event{}, err
		}
		kind = k
	}
	hdr := make(map[string][]string, len(ce)+3)
	for k, v := range ce {
		hdr[k] = []string{v}
	}
	if ct := h.Get("Content-Type"); ct != "" && len(ce) > 0 {
		// Decode reads the HTTP form; the NATS binding names it
		// ce-datacontenttype.
		hdr["content-type"] = []string{ct}
		hdr["ce-datacontenttype"] = []string{ct}
	}
	if key != "" {
		hdr[bhiv.MsgIDHeader] = []string{key}
	}
	msg := bhiv.Message{Subject: bhiv.Subject(s.cfg.Stream.SubjectPrefix, kind), Header: hdr, Data: body}
	ev, err := s.decode(msg)
	if err != nil {
		return event{}, err
	}
	if key != "" && ev.id != key {
		return event{}, badRequest(bhiv.ErrInvalidID.Error(), "Idempotency-Key %q differs from the event id %q", key, ev.id)
	}
	return ev, nil
}

// decodeBatch decodes a JSON batch. Every event is checked before any is
// published: one invalid event refuses the whole batch, and the answer lists
// each invalid one.
func (s *Server) decodeBatch(kind bhiv.Kind, body []byte) ([]event, *problem) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		reason := bhiv.ErrNotJSON
		if json.Valid(body) {
			reason = bhiv.ErrInvalidEnvelope
		}
		return nil, badRequest(reason.Error(), "a %s body is a JSON array of CloudEvents: %v", mediaBatch, err)
	}
	evs := make([]event, 0, len(raws))
	var invalid []InvalidEvent
	tooLarge := 0
	first := make(map[string]int, len(raws)) // id → index of its first event
	for i, raw := range raws {
		ev, err := s.batchEvent(kind, raw)
		if err == nil {
			if j, ok := first[ev.id]; ok && string(raws[j]) != string(raw) {
				err = badRequest(bhiv.ErrInvalidID.Error(), "event %d has the id %q of event %d but differs from it: one id names one event", i, ev.id, j)
			} else if !ok {
				first[ev.id] = i
			}
		}
		if err != nil {
			p := invalidInput(err)
			if p.status == http.StatusRequestEntityTooLarge {
				tooLarge++
			}
			id := ev.id
			if id == "" {
				var probe struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(raw, &probe)
				id = probe.ID
			}
			invalid = append(invalid, InvalidEvent{Index: i, ID: id, Reason: p.reason, Error: p.msg})
			continue
		}
		evs = append(evs, ev)
	}
	if len(invalid) > 0 {
		status := http.StatusBadRequest
		if tooLarge == len(invalid) {
			status = http.StatusRequestEntityTooLarge
		}
		return nil, &problem{status: status, reason: invalid[0].Reason, invalid: invalid,
			msg: fmt.Sprintf("%d of %d events are invalid (first, event %d: %s); nothing was stored", len(invalid), len(raws), invalid[0].Index, invalid[0].Error)}
	}
	return evs, nil
}

// batchEvent decodes one element of a batch, which must be a CloudEvent in
// the JSON format.
func (s *Server) batchEvent(kind bhiv.Kind, raw json.RawMessage) (event, error) {
	m := members(raw)
	if m == nil {
		return event{}, &bhiv.DecodeError{Reason: bhiv.ErrNotObject, Detail: "a batch holds CloudEvents (JSON objects)"}
	}
	if !isEnvelope(m) {
		return event{}, &bhiv.DecodeError{Reason: bhiv.ErrInvalidEnvelope, Detail: "not a CloudEvent: it has no specversion"}
	}
	return s.decodeEnvelope(kind, m, raw)
}

// decode runs bhiv.Decode on msg and checks that the envelope to publish
// fits the consumer's size limit (it decodes the envelope, larger than a
// bare body) and the server's max payload. An event that came without a
// source, which Decode names after the subject ("nats:<subject>"), gets the
// configured one instead: it did not come from NATS.
func (s *Server) decode(msg bhiv.Message) (event, error) {
	ev, err := bhiv.Decode(msg, bhiv.DecodeOptions{SubjectPrefix: s.cfg.Stream.SubjectPrefix, MaxBytes: s.cfg.MaxEventBytes})
	if err != nil {
		return event{}, err
	}
	var body []byte
	if ev.Source == "nats:"+msg.Subject {
		ev.Source = s.cfg.Source
		body, err = ev.MarshalJSON()
	} else {
		body, err = ev.JSON()
	}
	if err != nil {
		return event{}, &bhiv.DecodeError{Reason: bhiv.ErrInvalidEnvelope, Detail: err.Error()}
	}
	out := event{id: ev.ID, kind: ev.Kind(), subject: msg.Subject, body: body}
	if len(body) > s.cfg.MaxEventBytes {
		return out, &bhiv.DecodeError{Reason: bhiv.ErrTooLarge,
			Detail: fmt.Sprintf("event %s: the envelope is %d bytes, limit %d", ev.ID, len(body), s.cfg.MaxEventBytes)}
	}
	if limit := s.nc.MaxPayload(); limit > 0 && int64(len(body)+headerRoom+len(ev.ID)+len(s.cfg.Stream.Name)) > limit {
		return out, &bhiv.DecodeError{Reason: bhiv.ErrTooLarge,
			Detail: fmt.Sprintf("event %s: the envelope is %d bytes, the NATS server's max payload %d", ev.ID, len(body), limit)}
	}
	return out, nil
}

// headerRoom bounds the NATS headers a publish adds besides the id and
// the stream name (Nats-Msg-Id, Nats-Expected-Stream, Content-Type).
const headerRoom = 128
