// Package e2e is the fault-injection suite: the real bhiv binary, nats-server
// in its own process and the core stub with injected faults, run through
// crashes, outages and hostile input, each scenario ending with the
// accounting check of internal/audit. It holds tests only.
//
// The suite runs scaled down by default; BHIV_E2E_LONG=1 runs the sizes of
// the issue (20,000 events, 30 s outages).
package e2e
