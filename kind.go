package bhiv

import (
	"fmt"
	"strings"
)

// Kind is the kind of an event: execution or reward.
type Kind string

// The event kinds.
const (
	KindExecution Kind = "execution"
	KindReward    Kind = "reward"
)

// Kinds lists every known kind.
var Kinds = []Kind{KindExecution, KindReward}

// typePrefix prefixes a kind to make its CloudEvents type.
const typePrefix = "bhiv."

// Type returns the CloudEvents type of the kind, such as "bhiv.execution".
func (k Kind) Type() string { return typePrefix + string(k) }

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k == KindExecution || k == KindReward }

// ParseKind returns the kind named s ("execution" or "reward").
func ParseKind(s string) (Kind, error) {
	k := Kind(s)
	if !k.Valid() {
		return "", &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("%q is not one of execution, reward", s)}
	}
	return k, nil
}

// KindFromType returns the kind of a CloudEvents type such as "bhiv.reward".
func KindFromType(t string) (Kind, error) {
	k := Kind(strings.TrimPrefix(t, typePrefix))
	if !strings.HasPrefix(t, typePrefix) || !k.Valid() {
		return "", &DecodeError{Reason: ErrUnknownKind, Detail: fmt.Sprintf("type %q is not one of bhiv.execution, bhiv.reward", t)}
	}
	return k, nil
}
