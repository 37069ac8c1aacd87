package bhiv_test

import (
	"errors"
	"testing"

	"github.com/hackaverse/bhiv"
)

func TestSubject(t *testing.T) {
	tests := []struct {
		prefix string
		kind   bhiv.Kind
		want   string
	}{
		{"", bhiv.KindExecution, "bhiv.events.execution"},
		{"", bhiv.KindReward, "bhiv.events.reward"},
		{"acme.bhiv", bhiv.KindReward, "acme.bhiv.reward"},
	}
	for _, tt := range tests {
		if got := bhiv.Subject(tt.prefix, tt.kind); got != tt.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", tt.prefix, tt.kind, got, tt.want)
		}
		got, err := bhiv.KindFromSubject(tt.prefix, tt.want)
		if err != nil || got != tt.kind {
			t.Errorf("KindFromSubject(%q, %q) = %q, %v", tt.prefix, tt.want, got, err)
		}
	}
	if got := bhiv.SubjectWildcard(""); got != "bhiv.events.>" {
		t.Errorf("SubjectWildcard = %q", got)
	}
	if got := bhiv.SubjectWildcard("x.y"); got != "x.y.>" {
		t.Errorf("SubjectWildcard = %q", got)
	}
}

func TestKindFromSubjectErrors(t *testing.T) {
	for _, s := range []string{
		"", "bhiv.events", "bhiv.events.", "bhiv.events.deploy", "bhiv.events.execution.x",
		"other.execution", "bhiv.eventsexecution", "bhiv.events.Execution",
	} {
		_, err := bhiv.KindFromSubject("", s)
		if !errors.Is(err, bhiv.ErrUnknownSubject) {
			t.Errorf("KindFromSubject(%q) = %v, want ErrUnknownSubject", s, err)
		}
	}
}

func TestValidSubjectPrefix(t *testing.T) {
	for p, ok := range map[string]bool{
		"bhiv.events": true, "a": true, "a-b_c.d": true,
		"": false, "a..b": false, ".a": false, "a.": false, "a.*": false, "a.>": false, "a b": false,
	} {
		if err := bhiv.ValidSubjectPrefix(p); (err == nil) != ok {
			t.Errorf("ValidSubjectPrefix(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
