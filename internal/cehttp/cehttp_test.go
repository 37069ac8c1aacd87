package cehttp

import "testing"

func TestHeaderValue(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"plain", "plain", true},
		{"Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀", true},
		{"caf%c3%a9", "café", true},      // lower-case hex
		{"%41%42", "AB", true},           // needlessly encoded
		{`"a b \"q\""`, `a b "q"`, true}, // an older sender's quoted string
		{`"50%25"`, "50%", true},         // quoted, then percent-decoded
		{"%C0%A0", "", false},            // overlong: invalid UTF-8
		{"%FF", "", false},               // invalid UTF-8
		{"100%", "", false},              // a bare percent
		{"%G1", "", false},               // not hex
		{" \"x\" ", "x", true},           // surrounding white space dropped
	}
	for _, tt := range tests {
		got, err := HeaderValue(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("HeaderValue(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
