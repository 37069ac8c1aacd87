package bhiv

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// The model's one JSON helper. scanJSON validates bytes once, in one pass
// (Decode calls it once per message); the walkers below (eachMember,
// endOfValue, ...) then read JSON already known to be valid, without
// decoding it and without checking it again.

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

// scanJSON reports whether b holds exactly one valid JSON value (with
// optional surrounding white space), by the rules of encoding/json's
// json.Valid (strings may hold invalid UTF-8; nesting is limited to 10000),
// and whether it is already compact (no white space outside strings). It is
// several times faster than json.Valid, which matters on the publish path.
func scanJSON(b []byte) (valid, compact bool) {
	s := jsonScanner{b: b, compact: true}
	s.space()
	if !s.value(0) {
		return false, false
	}
	s.space()
	return s.i == len(b), s.compact
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

type jsonScanner struct {
	b       []byte
	i       int
	compact bool
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
			s.compact = false
		default:
			return
		}
	}
}

func (s *jsonScanner) value(depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.container(depth+1, '}')
	case c == '[':
		return s.container(depth+1, ']')
	case c == '"':
		return s.str()
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

// container scans an object or an array from its opening bracket to close,
// its closing one: values separated by commas, in an object each after its
// name.
func (s *jsonScanner) container(depth int, close byte) bool {
	if depth > maxJSONDepth {
		return false
	}
	s.i++ // '{' or '['
	s.space()
	if s.i < len(s.b) && s.b[s.i] == close {
		s.i++
		return true
	}
	for {
		if close == '}' && !s.name() {
			return false
		}
		if !s.value(depth) {
			return false
		}
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.space()
		case close:
			s.i++
			return true
		default:
			return false
		}
	}
}

// name scans an object member's name, the colon after it and the spaces
// around the colon.
func (s *jsonScanner) name() bool {
	if s.i >= len(s.b) || s.b[s.i] != '"' || !s.str() {
		return false
	}
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return false
	}
	s.i++
	s.space()
	return true
}

func (s *jsonScanner) str() bool {
	s.i++ // opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+4 >= len(s.b) {
					return false
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				s.i += 5
			default:
				return false
			}
		case c < 0x20:
			return false
		default:
			s.i++
		}
	}
	return false
}

func (s *jsonScanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *jsonScanner) number() bool {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return false
	}
	if s.b[s.i] == '0' {
		s.i++
	} else if s.digits() == 0 {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *jsonScanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}
