// Package sinktest is the conformance test every bhiv sink passes (Run),
// for the sinks of package sinks and any future one: build a Harness for
// the sink and call Run from a test.
package sinktest
