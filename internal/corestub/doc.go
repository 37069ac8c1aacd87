// Package corestub is a small stand-in for BHIV Core, used by `bhiv
// core-stub`, `bhiv dev`, `bhiv bench` and the tests. It takes events in the
// three content modes of the CloudEvents HTTP binding (binary, structured
// and batched, told apart by Content-Type as the binding's §3 says), counts
// them (deduplicated by event id) and the requests of each mode, records
// each event as the same envelope whichever mode it came in, checks the
// bearer token when one is set, and injects faults on request.
package corestub
