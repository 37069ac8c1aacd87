// Package natstest runs real embedded nats-server instances with JetStream
// for tests: one per test, on a random port, with its store in t.TempDir().
package natstest
