package sinks

import (
	"errors"
	"net/http"

	"github.com/minio/minio-go/v7"
)

// s3Outcome is what one request's result means.
type s3Outcome int

const (
	s3OK          s3Outcome = iota // done
	s3Exists                       // 412: an object is there (conditional PUT)
	s3Retry                        // worth another attempt; when the retries run out, an outage
	s3Config                       // access refused: an outage, and a configuration problem
	s3Unsupported                  // 501: the store does not have what was asked (conditional writes)
	s3Permanent                    // about this request alone: no retry can change it
)

// s3RetryCodes are the S3 error codes worth another attempt, whatever the
// status.
var s3RetryCodes = map[string]bool{
	"SlowDown": true, "RequestTimeout": true, "InternalError": true, "ServiceUnavailable": true,
	"OperationAborted": true, "ConditionalRequestConflict": true, // 409: a concurrent write of the key
	"BadDigest": true, "IncompleteBody": true, "XAmzContentSHA256Mismatch": true, // damaged on the way
}

// s3ConfigCodes are the S3 error codes that say the store refuses us, not
// the object.
var s3ConfigCodes = map[string]bool{
	"AccessDenied": true, "AllAccessDisabled": true, "AccountProblem": true,
	"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true, "ExpiredToken": true,
	"InvalidToken": true, "TokenRefreshRequired": true, "NoSuchBucket": true,
	"PermanentRedirect": true, "AuthorizationHeaderMalformed": true, "InvalidRegion": true,
	"RequestTimeTooSkewed": true, "InvalidBucketName": true,
}

// classifyS3 is the one table that decides every request's result:
//
//	nil                                               done
//	412 PreconditionFailed                            an object is there
//	501 NotImplemented                                unsupported
//	no S3 answer: network error, timeout, torn body   retryable
//	SlowDown, RequestTimeout, InternalError, 409      retryable
//	  ConditionalRequestConflict, BadDigest, ...
//	408, 429, 5xx                                     retryable
//	401, 403, AccessDenied, InvalidAccessKeyId,       access refused (configuration)
//	  SignatureDoesNotMatch, ExpiredToken, NoSuchBucket,
//	  PermanentRedirect, AuthorizationHeaderMalformed, RequestTimeTooSkewed
//	any other S3 error (other 4xx)                    permanent for this object
//
// The caller's own context ending is checked by the caller before this
// table is asked.
func classifyS3(err error) s3Outcome {
	if err == nil {
		return s3OK
	}
	if errors.Is(err, errVanished) {
		return s3Retry
	}
	code, status := s3Code(err)
	switch {
	case status == 0 && code == "":
		return s3Retry // no answer from the store
	case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
		return s3Exists
	case status == http.StatusNotImplemented || code == "NotImplemented":
		return s3Unsupported
	case s3ConfigCodes[code], status == http.StatusUnauthorized, status == http.StatusForbidden:
		return s3Config
	case s3RetryCodes[code], status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return s3Retry
	}
	return s3Permanent
}

// s3Code returns the S3 error code and HTTP status of err, or "" and 0 when
// the store did not answer with an error.
func s3Code(err error) (code string, status int) {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code, er.StatusCode
	}
	return "", 0
}
