// Package jsstream declares the events stream on JetStream: Config turns
// the stream bhiv.StreamConfig describes into JetStream's configuration, and
// Ensure creates or updates the stream. It is the one place that does, for
// the publisher, the consumer, HTTP ingest and the binary; the root package
// keeps the stream's settings and makes no JetStream calls.
package jsstream
