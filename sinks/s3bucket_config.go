package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/hackaverse/bhiv/internal/config"
)

// Defaults of S3Config.
const (
	DefaultS3Endpoint      = "https://s3.amazonaws.com"
	DefaultS3Timeout       = 10 * time.Second
	DefaultS3Retries       = 3
	DefaultS3RetryDelay    = 100 * time.Millisecond
	DefaultS3RetryDelayMax = 2 * time.Second
)

// ConditionalWrites says how an S3Bucket keeps the first event written
// under an id.
type ConditionalWrites string

// The ways to keep the first event.
const (
	// ConditionalAuto finds out at start whether the store honours
	// If-None-Match on a PUT, and uses it when it does.
	ConditionalAuto ConditionalWrites = "auto"
	// ConditionalOn sends every PUT with If-None-Match: *, so that the
	// store itself refuses to replace an object (AWS S3 since 2024, MinIO,
	// Ceph RGW, ...). NewS3Bucket fails on a store that refuses it.
	ConditionalOn ConditionalWrites = "on"
	// ConditionalOff reads the key first and writes only when it is
	// absent. Between replicas this is racy: two replicas writing
	// different events under one id at the same moment may both succeed,
	// and the later write replaces the earlier. Only for stores without
	// conditional writes.
	ConditionalOff ConditionalWrites = "off"
)

// The ways to address a bucket.
const (
	S3LookupAuto = "auto" // virtual-host style on AWS and a few others, path style elsewhere
	S3LookupPath = "path" // http://endpoint/bucket/key: MinIO and most self-hosted stores
	S3LookupHost = "host" // http://bucket.endpoint/key
)

// S3Config configures an S3Bucket (or an S3Reader).
type S3Config struct {
	// Bucket is the bucket name; required.
	Bucket string
	// Prefix is put before every key, as <Prefix>/<kind>/<date>/<id>.json;
	// "" for none.
	Prefix string
	// Endpoint is the store's URL, http:// or https://; default
	// DefaultS3Endpoint (AWS S3).
	Endpoint string
	// Region is the bucket's region; "" finds it from the bucket.
	Region string
	// Lookup is S3LookupAuto (the default), S3LookupPath or S3LookupHost.
	Lookup string
	// CAFile, when set, holds the only certificates (PEM) trusted to
	// verify an https endpoint.
	CAFile string
	// AccessKeyID, SecretAccessKey and SessionToken are static
	// credentials. Without them, the shared credentials file (Profile in
	// CredentialsFile, default ~/.aws/credentials) and then the IAM role
	// of the machine, task or pod are tried, in that order.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Profile         string
	CredentialsFile string
	// Conditional is how the first event under an id is kept; default
	// ConditionalAuto.
	Conditional ConditionalWrites
	// Timeout bounds each request; default DefaultS3Timeout.
	Timeout time.Duration
	// Retries is how many times a request failing with a network error, a
	// timeout or a 5xx answer is retried; 0 means DefaultS3Retries, a
	// negative value none.
	Retries int
	// RetryDelay is the first wait between retries, doubling up to
	// RetryDelayMax; defaults DefaultS3RetryDelay, DefaultS3RetryDelayMax.
	RetryDelay    time.Duration
	RetryDelayMax time.Duration
	// MaxConns bounds the idle connections kept to the store; default 256.
	MaxConns int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default. A
// negative Retries stays as it is (none), so that applying the defaults
// twice changes nothing.
func (c S3Config) WithDefaults() S3Config {
	c.Prefix = strings.Trim(c.Prefix, "/")
	config.Default(&c.Endpoint, DefaultS3Endpoint)
	config.Default(&c.Lookup, S3LookupAuto)
	config.Default(&c.Conditional, ConditionalAuto)
	config.Default(&c.Timeout, DefaultS3Timeout)
	config.Default(&c.Retries, DefaultS3Retries)
	config.Default(&c.RetryDelay, DefaultS3RetryDelay)
	config.Default(&c.RetryDelayMax, max(DefaultS3RetryDelayMax, c.RetryDelay))
	config.Default(&c.MaxConns, 256)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c S3Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		errs = append(errs, fmt.Errorf("bucket: s3 bucket name %q: %w", c.Bucket, err))
	}
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		errs = append(errs, fmt.Errorf("bucket: s3 endpoint %q: want http(s)://host[:port]", c.Endpoint))
	}
	switch c.Lookup {
	case S3LookupAuto, S3LookupPath, S3LookupHost:
	default:
		errs = append(errs, fmt.Errorf("bucket: s3 lookup %q: want auto, path or host", c.Lookup))
	}
	switch c.Conditional {
	case ConditionalAuto, ConditionalOn, ConditionalOff:
	default:
		errs = append(errs, fmt.Errorf("bucket: s3 conditional writes %q: want auto, on or off", c.Conditional))
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		errs = append(errs, errors.New("bucket: s3 access key id and secret access key go together"))
	}
	if c.Timeout < 0 || c.RetryDelay < 0 || c.RetryDelayMax < 0 {
		errs = append(errs, errors.New("bucket: s3 timeout and retry delays must not be negative"))
	}
	return errors.Join(errs...)
}

// Location returns the bucket as a URL, s3://<bucket>/<prefix>.
func (c S3Config) Location() string {
	return "s3://" + c.Bucket + "/" + strings.Trim(c.Prefix, "/")
}
