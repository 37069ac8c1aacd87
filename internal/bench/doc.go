// Package bench is the load engine behind `bhiv bench` and the end-to-end
// benchmarks: it publishes events at a rate or as fast as it can, and
// measures the publish rate, the end-to-end rate (published → acked by the
// consumer, both sinks) and the latencies from publish to Core and to the
// consumer's ack, next to the ceilings of the parts measured in the same
// run.
//
// Files by role: config.go (Config, Mix), bench.go (Run and the steps of a
// run), stack.go (the embedded NATS, core stub and consumer), watch.go (the
// durable's ack floor, polled), result.go (Result and its figures),
// ceilings.go and parts.go (what the parts do alone), process.go (child
// processes and their CPU and memory, the machine's load), profile.go (the
// consumer's profiles), limit.go (Core's limit, sampled), lag*.go (the bucket lag), scenario.go (the scenarios and their
// verdicts).
package bench
