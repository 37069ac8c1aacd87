package sinks

import (
	"errors"
	"net/url"
	"strings"
	"unicode"
)

// RedactURL returns s, a URL or a comma-separated list of them (as
// NATS_URL takes), fit for logs and errors: the user-info (a password, a
// token) becomes REDACTED and so does every query value; a part that does
// not parse keeps only what follows the last "@" of its authority. Parts
// without "://" are not URLs and stay as they are. It is the one URL
// redaction of bhiv: the sinks, the settings and the logs use it.
func RedactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if strings.Contains(p, "://") {
			parts[i] = redactURLString(p)
		}
	}
	return strings.Join(parts, ",")
}

// redactURL returns u as text with its user-info replaced and query values
// hidden.
func redactURL(u *url.URL) string {
	r := *u
	if r.User != nil {
		r.User = url.User("REDACTED")
	}
	if r.RawQuery != "" {
		q := r.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		r.RawQuery = q.Encode()
	}
	return r.String()
}

// redactURLString is redactURL for a string that may not parse: everything
// before the last "@" of the authority is hidden.
func redactURLString(s string) string {
	if u, err := url.Parse(s); err == nil {
		return redactURL(u)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return "(unparsable URL)"
	}
	authority, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = "REDACTED@" + authority[i+1:]
	}
	return scheme + "://" + authority + "/" + path
}

// sanitize returns err with the URL in a *url.Error redacted.
func (c *Core) sanitize(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: c.safeURL, Err: ue.Err}
	}
	return err
}

// redact replaces every secret in s.
func (c *Core) redact(s string) string {
	for _, sec := range c.secrets {
		if len(sec) >= 3 { // shorter ones would mangle text without hiding anything
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
		}
	}
	return s
}

// printable returns b as valid UTF-8 (invalid bytes, such as a rune cut
// at the end of an excerpt, dropped) with control characters as spaces.
func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), ""))
}
