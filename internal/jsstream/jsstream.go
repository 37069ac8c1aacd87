package jsstream

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
)

// Config returns the JetStream configuration of the stream c describes:
// file storage, limits retention (events stay for replay and audit after
// they are processed), the max age, the size limit with DiscardNew (a full
// stream refuses publishes rather than delete events) and the
// de-duplication window.
func Config(c bhiv.StreamConfig) jetstream.StreamConfig {
	c = c.WithDefaults()
	maxAge, maxBytes := c.MaxAge, c.MaxBytes
	if maxAge < 0 {
		maxAge = 0 // none
	}
	if maxBytes <= 0 {
		maxBytes = -1 // none, as the server reports it
	}
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "HackaVerse execution and reward events for BHIV",
		Subjects:    []string{bhiv.SubjectWildcard(c.SubjectPrefix)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      maxAge,
		MaxBytes:    maxBytes,
		Duplicates:  c.Duplicates,
		Replicas:    c.Replicas,
	}
}

// Ensure creates the stream, or updates it to c when it exists and
// differs. A stream that already matches is left alone, so that the many
// publishers and consumers calling Ensure at start cost the server no
// update.
func Ensure(ctx context.Context, js jetstream.JetStream, c bhiv.StreamConfig) (jetstream.Stream, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cfg := Config(c)
	s, err := js.Stream(ctx, cfg.Name)
	if err == nil && matches(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("ensure stream %s on %s: %w", cfg.Name, cfg.Subjects[0], err)
	}
	s, err = js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s on %s: %w", cfg.Name, cfg.Subjects[0], err)
	}
	return s, nil
}

// matches reports whether the existing stream config has every setting
// Ensure manages.
func matches(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.Discard == want.Discard && have.MaxAge == want.MaxAge &&
		have.MaxBytes == want.MaxBytes && have.Duplicates == want.Duplicates && have.Replicas == want.Replicas && have.Description == want.Description
}
