package ingest

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// result is how the publish of one event ended.
type result struct {
	dup bool  // acked, but the stream already held the id
	err error // not acked
}

// errNotSent marks the events of a batch left unsent after an earlier
// publish of the batch could not be sent.
var errNotSent = errors.New("not sent: an earlier event of the request could not be sent")

// publish publishes every event asynchronously, each with Nats-Msg-Id = its
// id (so a retry is stored once) and the expected stream (so an event never
// lands in a stream the consumer does not read), then waits until each has
// settled: acked, refused, or not acked within PublishTimeout. Once one
// cannot be sent, the rest are not sent.
func (s *Server) publish(evs []event) []result {
	results := make([]result, len(evs))
	futs := make([]jetstream.PubAckFuture, len(evs))
	var sendErr error
	for i, ev := range evs {
		if sendErr != nil {
			results[i].err = errNotSent
			continue
		}
		msg := &nats.Msg{Subject: ev.subject, Data: ev.body, Header: nats.Header{"Content-Type": {mediaStructured}}}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.id), jetstream.WithExpectStream(s.cfg.Stream.Name),
			jetstream.WithStallWait(s.cfg.PublishTimeout))
		if err != nil {
			sendErr, results[i].err = err, err
			continue
		}
		futs[i] = f
	}
	// The JetStream context times every future out after PublishTimeout;
	// this guard only bounds the wait should one never settle.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout+time.Second)
	defer cancel()
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			results[i].dup = ack.Duplicate
		case err := <-f.Err():
			results[i].err = err
		case <-ctx.Done():
			results[i].err = jetstream.ErrAsyncPublishTimeout
		}
	}
	return results
}

// classifyPublish decides the answer to a publish JetStream did not ack.
// Everything that a retry can fix — no stream responding, no ack in time,
// NATS disconnected, the stream full (DiscardNew limits) or short of
// resources, any JetStream error of code 503 — is 503, which the client
// retries after Retry-After. An event too large for the stream or server is
// 413. Anything else (a JetStream error of another code, such as the
// subject landing in another stream than the configured one) is 500.
func classifyPublish(err error) int {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return http.StatusAccepted
	case errors.Is(err, nats.ErrMaxPayload):
		return http.StatusRequestEntityTooLarge
	case errors.As(err, &apiErr):
		switch {
		case apiErr.ErrorCode == jsMessageExceedsMaximum:
			return http.StatusRequestEntityTooLarge
		case apiErr.Code == http.StatusServiceUnavailable || apiErr.Code == http.StatusRequestTimeout:
			return http.StatusServiceUnavailable
		}
		return http.StatusInternalServerError
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, errNotSent):
		return http.StatusServiceUnavailable
	}
	// An error this table does not know comes from the client library or
	// the connection; a retry is the client's best move.
	return http.StatusServiceUnavailable
}

// jsMessageExceedsMaximum is JetStream's error code for a message larger
// than the stream (or server) allows (JSStreamMessageExceedsMaximumErr).
const jsMessageExceedsMaximum jetstream.ErrorCode = 10054
