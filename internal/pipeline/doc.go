// Package pipeline assembles the consumer with its sinks — Core, Bucket (on
// local disk or S3) — and the failure log, for `bhiv consume`, `bhiv dev`
// and `bhiv bench`.
package pipeline
