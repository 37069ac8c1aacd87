package bhiv

import (
	"fmt"
	"strings"
)

// DefaultSubjectPrefix is the subject prefix events are published under.
const DefaultSubjectPrefix = "bhiv.events"

// Subject returns the subject events of kind are published on: prefix.kind.
func Subject(prefix string, kind Kind) string {
	if prefix == "" {
		prefix = DefaultSubjectPrefix
	}
	return prefix + "." + string(kind)
}

// SubjectWildcard returns the subject filter that matches every event under
// prefix: prefix.>.
func SubjectWildcard(prefix string) string {
	if prefix == "" {
		prefix = DefaultSubjectPrefix
	}
	return prefix + ".>"
}

// KindFromSubject returns the kind of an event published on subject, which
// must be prefix.execution or prefix.reward.
func KindFromSubject(prefix, subject string) (Kind, error) {
	if prefix == "" {
		prefix = DefaultSubjectPrefix
	}
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok || rest == "" || strings.Contains(rest, ".") {
		return "", &DecodeError{Reason: ErrUnknownSubject, Detail: fmt.Sprintf("%q is not %s.execution or %s.reward", subject, prefix, prefix)}
	}
	k := Kind(rest)
	if !k.Valid() {
		return "", &DecodeError{Reason: ErrUnknownSubject, Detail: fmt.Sprintf("%q: kind %q is not one of execution, reward", subject, rest)}
	}
	return k, nil
}

// ValidSubjectPrefix checks a subject prefix: dot-separated tokens with no
// wildcards or white space.
func ValidSubjectPrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return fmt.Errorf("subject prefix %q: token %q is empty or has a wildcard or white space", prefix, tok)
		}
	}
	return nil
}
