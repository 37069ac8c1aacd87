// Package audit reconciles a run of the pipeline, the accounting check of the
// fault-injection suite and of `bhiv audit`.
//
// Every event the stream holds (repeated ids counted once) must be at Core
// and in the bucket, or, for each sink that lacks it, in the failure log for
// that sink; a message that is not a valid event must be in the failure log
// by its stream sequence. An event that is neither is lost, unless the
// durable consumer has not processed it yet (above its ack floor), when it is
// pending. Bucket files that no message of the stream explains are reported
// as unexplained. The bucket is read through sinks.BucketReader: a
// directory of files or an S3 bucket.
package audit
