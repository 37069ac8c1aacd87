// Package bhiv is the event model of the HackaVerse → BHIV pipeline: the
// CloudEvents 1.0 envelope, the two event kinds (execution and reward) with
// their typed data, id and subject rules, the decoder the consumer uses for
// every form a message can arrive in, the failure-log record shared by the
// sinks and the consumer, and StreamConfig, the settings of the JetStream
// stream the events live in (internal/jsstream declares it on a server: the
// model makes no network calls and imports no NATS client).
//
// Every other package of this module imports this one; it imports nothing
// of theirs.
package bhiv
