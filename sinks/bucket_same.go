package sinks

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// sameJSON reports whether a and b are the same JSON value: the same bytes,
// or the same once decoded (another encoder may order or space them
// differently, or spell a number otherwise: 1.0, 1e0). Numbers compare by
// exact decimal value, never through float64, which cannot tell
// 9007199254740993 from 9007199254740992.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	va, err := decodeExact(a)
	if err != nil {
		return false
	}
	vb, err := decodeExact(b)
	if err != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// decodeExact decodes one JSON value, with every number as its canonical
// literal (canonNumber).
func decodeExact(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return canonNumbers(v), nil
}

// canonNumbers replaces, in a decoded value, each json.Number by its
// canonical literal.
func canonNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		return json.Number(canonNumber(string(v)))
	case map[string]any:
		for k, e := range v {
			v[k] = canonNumbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = canonNumbers(e)
		}
	}
	return v
}

// canonNumber spells a JSON number literal so that literals of the same
// exact value come out the same: its digits without leading or trailing
// zeros and a power of ten ("-1.50e3" and "-1500" are "-15e2"; "0", "-0.0"
// and "0e7" are "0"). A literal whose exponent does not fit in 62 bits is
// kept as it is.
func canonNumber(lit string) string {
	sign := ""
	if rest, ok := strings.CutPrefix(lit, "-"); ok {
		sign, lit = "-", rest
	}
	mant, exp := lit, int64(0)
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		e, err := strconv.ParseInt(strings.TrimPrefix(lit[i+1:], "+"), 10, 64)
		if err != nil || e > 1<<62 || e < -1<<62 {
			return sign + lit
		}
		mant, exp = lit[:i], e
	}
	whole, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(whole+frac, "0")
	if digits == "" {
		return "0"
	}
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	return sign + trimmed + "e" + strconv.FormatInt(exp, 10)
}
