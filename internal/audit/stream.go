package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
)

// fetchBatch is how many stream messages are fetched at a time.
const fetchBatch = 128

// eachMessage calls fn with every message of the stream, in order, up to the
// last sequence the stream had when it was called; it sets r's stream range.
func eachMessage(ctx context.Context, js jetstream.JetStream, stream string, r *Report, fn func(bhiv.Message)) error {
	s, err := retryTransient(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, stream) })
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", stream, err)
	}
	info, err := retryTransient(ctx, func(ctx context.Context) (*jetstream.StreamInfo, error) { return s.Info(ctx) })
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", stream, err)
	}
	r.FirstSeq, r.LastSeq = info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	last := info.State.LastSeq
	seen := info.State.FirstSeq - 1 // the last sequence handed to fn
	// open starts an ordered consumer at the sequence after seen; reading
	// goes on from there after a transient error (a leader election in a
	// cluster answers "no responders" for a moment).
	var oc jetstream.Consumer
	open := func() error {
		if oc != nil {
			dropConsumer(ctx, s, oc)
		}
		c, err := retryTransient(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
			return s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{InactiveThreshold: 30 * time.Second,
				DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seen + 1})
		})
		if err != nil {
			return fmt.Errorf("audit: read stream %s: %w", stream, err)
		}
		oc = c
		return nil
	}
	if err := open(); err != nil {
		return err
	}
	defer func() { dropConsumer(ctx, s, oc) }()
	giveUp := time.Now().Add(transientBudget)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Ask for no more than can remain, so that a batch ends as soon as
		// the stream's tail is read (only gaps make it wait for MaxWait).
		want := int(min(uint64(fetchBatch), last-seen))
		n, err := fetchInto(oc, want, last, &seen, stream, fn)
		if err != nil {
			if !transient(err) || time.Now().After(giveUp) {
				return fmt.Errorf("audit: read stream %s: %w", stream, err)
			}
			if err := open(); err != nil {
				return err
			}
			continue
		}
		if seen >= last || n == 0 {
			return nil // done, or the tail was removed (limits) while reading
		}
	}
}

// fetchInto fetches up to want messages from oc and hands those up to last
// to fn, advancing seen; it returns how many messages came.
func fetchInto(oc jetstream.Consumer, want int, last uint64, seen *uint64, stream string, fn func(bhiv.Message)) (int, error) {
	batch, err := oc.Fetch(want, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		return 0, err
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		md, err := msg.Metadata()
		if err != nil {
			return n, err
		}
		if md.Sequence.Stream > last {
			*seen = last // published after the check began: past the end
			continue
		}
		*seen = md.Sequence.Stream
		fn(bhiv.Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(),
			Stream: stream, Sequence: md.Sequence.Stream, Timestamp: md.Timestamp})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
		return n, err
	}
	return n, nil
}

// dropConsumer deletes the audit's ordered consumer (the server removes it
// when inactive anyway).
func dropConsumer(ctx context.Context, s jetstream.Stream, oc jetstream.Consumer) {
	if ci := oc.CachedInfo(); ci != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = s.DeleteConsumer(dctx, ci.Name)
		cancel()
	}
}

// transientBudget is how long retryTransient keeps trying: longer than a
// JetStream leader election, short enough that a server without JetStream
// gets a clear error.
var transientBudget = 20 * time.Second

// retryTransient calls fn, with a deadline per attempt, until it succeeds,
// fails with an error that is not transient, or ctx ends. Transient errors
// are those of a JetStream cluster electing a leader (a node just died): no
// responders, timeouts, a temporarily unavailable JetStream API.
func retryTransient[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	wait := 100 * time.Millisecond
	giveUp := time.Now().Add(transientBudget)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) || time.Now().After(giveUp) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func transient(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &apiErr) && apiErr.Code == 503
}
