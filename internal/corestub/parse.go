package corestub

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/cehttp"
)

// The content modes, as Parse names them.
const (
	ModeBinary     = "binary"
	ModeStructured = "structured"
	ModeBatched    = "batched"
)

// unsupportedError is a request whose media type the stub does not take
// (415).
type unsupportedError struct{ msg string }

func (e unsupportedError) Error() string { return e.msg }

// Parse reads the events of a request in any of the three content modes of
// the CloudEvents HTTP binding, picked by Content-Type (§3): a type that
// starts with "application/cloudevents-batch" is batched mode (a JSON array
// of envelopes, §3.3), one that starts with "application/cloudevents" is
// structured mode (one envelope, §3.2), anything else is binary mode (the
// body is the data, Content-Type its datacontenttype, every other attribute
// a ce- header, §3.1). Header values are decoded as §3.1.3.2 says: a quoted
// string unquoted, then one round of percent-decoding, invalid UTF-8
// rejected. The events are valid bhiv envelopes.
func Parse(h http.Header, body []byte) (mode string, events []bhiv.Event, err error) {
	ct := h.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case strings.HasPrefix(mt, "application/cloudevents-batch"):
		if mt != "application/cloudevents-batch+json" {
			return ModeBatched, nil, unsupportedError{fmt.Sprintf("batch format %q is not supported: use application/cloudevents-batch+json", mt)}
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return ModeBatched, nil, fmt.Errorf("batched mode: body is not a JSON array: %w", err)
		}
		for i, raw := range raws {
			ev, err := parseEnvelope(raw)
			if err != nil {
				return ModeBatched, nil, fmt.Errorf("batched mode: event %d: %w", i, err)
			}
			events = append(events, ev)
		}
		return ModeBatched, events, nil
	case strings.HasPrefix(mt, "application/cloudevents"):
		if mt != "application/cloudevents+json" {
			return ModeStructured, nil, unsupportedError{fmt.Sprintf("event format %q is not supported: use application/cloudevents+json", mt)}
		}
		ev, err := parseEnvelope(body)
		if err != nil {
			return ModeStructured, nil, fmt.Errorf("structured mode: %w", err)
		}
		return ModeStructured, []bhiv.Event{ev}, nil
	}
	ev, err := parseBinary(h, body)
	if err != nil {
		return ModeBinary, nil, fmt.Errorf("binary mode: %w", err)
	}
	return ModeBinary, []bhiv.Event{ev}, nil
}

// parseEnvelope reads one envelope in the JSON event format.
func parseEnvelope(b []byte) (bhiv.Event, error) {
	var ev bhiv.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return bhiv.Event{}, fmt.Errorf("not a CloudEvents JSON envelope: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return bhiv.Event{}, err
	}
	return ev, nil
}

// binaryAttrs are the attributes binary mode carries in ce- headers that
// have their own field in bhiv.Event.
var binaryAttrs = map[string]bool{"specversion": true, "id": true, "source": true, "type": true, "time": true, "subject": true}

// parseBinary reads a binary-mode event.
func parseBinary(h http.Header, body []byte) (bhiv.Event, error) {
	if _, ok := h["Ce-Datacontenttype"]; ok {
		return bhiv.Event{}, errors.New("a ce-datacontenttype header must not be sent: Content-Type carries it (HTTP binding §3.1.1)")
	}
	attr := map[string]string{}
	var ext map[string]json.RawMessage
	for k, vs := range h {
		if len(k) < 4 || !strings.EqualFold(k[:3], "ce-") || len(vs) == 0 {
			continue
		}
		name := strings.ToLower(k[3:])
		v, err := cehttp.HeaderValue(vs[0])
		if err != nil {
			return bhiv.Event{}, fmt.Errorf("header %s: %w", k, err)
		}
		if binaryAttrs[name] {
			attr[name] = v
			continue
		}
		q, _ := json.Marshal(v)
		if ext == nil {
			ext = map[string]json.RawMessage{}
		}
		ext[name] = q
	}
	for _, name := range []string{"specversion", "id", "source", "type"} {
		if attr[name] == "" {
			return bhiv.Event{}, fmt.Errorf("not a CloudEvent: no ce-%s header (a binary-mode event needs ce-specversion, ce-id, ce-source and ce-type)", name)
		}
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		return bhiv.Event{}, errors.New("no Content-Type: binary mode carries the datacontenttype there")
	}
	if !json.Valid(body) {
		return bhiv.Event{}, unsupportedError{fmt.Sprintf("body is not JSON (Content-Type %q): bhiv data is a JSON object", ct)}
	}
	ev := bhiv.Event{
		SpecVersion: attr["specversion"], ID: attr["id"], Source: attr["source"], Type: attr["type"],
		Subject: attr["subject"], DataContentType: ct, Data: body, Extensions: ext,
	}
	if ts := attr["time"]; ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return bhiv.Event{}, fmt.Errorf("ce-time %q is not RFC 3339", ts)
		}
		ev.Time = t.UTC()
	}
	if err := ev.Validate(); err != nil {
		return bhiv.Event{}, err
	}
	return ev, nil
}
