package corestub

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/hackaverse/bhiv/internal/config"
)

// Faults are the failures the stub injects.
type Faults struct {
	FailRate    float64       `json:"fail_rate"`    // share of requests answered with Status (0..1)
	Status      int           `json:"status"`       // status of failed requests; default 503
	RetryAfter  string        `json:"retry_after"`  // Retry-After header sent with failures, if set
	Latency     time.Duration `json:"latency"`      // delay added to requests
	LatencyRate float64       `json:"latency_rate"` // share of requests delayed; 0 means all when Latency is set
	// LatencyJitter varies each delay uniformly within Latency ± LatencyJitter
	// (a delay that would fall below 0 is 0).
	LatencyJitter time.Duration `json:"latency_jitter"`
}

// Config configures a Stub.
type Config struct {
	Token  string // bearer token required when set
	Faults Faults
	// Capacity, when above 0, is how many requests the stub serves at once
	// (the delay of Faults included); the others wait in a first-in,
	// first-out queue of unbounded length, as in front of a server with
	// Capacity workers.
	Capacity int
	// RecordPath, when set, is a file to which the stub appends one JSON line
	// per event it accepts ({"id","kind","time"}), so that what Core received
	// survives a stub restart.
	RecordPath string
	// KeepEvents keeps every accepted event in memory, for Received
	// (tests).
	KeepEvents bool
	// Logger receives the fault changes; nil discards.
	Logger *slog.Logger
}

// WithDefaults returns f with every zero field set to its default: Status
// 503.
func (f Faults) WithDefaults() Faults {
	config.Default(&f.Status, http.StatusServiceUnavailable)
	return f
}

// Validate checks f after defaults and returns every problem found.
func (f Faults) Validate() error {
	f = f.WithDefaults()
	var errs []error
	if f.FailRate < 0 || f.FailRate > 1 {
		errs = append(errs, fmt.Errorf("fail rate %v: want 0 to 1", f.FailRate))
	}
	if f.LatencyRate < 0 || f.LatencyRate > 1 {
		errs = append(errs, fmt.Errorf("latency rate %v: want 0 to 1", f.LatencyRate))
	}
	if f.Latency < 0 || f.LatencyJitter < 0 {
		errs = append(errs, fmt.Errorf("latency %s and latency jitter %s: must not be negative", f.Latency, f.LatencyJitter))
	}
	if f.Status < 100 || f.Status > 599 {
		errs = append(errs, fmt.Errorf("status %d: not an HTTP status", f.Status))
	}
	return errors.Join(errs...)
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Faults = c.Faults.WithDefaults()
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Capacity < 0 {
		errs = append(errs, fmt.Errorf("capacity %d: want 0 (no limit) or more", c.Capacity))
	}
	if err := c.Faults.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// delay returns how long a request is held before its answer: Latency for
// the share LatencyRate of requests (all when 0), varied uniformly within
// ± LatencyJitter and never below 0.
func (f Faults) delay() time.Duration {
	if f.Latency <= 0 && f.LatencyJitter <= 0 {
		return 0
	}
	if f.LatencyRate > 0 && rand.Float64() >= f.LatencyRate {
		return 0
	}
	d := f.Latency
	if f.LatencyJitter > 0 {
		d += time.Duration((2*rand.Float64() - 1) * float64(f.LatencyJitter))
	}
	return max(d, 0)
}
