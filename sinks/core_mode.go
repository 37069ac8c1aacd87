package sinks

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hackaverse/bhiv"
)

// CoreMode is the CloudEvents HTTP content mode in which Core requests
// carry one event (CloudEvents HTTP Protocol Binding 1.0, §1.3 and §3).
// Batches (BatchMax above 1) are always in the batched mode (§3.3), the
// only one that holds several events.
type CoreMode string

// The content modes of CoreConfig.Mode.
const (
	// CoreBinary puts the event's data, as published, in the body, its
	// datacontenttype in Content-Type and every other attribute in a ce-
	// header (§3.1). It is what a Core written for the old connectors
	// expects: their payload as the JSON body.
	CoreBinary CoreMode = "binary"
	// CoreStructured posts the whole envelope in the JSON event format
	// (§3.2).
	CoreStructured CoreMode = "structured"
)

// CoreModes lists the modes CoreConfig.Mode accepts.
var CoreModes = []CoreMode{CoreBinary, CoreStructured}

// Media types of the structured and batched modes (JSON event format and
// JSON batch format). The batch type goes without parameters: JSON is
// UTF-8 by definition, and the CloudEvents Go SDK recognises a batch only
// by this exact value (http.IsHTTPBatch).
const (
	ContentTypeCloudEvents      = "application/cloudevents+json; charset=UTF-8"
	ContentTypeCloudEventsBatch = "application/cloudevents-batch+json"
)

// coreMsg is what one POST carries.
type coreMsg struct {
	key    string   // the Idempotency-Key
	body   []byte   // the request body
	ctype  string   // its Content-Type
	attrs  []string // binary mode: ce- header names and values, in pairs
	events int      // how many events body holds
}

// message returns the request that carries ev alone, in the configured
// mode.
func (c *Core) message(ev *bhiv.Event) (coreMsg, error) {
	if c.cfg.Mode == CoreStructured {
		body, err := ev.JSON()
		if err != nil {
			return coreMsg{}, fmt.Errorf("encode event: %w", err)
		}
		return coreMsg{key: ev.ID, body: body, ctype: ContentTypeCloudEvents, events: 1}, nil
	}
	attrs, err := binaryAttrs(ev)
	if err != nil {
		return coreMsg{}, err
	}
	ctype := ev.DataContentType
	if ctype == "" {
		ctype = bhiv.ContentTypeJSON
	}
	return coreMsg{key: ev.ID, body: ev.Data, ctype: ctype, attrs: attrs, events: 1}, nil
}

// batchMessage returns the request that carries the encoded envelopes of
// the events ids in the batched mode.
func batchMessage(ids []string, bodies [][]byte) coreMsg {
	return coreMsg{key: batchKey(ids), body: joinArray(bodies), ctype: ContentTypeCloudEventsBatch, events: len(ids)}
}

// binaryAttrs returns the ce- headers of ev in binary mode (§3.1.3): every
// attribute but datacontenttype and data, extensions included, under its
// own name prefixed with "ce-" (§3.1.3.1), its value the attribute's
// canonical string (the time as RFC 3339 in UTC, as in the envelope; a
// string extension's own text; any other extension's JSON text, which for
// a number or a boolean is its canonical string) percent-encoded as
// §3.1.3.2 says. An extension whose name is not a CloudEvents attribute
// name cannot be a header: the event is refused with an error.
func binaryAttrs(ev *bhiv.Event) ([]string, error) {
	attrs := make([]string, 0, 2*(6+len(ev.Extensions)))
	attrs = append(attrs,
		"ce-specversion", pctEncode(ev.SpecVersion),
		"ce-id", pctEncode(ev.ID),
		"ce-source", pctEncode(ev.Source),
		"ce-type", pctEncode(ev.Type))
	if !ev.Time.IsZero() {
		attrs = append(attrs, "ce-time", ev.Time.UTC().Format(time.RFC3339Nano))
	}
	if ev.Subject != "" {
		attrs = append(attrs, "ce-subject", pctEncode(ev.Subject))
	}
	if len(ev.Extensions) == 0 {
		return attrs, nil
	}
	for _, n := range ev.ExtensionNames() {
		if !bhiv.ValidAttrName(n) {
			return nil, fmt.Errorf("extension %q is not a CloudEvents attribute name (a-z, 0-9, at most 20): binary mode cannot carry it as a header; use BHIV_CORE_MODE=structured", n)
		}
		raw := ev.Extensions[n]
		v := string(raw)
		if len(raw) > 0 && raw[0] == '"' {
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("extension %s: %w", n, err)
			}
		}
		attrs = append(attrs, "ce-"+n, pctEncode(v))
	}
	return attrs, nil
}

// pctEncode percent-encodes s as the HTTP binding's §3.1.3.2 says: space,
// double quote, percent and every character outside printable ASCII
// (U+0021 to U+007E) become %XY for each byte of their UTF-8 encoding, in
// upper-case hex; control characters too, as recommended.
func pctEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if pctEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if pctEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// pctEscape reports whether the byte c is percent-encoded: bytes of
// multi-byte UTF-8 characters are all above 0x7E.
func pctEscape(c byte) bool { return c <= 0x20 || c >= 0x7F || c == '"' || c == '%' }
