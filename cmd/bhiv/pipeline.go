package main

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/sinks"
)

// sinkConfig holds the sink and failure-log settings.
type sinkConfig struct {
	core   sinks.CoreConfig
	bucket sinks.BucketConfig
	failed sinks.FailureLogConfig
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
		bucket: sinks.BucketConfig{
			Dir:     c.str("BHIV_BUCKET_DIR"),
			NoFsync: !c.bool("BHIV_BUCKET_FSYNC"),
		},
		failed: sinks.FailureLogConfig{
			Path:     c.str("BHIV_FAILED_LOG"),
			MaxBytes: int64(c.int("BHIV_FAILED_LOG_MAX_MB", 1)) << 20,
		},
	}
	if u, err := url.Parse(s.core.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.check("BHIV_CORE_URL", errors.New("not an http(s) URL"))
	}
	if s.core.ConcurrencyMax > sinks.MaxCoreConcurrency {
		c.check("BHIV_CORE_CONCURRENCY_MAX", fmt.Errorf("must be at most %d", sinks.MaxCoreConcurrency))
	} else if s.core.ConcurrencyMax < s.core.ConcurrencyMin {
		c.check("BHIV_CORE_CONCURRENCY_MAX", fmt.Errorf("is below BHIV_CORE_CONCURRENCY_MIN (%d)", s.core.ConcurrencyMin))
	}
	if (s.core.CertFile == "") != (s.core.KeyFile == "") {
		c.check("BHIV_CORE_CERT_FILE", errors.New("BHIV_CORE_CERT_FILE and BHIV_CORE_KEY_FILE go together"))
	}
	if s.bucket.Dir == "" {
		c.check("BHIV_BUCKET_DIR", errors.New("is empty"))
	}
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
		MaxEventBytes:   n.maxEventBytes,
	}
}
