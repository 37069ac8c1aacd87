// Package e2e is the fault-injection suite: the real bhiv binary, nats-server
// in its own process and the core stub with injected faults, run through
// crashes, outages and hostile input, each scenario ending with the
// accounting check of internal/audit and the suite's own per-id check (every
// id it published is at Core and in the bucket, or in the failure log for
// the sink that lacks it). It holds tests only; each scenario prints a line
// "SCENARIO <name> published=… core=… dup=… bucket=… failed=… lost=0".
//
// The suite runs scaled down by default; BHIV_E2E_LONG=1 runs the sizes of
// the issue (20,000 events, 60 s outages). BHIV_E2E_BIN=<path> tests a
// prebuilt binary instead of building ./cmd/bhiv; BHIV_E2E_KEEP=<dir> keeps
// a failed scenario's logs, failure log and Core record.
package e2e
