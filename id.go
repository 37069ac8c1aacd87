package bhiv

import (
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/oklog/ulid/v2"
)

// MaxIDLen is the longest id accepted.
const MaxIDLen = 128

// ValidID reports whether id is a valid event id: it matches
// [A-Za-z0-9][A-Za-z0-9._:-]{0,127}. A valid id is safe as a file name.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen || !isAlnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// CheckID returns a *DecodeError wrapping ErrInvalidID when id is not valid.
func CheckID(id string) error {
	if ValidID(id) {
		return nil
	}
	shown := id
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return &DecodeError{Reason: ErrInvalidID, Detail: fmt.Sprintf("%q does not match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}", shown)}
}

var (
	entropyMu sync.Mutex
	entropy   = ulid.Monotonic(rand.Reader, 0)
)

// NewID returns a new ULID: unique and sortable by creation time.
func NewID() string {
	entropyMu.Lock()
	defer entropyMu.Unlock()
	return ulid.MustNew(ulid.Now(), entropy).String()
}
