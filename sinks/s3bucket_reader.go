package sinks

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/lmittmann/tint"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/hackaverse/bhiv/internal/config"
)

// S3Reader reads the events of an S3 bucket.
type S3Reader struct {
	cfg       S3Config
	client    *minio.Client
	transport *http.Transport
	prefix    string // "" or ending in "/"
}

// NewS3Reader returns a reader of the bucket cfg names, once the store has
// answered that the bucket exists and may be read. A bad credential, a
// refused access or a missing bucket is a clear error.
func NewS3Reader(ctx context.Context, cfg S3Config) (*S3Reader, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	r := &S3Reader{cfg: cfg}
	if cfg.Prefix != "" {
		r.prefix = cfg.Prefix + "/"
	}
	if r.client, r.transport, err = newS3Client(cfg); err != nil {
		return nil, err
	}
	if err := r.checkBucket(ctx); err != nil {
		r.transport.CloseIdleConnections()
		return nil, err
	}
	return r, nil
}

// newS3Client returns a minio-go client for cfg, which must have its
// defaults. The client makes one attempt per call: retries are the
// caller's (failsafe-go), so that every one is counted and classified.
func newS3Client(cfg S3Config) (*minio.Client, *http.Transport, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: s3 endpoint: %w", err)
	}
	secure := u.Scheme == "https"
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: s3 transport: %w", err)
	}
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = cfg.MaxConns, cfg.MaxConns
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("bucket: s3 CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("bucket: s3 CA file %s holds no PEM certificate", cfg.CAFile)
		}
		if tr.TLSClientConfig != nil {
			tr.TLSClientConfig.RootCAs = pool
		}
	}
	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.FileAWSCredentials{Filename: cfg.CredentialsFile, Profile: cfg.Profile},
			&credentials.IAM{},
		})
	}
	lookup := minio.BucketLookupAuto
	switch cfg.Lookup {
	case S3LookupPath:
		lookup = minio.BucketLookupPath
	case S3LookupHost:
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds: creds, Secure: secure, Transport: tr, Region: cfg.Region,
		BucketLookup: lookup, MaxRetries: 1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: s3 client for %s: %w", cfg.Endpoint, err)
	}
	return client, tr, nil
}

// checkBucket asks the store whether the bucket exists, retrying what may
// pass, and says plainly what is wrong when it is not there or not ours.
func (r *S3Reader) checkBucket(ctx context.Context) error {
	var exists bool
	err := r.retrying(ctx, func(ctx context.Context) error {
		var err error
		exists, err = r.client.BucketExists(ctx, r.cfg.Bucket)
		return err
	})
	if err == nil && !exists {
		err = minio.ErrorResponse{Code: "NoSuchBucket", StatusCode: http.StatusNotFound, BucketName: r.cfg.Bucket}
	}
	return r.startErr("find bucket", err)
}

// startErr turns an error of the start-up checks into one that says what
// to fix.
func (r *S3Reader) startErr(what string, err error) error {
	if err == nil {
		return nil
	}
	where := fmt.Sprintf("%s at %s", r.cfg.Location(), r.cfg.Endpoint)
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("bucket: %s: %s: %w", where, what, err)
	}
	code, _ := s3Code(err)
	switch classifyS3(err) {
	case s3Config:
		if code == "NoSuchBucket" {
			return fmt.Errorf("bucket: %s: %s: the bucket does not exist; create it first (mc mb, aws s3 mb): %w", where, what, err)
		}
		return fmt.Errorf("bucket: %s: %s: access refused (%s): check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, the IAM role), the bucket policy and BHIV_S3_REGION: %w", where, what, code, err)
	case s3Retry:
		return fmt.Errorf("bucket: %s: %s: the store cannot be reached or fails (check BHIV_S3_ENDPOINT): %w", where, what, err)
	}
	return fmt.Errorf("bucket: %s: %s: %w", where, what, err)
}

// retrying calls fn, with the request timeout, until it succeeds, fails
// with an error a retry cannot fix, or the retries run out.
func (r *S3Reader) retrying(ctx context.Context, fn func(context.Context) error) error {
	return failsafe.With(r.retryPolicy(nil)).WithContext(ctx).Run(func() error {
		actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		return fn(actx)
	})
}

// retryPolicy retries what classifyS3 says may pass, with exponential
// backoff and jitter.
func (r *S3Reader) retryPolicy(log *slog.Logger) retrypolicy.RetryPolicy[any] {
	b := retrypolicy.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return err != nil && classifyS3(err) == s3Retry }).
		WithMaxRetries(max(r.cfg.Retries, 0)).
		WithBackoff(r.cfg.RetryDelay, r.cfg.RetryDelayMax).
		WithJitterFactor(0.2).
		ReturnLastFailure()
	if log != nil {
		b = b.OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[any]) {
			log.Warn("bucket: S3 request failed, retrying", "attempt", e.Attempts(), "delay", e.Delay, tint.Err(e.LastError()))
		})
	}
	return b.Build()
}

// object returns the object name of a key.
func (r *S3Reader) object(key string) string { return r.prefix + key }

// List calls fn with the key of every event object under the prefix.
func (r *S3Reader) List(ctx context.Context, fn func(key string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing goroutine when fn stops early
	for obj := range r.client.ListObjects(ctx, r.cfg.Bucket, minio.ListObjectsOptions{Prefix: r.prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("bucket: list %s: %w", r.cfg.Location(), obj.Err)
		}
		key := strings.TrimPrefix(obj.Key, r.prefix)
		if hiddenKey(key) {
			continue
		}
		if err := fn(key); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Read returns the bytes of the object under key, or an error wrapping
// fs.ErrNotExist when there is none. It makes a single attempt.
func (r *S3Reader) Read(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	obj, err := r.client.GetObject(ctx, r.cfg.Bucket, r.object(key), minio.GetObjectOptions{})
	var data []byte
	if err == nil {
		data, err = io.ReadAll(obj)
		_ = obj.Close()
	}
	if err != nil {
		if code, _ := s3Code(err); code == "NoSuchKey" {
			return nil, fmt.Errorf("bucket: read %s/%s: %w", r.cfg.Location(), key, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("bucket: read %s/%s: %w", r.cfg.Location(), key, err)
	}
	return data, nil
}

// Close releases the connections.
func (r *S3Reader) Close() error {
	r.transport.CloseIdleConnections()
	return nil
}
