package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/sinks"
)

// sinkConfig holds the sink and failure-log settings.
type sinkConfig struct {
	core   sinks.CoreConfig
	bucket sinks.BucketConfig
	s3     *sinks.S3Config // the bucket is on S3 (BHIV_BUCKET_URL=s3://...)
	failed sinks.FailureLogConfig
}

// bucketLocation says where the bucket is, for people.
func (s sinkConfig) bucketLocation() string {
	if s.s3 != nil {
		return s.s3.Location() + " at " + s.s3.Endpoint
	}
	return s.bucket.Dir
}

// readSinks reads and checks the sink and failure-log settings.
func readSinks(c *config) sinkConfig {
	s := sinkConfig{
		core: sinks.CoreConfig{
			URL:             c.str("BHIV_CORE_URL"),
			Token:           c.str("BHIV_CORE_TOKEN"),
			Mode:            sinks.CoreMode(c.oneOf("BHIV_CORE_MODE", "binary", "structured")),
			MaxRetries:      c.int("BHIV_CORE_MAX_RETRIES", 0),
			Backoff:         c.dur("BHIV_CORE_BACKOFF", 1),
			BackoffMax:      c.dur("BHIV_CORE_BACKOFF_MAX", 1),
			BreakerFailures: c.int("BHIV_CORE_BREAKER_FAILURES", 1),
			BreakerDelay:    c.dur("BHIV_CORE_BREAKER_DELAY", 1),
			Timeout:         c.dur("BHIV_CORE_TIMEOUT", 1),
			CAFile:          c.str("BHIV_CORE_CA_FILE"),
			CertFile:        c.str("BHIV_CORE_CERT_FILE"),
			KeyFile:         c.str("BHIV_CORE_KEY_FILE"),
			BatchMax:        c.int("BHIV_CORE_BATCH_MAX", 1),
			BatchLinger:     c.dur("BHIV_CORE_BATCH_LINGER", 0),
			Concurrency:     readCoreConcurrency(c),
			ConcurrencyMin:  c.int("BHIV_CORE_CONCURRENCY_MIN", 1),
			ConcurrencyMax:  c.int("BHIV_CORE_CONCURRENCY_MAX", 1),
			UserAgent:       "bhiv/" + Version(),
		},
		failed: sinks.FailureLogConfig{
			Path:     c.str("BHIV_FAILED_LOG"),
			MaxBytes: int64(c.int("BHIV_FAILED_LOG_MAX_MB", 1)) << 20,
		},
	}
	if s.core.MaxRetries == 0 {
		s.core.MaxRetries = -1 // none (0 would mean the default)
	}
	if u, err := url.Parse(s.core.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.check("BHIV_CORE_URL", errors.New("not an http(s) URL"))
	}
	if !c.isSet("BHIV_CORE_CONCURRENCY_MIN") { // the library's default floor, which follows a lower max
		s.core.ConcurrencyMin = sinks.CoreConfig{ConcurrencyMax: s.core.ConcurrencyMax}.WithDefaults().ConcurrencyMin
	}
	if s.core.ConcurrencyMax > sinks.MaxCoreConcurrency {
		c.check("BHIV_CORE_CONCURRENCY_MAX", fmt.Errorf("must be at most %d", sinks.MaxCoreConcurrency))
	} else if s.core.ConcurrencyMax < s.core.ConcurrencyMin {
		c.check("BHIV_CORE_CONCURRENCY_MAX", fmt.Errorf("is below BHIV_CORE_CONCURRENCY_MIN (%d)", s.core.ConcurrencyMin))
	}
	if (s.core.CertFile == "") != (s.core.KeyFile == "") {
		c.check("BHIV_CORE_CERT_FILE", errors.New("BHIV_CORE_CERT_FILE and BHIV_CORE_KEY_FILE go together"))
	}
	s.bucket, s.s3 = readBucket(c)
	if s.failed.Path == "" {
		c.check("BHIV_FAILED_LOG", errors.New("is empty"))
	}
	return s
}

// readCoreConcurrency reads BHIV_CORE_CONCURRENCY: 0 for auto, else the
// fixed number of requests in flight to Core.
func readCoreConcurrency(c *config) int {
	v := c.str("BHIV_CORE_CONCURRENCY")
	if strings.EqualFold(v, "auto") {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > sinks.MaxCoreConcurrency {
		c.check("BHIV_CORE_CONCURRENCY", fmt.Errorf("want auto or a whole number from 1 to %d", sinks.MaxCoreConcurrency))
		return 0
	}
	return n
}

// readConsumer reads the consumer settings.
func readConsumer(c *config, n natsConfig) consumer.Config {
	return consumer.Config{
		Stream:          n.stream,
		ManageStream:    n.manageStream,
		Durable:         c.str("BHIV_CONSUMER"),
		MaxAckPending:   c.int("BHIV_MAX_ACK_PENDING", 1),
		MaxInFlight:     c.int("BHIV_MAX_IN_FLIGHT", 0),
		Concurrency:     c.int("BHIV_CONCURRENCY", 1),
		AckWait:         c.dur("BHIV_ACK_WAIT", 1),
		MaxDeliver:      c.int("BHIV_MAX_DELIVER", 1),
		ShutdownTimeout: c.dur("BHIV_SHUTDOWN_TIMEOUT", 0),
		MaxHold:         c.dur("BHIV_MAX_HOLD", time.Second),
		MaxFailedHolds:  c.int("BHIV_MAX_FAILED_HOLDS", 1),
		MaxEventBytes:   n.maxEventBytes,
	}
}

// readBucket reads the bucket settings: a directory (BHIV_BUCKET_DIR, or
// BHIV_BUCKET_URL=file://...), or an S3 bucket (BHIV_BUCKET_URL=s3://...)
// with the S3 settings, when s3 is not nil.
func readBucket(c *config) (bucket sinks.BucketConfig, s3 *sinks.S3Config) {
	bucket = sinks.BucketConfig{Dir: c.str("BHIV_BUCKET_DIR"), NoFsync: !c.bool("BHIV_BUCKET_FSYNC")}
	if bucket.Dir == "" {
		c.check("BHIV_BUCKET_DIR", errors.New("is empty"))
	}
	raw := c.str("BHIV_BUCKET_URL")
	if raw == "" {
		return bucket, nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		c.check("BHIV_BUCKET_URL", errors.New("not a URL"))
	case u.Scheme == "file":
		dir := u.Path
		if u.Opaque != "" {
			dir = u.Opaque // file:relative/dir
		}
		if (u.Host != "" && u.Host != "localhost") || dir == "" {
			c.check("BHIV_BUCKET_URL", errors.New("want file:///absolute/path or file:relative/path"))
		}
		bucket.Dir = dir
	case u.Scheme == "s3":
		s3 = readS3(c, u)
	default:
		c.check("BHIV_BUCKET_URL", errors.New("want file:///path or s3://bucket/prefix"))
	}
	return bucket, s3
}

// readS3 reads the S3 settings of the bucket at u (s3://bucket/prefix).
func readS3(c *config, u *url.URL) *sinks.S3Config {
	region := c.str("BHIV_S3_REGION")
	if region == "" {
		region = c.str("AWS_REGION")
	}
	lookup := map[string]string{"auto": sinks.S3LookupAuto, "true": sinks.S3LookupPath, "false": sinks.S3LookupHost}[c.oneOf("BHIV_S3_PATH_STYLE", "auto", "true", "false")]
	conditional := map[string]sinks.ConditionalWrites{"auto": sinks.ConditionalAuto, "true": sinks.ConditionalOn, "false": sinks.ConditionalOff}[c.oneOf("BHIV_S3_CONDITIONAL_WRITES", "auto", "true", "false")]
	s3 := &sinks.S3Config{
		Bucket: u.Host, Prefix: u.Path, Endpoint: c.str("BHIV_S3_ENDPOINT"), Region: region, Lookup: lookup,
		CAFile:          c.str("BHIV_S3_CA_FILE"),
		AccessKeyID:     c.str("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: c.str("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    c.str("AWS_SESSION_TOKEN"),
		Profile:         c.str("AWS_PROFILE"),
		CredentialsFile: c.str("AWS_SHARED_CREDENTIALS_FILE"),
		Conditional:     conditional,
		Timeout:         c.dur("BHIV_S3_TIMEOUT", 1),
		Retries:         c.int("BHIV_S3_MAX_RETRIES", 0),
	}
	if s3.Retries == 0 {
		s3.Retries = -1 // none (0 would mean the default)
	}
	if ep := s3.Endpoint; ep != "" {
		if e, err := url.Parse(ep); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || (e.Path != "" && e.Path != "/") {
			c.check("BHIV_S3_ENDPOINT", errors.New("want http(s)://host[:port]"))
			return s3
		}
	}
	if (s3.AccessKeyID == "") != (s3.SecretAccessKey == "") {
		c.check("AWS_ACCESS_KEY_ID", errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together"))
		return s3
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		c.check("BHIV_BUCKET_URL", errors.New("want s3://bucket/prefix, without credentials or query (credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"))
	} else if err := s3.Validate(); err != nil {
		c.check("BHIV_BUCKET_URL", err)
	}
	return s3
}
