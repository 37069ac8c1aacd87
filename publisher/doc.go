// Package publisher is what HackaVerse services (the executor, the reward
// service) import to publish BHIV events to NATS JetStream.
//
// A Publisher wraps a jetstream.JetStream. Every event is validated before
// anything is sent, published as a CloudEvents JSON envelope on
// <prefix>.<kind> (bhiv.events.execution, bhiv.events.reward) with one
// header, Nats-Msg-Id, set to the event id, so a retried publish of the same
// event is stored once and the caller is told it was a duplicate.
//
// Publish, Execution and Reward are synchronous: they return when JetStream
// has acknowledged the event, or with an error when the context ends first
// (NATS unreachable gives a clear error within the context deadline, never a
// hang). PublishAsync and Wait publish many events with a bounded number of
// acks outstanding and report every failed publish.
package publisher
