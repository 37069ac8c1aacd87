package cehttp

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// HeaderValue decodes a ce- header value as the HTTP binding's §3.1.3.2
// says: surrounding white space is dropped, a double-quoted string is
// unquoted (backslash escapes processed), then one round of percent-decoding
// is done (either case of hex accepted, '+' left alone); a decoded value
// that is not valid UTF-8 is rejected.
func HeaderValue(v string) (string, error) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			b.WriteByte(v[i])
		}
		v = b.String()
	}
	d, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Errorf("bad percent-encoding: %w", err)
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("%q is not UTF-8 once percent-decoded", v)
	}
	return d, nil
}
