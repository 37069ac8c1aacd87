package bhiv

import "context"

// Sink takes events: Core, the Bucket, or any other destination. Deliver
// returns nil when the event is taken; otherwise an error, ideally a
// *SinkError saying the class of the failure. An error wrapping
// ErrUnavailable means the sink knows it is in an outage: the caller holds
// the event and tries again later instead of recording a failure. Deliver
// may be called concurrently and must not modify ev.
//
// It is the one sink contract: the consumer fans events out to Sinks
// (consumer.Sink is this interface) and replay re-sends failure records to
// them.
type Sink interface {
	Deliver(ctx context.Context, ev *Event) error
}

// Availability is implemented by sinks that can be down as a whole: Core
// (its circuit breaker is open), the Bucket (its store cannot take an
// event). Available reports false meanwhile; callers hold the events for
// that sink instead of sending them.
type Availability interface {
	Available() bool
}
