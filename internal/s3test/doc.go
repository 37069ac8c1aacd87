// Package s3test runs a real S3-compatible server in the test process for
// the tests of the S3 bucket: gofakes3 with its in-memory backend, served
// over HTTP on a loopback port, behind a middleware that injects the faults
// of a real store (down, slow, 503 SlowDown, 403 AccessDenied, connections
// reset) and can play a store without conditional writes. Clients talk to
// it with a real S3 client over TCP: nothing of the client is mocked.
package s3test
