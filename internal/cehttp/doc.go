// Package cehttp holds what the receiving ends of the CloudEvents HTTP
// binding share: bhiv ingest and the Core stub both decode the ce- headers
// of binary-mode requests, and do it the same way.
package cehttp
