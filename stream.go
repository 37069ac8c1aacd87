package bhiv

import (
	"errors"
	"fmt"
	"time"

	"github.com/hackaverse/bhiv/internal/config"
)

// DefaultStreamName is the name of the JetStream stream holding the events.
const DefaultStreamName = "BHIV"

// Stream defaults.
const (
	DefaultStreamMaxAge     = 7 * 24 * time.Hour
	DefaultStreamDuplicates = 2 * time.Minute
	// DefaultStreamMaxBytes is the stream's size limit when it has no age
	// limit (NoMaxAge).
	DefaultStreamMaxBytes = 10 << 30
)

// NoMaxAge, as StreamConfig.MaxAge, gives the stream no age limit: events
// stay until the stream is full (MaxBytes), and publishes then fail.
const NoMaxAge time.Duration = -1

// StreamConfig describes the events stream. The zero value, after
// WithDefaults, is the stream BHIV on bhiv.events.> with one replica.
//
// JetStream deletes an event older than MaxAge whether or not it was acked:
// an event not delivered within MaxAge is lost. Size limits never delete:
// a stream at MaxBytes refuses publishes (DiscardNew), and publishers get
// the error.
type StreamConfig struct {
	Name          string        // default "BHIV"
	SubjectPrefix string        // default "bhiv.events"
	Replicas      int           // default 1; 3 on a cluster
	MaxAge        time.Duration // default 7 days; NoMaxAge for none
	// MaxBytes is the stream's size limit: none when zero or negative,
	// except that with NoMaxAge zero means DefaultStreamMaxBytes.
	MaxBytes   int64
	Duplicates time.Duration // default 2 minutes
}

// WithDefaults returns c with every zero field set to its default.
func (c StreamConfig) WithDefaults() StreamConfig {
	config.Default(&c.Name, DefaultStreamName)
	config.Default(&c.SubjectPrefix, DefaultSubjectPrefix)
	config.Default(&c.Replicas, 1)
	config.Default(&c.MaxAge, DefaultStreamMaxAge)
	if c.MaxAge == NoMaxAge && c.MaxBytes == 0 {
		c.MaxBytes = DefaultStreamMaxBytes
	}
	config.Default(&c.Duplicates, DefaultStreamDuplicates)
	return c
}

// Validate checks c after defaults.
func (c StreamConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if !ValidStreamName(c.Name) {
		errs = append(errs, fmt.Errorf("stream name %q: use letters, digits, - and _ only", c.Name))
	}
	if err := ValidSubjectPrefix(c.SubjectPrefix); err != nil {
		errs = append(errs, err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("stream replicas %d: want 1 to 5", c.Replicas))
	}
	if c.MaxAge < 0 && c.MaxAge != NoMaxAge {
		errs = append(errs, fmt.Errorf("stream max age %s: want a positive duration, or NoMaxAge", c.MaxAge))
	}
	if c.Duplicates < 0 || (c.MaxAge > 0 && c.Duplicates > c.MaxAge) {
		errs = append(errs, fmt.Errorf("stream duplicates window %s must be positive and within max age %s", c.Duplicates, c.MaxAge))
	}
	return errors.Join(errs...)
}

// ValidStreamName reports whether name is usable as a JetStream stream name.
func ValidStreamName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
