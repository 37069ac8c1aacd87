package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/ingest"
	"github.com/hackaverse/bhiv/sinks"
)

// setting is one configuration value: read from a flag when given, else from
// its environment variable, else its default. Every setting is listed, with
// its default and help, in .env.example (a test keeps the two in step).
type setting struct {
	env string // environment variable
	// def is the default, as text: written from the package's Default
	// constant wherever the setting has one, so that the library and the
	// command cannot disagree.
	def    string
	help   string
	secret bool // never printed
	// emptyMeans is what the setting given as the empty string (variable or
	// flag) stands for, such as "off". Without it, an empty variable reads
	// as unset (the default applies) and an empty flag as empty.
	emptyMeans string
}

// given returns what v, given for s, stands for: v itself, or, when v is
// empty, what s says empty means.
func (s setting) given(v string) string {
	if v == "" {
		return s.emptyMeans
	}
	return v
}

// group is a titled list of settings, as in .env.example.
type group struct {
	title    string
	settings []setting
}

// Setting groups. The order is the order of .env.example.
var (
	natsSettings = group{"NATS", []setting{
		{env: "NATS_URL", def: nats.DefaultURL, help: "NATS server URL(s), comma-separated"},
		{env: "NATS_CREDS", help: "path of a credentials file (JWT + NKey seed)"},
		{env: "NATS_USER", help: "user name for user/password auth"},
		{env: "NATS_PASSWORD", help: "password for user/password auth", secret: true},
		{env: "NATS_TOKEN", help: "token for token auth", secret: true},
		{env: "NATS_NKEY_SEED", help: "path of an NKey seed file", secret: false},
		{env: "NATS_CA", help: "path of a CA certificate (PEM) to verify the server"},
		{env: "NATS_CERT", help: "path of a client certificate (PEM) for TLS client auth"},
		{env: "NATS_KEY", help: "path of the client certificate's key (PEM)"},
		{env: "BHIV_STREAM", def: bhiv.DefaultStreamName, help: "JetStream stream name"},
		{env: "BHIV_SUBJECT_PREFIX", def: bhiv.DefaultSubjectPrefix, help: "subject prefix: events go to <prefix>.execution and <prefix>.reward"},
		{env: "BHIV_STREAM_REPLICAS", def: "1", help: "stream replicas (3 on a JetStream cluster)"},
		{env: "BHIV_STREAM_MAX_AGE", def: durText(bhiv.DefaultStreamMaxAge), help: "how long the stream keeps an event, acked or not: an event not delivered within it is deleted by JetStream (0 = no age limit, bounded by BHIV_STREAM_MAX_BYTES)"},
		{env: "BHIV_STREAM_MAX_BYTES", def: "0", help: "stream size limit, in bytes or with KiB, MiB, GiB, TiB; a full stream refuses publishes, it deletes nothing (0 = none, or " + itoa(bhiv.DefaultStreamMaxBytes>>30) + "GiB when BHIV_STREAM_MAX_AGE is 0; -1 = none)"},
		{env: "BHIV_MANAGE_STREAM", def: "true", help: "create or update the stream at start (false where operators own it)"},
		{env: "BHIV_MAX_EVENT_BYTES", def: itoa(bhiv.DefaultMaxEventBytes), help: "largest event accepted, in bytes"},
	}}
	coreSettings = group{"Core sink (BHIV Core over HTTP)", []setting{
		{env: "BHIV_CORE_URL", def: sinks.DefaultCoreURL, help: "URL events are POSTed to"},
		{env: "BHIV_CORE_TOKEN", help: "bearer token sent to Core", secret: true},
		{env: "BHIV_CORE_MODE", def: string(sinks.CoreBinary), help: "CloudEvents HTTP content mode: binary (body = the event's data, attributes in ce- headers) or structured (body = the envelope); batches are always batched mode"},
		{env: "BHIV_CORE_MAX_RETRIES", def: itoa(sinks.DefaultCoreMaxRetries), help: "retries after the first attempt"},
		{env: "BHIV_CORE_BACKOFF", def: durText(sinks.DefaultCoreBackoff), help: "first retry delay (doubles, with jitter)"},
		{env: "BHIV_CORE_BACKOFF_MAX", def: durText(sinks.DefaultCoreBackoffMax), help: "largest retry delay, Retry-After included"},
		{env: "BHIV_CORE_BREAKER_FAILURES", def: itoa(sinks.DefaultCoreBreakerFailures), help: "consecutive failures that open the circuit breaker"},
		{env: "BHIV_CORE_BREAKER_DELAY", def: durText(sinks.DefaultCoreBreakerDelay), help: "time the breaker stays open before a probe"},
		{env: "BHIV_CORE_TIMEOUT", def: durText(sinks.DefaultCoreTimeout), help: "timeout of one attempt"},
		{env: "BHIV_CORE_CA_FILE", help: "CA certificate (PEM) to verify Core"},
		{env: "BHIV_CORE_CERT_FILE", help: "client certificate (PEM) for mTLS to Core"},
		{env: "BHIV_CORE_KEY_FILE", help: "client key (PEM) for mTLS to Core"},
		{env: "BHIV_CORE_BATCH_MAX", def: itoa(sinks.DefaultCoreBatchMax), help: "events per POST (1 = one event per POST; above 1, a JSON array)"},
		{env: "BHIV_CORE_BATCH_LINGER", def: durText(sinks.DefaultCoreBatchLinger), help: "how long a partial batch waits for more events"},
		{env: "BHIV_CORE_CONCURRENCY", def: "auto", help: "requests in flight to Core at once: auto (an adaptive limit that follows Core's latency) or a fixed number"},
		{env: "BHIV_CORE_CONCURRENCY_MIN", def: itoa(sinks.DefaultCoreConcurrencyMin), help: "lowest adaptive limit, or BHIV_CORE_CONCURRENCY_MAX when that is lower and this is unset (the limit starts at " + itoa(sinks.DefaultCoreConcurrencyInitial) + ", or here when this is higher)"},
		{env: "BHIV_CORE_CONCURRENCY_MAX", def: itoa(sinks.DefaultCoreConcurrencyMax), help: "highest adaptive limit; also sizes the connection pool"},
	}}
	bucketSettings = group{"Bucket sink (files on local disk, or S3-compatible object storage)", []setting{
		{env: "BHIV_BUCKET_DIR", def: sinks.DefaultBucketDir, help: "directory of the event files"},
		{env: "BHIV_BUCKET_FSYNC", def: "true", help: "fsync each file before it counts as written (false trades durability for speed)"},
		{env: "BHIV_BUCKET_URL", help: "where the events go: file:///path (default: BHIV_BUCKET_DIR) or s3://bucket/prefix (replicas on several machines; the S3 settings below)"},
		{env: "BHIV_S3_ENDPOINT", help: "S3 endpoint URL, such as http://minio:9000 (default: AWS S3)"},
		{env: "BHIV_S3_REGION", help: "S3 region (default: AWS_REGION, else asked from the bucket)"},
		{env: "BHIV_S3_PATH_STYLE", def: "auto", help: "path-style requests: true for MinIO and most self-hosted stores, false for virtual-host style, auto for virtual-host style on AWS only"},
		{env: "BHIV_S3_CA_FILE", help: "CA certificate (PEM) to verify an https S3 endpoint"},
		{env: "BHIV_S3_CONDITIONAL_WRITES", def: "auto", help: "first event under an id wins by If-None-Match: * (true), by a read before the write that is racy between replicas (false), or as found at start (auto)"},
		{env: "BHIV_S3_TIMEOUT", def: durText(sinks.DefaultS3Timeout), help: "timeout of one S3 request"},
		{env: "BHIV_S3_MAX_RETRIES", def: itoa(sinks.DefaultS3Retries), help: "retries of an S3 request that failed with a network error, a timeout or a 5xx"},
		{env: "AWS_ACCESS_KEY_ID", help: "S3 access key (without it: AWS_PROFILE in the shared credentials file, then the IAM role)"},
		{env: "AWS_SECRET_ACCESS_KEY", help: "S3 secret key", secret: true},
		{env: "AWS_SESSION_TOKEN", help: "S3 session token of temporary credentials", secret: true},
		{env: "AWS_PROFILE", help: "profile in the shared credentials file (default: default)"},
		{env: "AWS_SHARED_CREDENTIALS_FILE", help: "shared credentials file (default: ~/.aws/credentials)"},
		{env: "AWS_REGION", help: "AWS region, used when BHIV_S3_REGION is empty"},
	}}
	failureSettings = group{"Failure log", []setting{
		{env: "BHIV_FAILED_LOG", def: sinks.DefaultFailureLogPath, help: "JSON Lines file of events a sink finally could not take"},
		{env: "BHIV_FAILED_LOG_MAX_MB", def: itoa(sinks.DefaultFailureLogMaxBytes >> 20), help: "size at which the failure log is rotated, in MiB"},
	}}
	consumerSettings = group{"Consumer", []setting{
		{env: "BHIV_CONSUMER", def: consumer.DefaultDurable, help: "durable consumer name (shared by all replicas)"},
		{env: "BHIV_MAX_ACK_PENDING", def: itoa(consumer.DefaultMaxAckPending), help: "events in flight on the durable, all replicas together: how far the Bucket may run ahead of a slow Core"},
		{env: "BHIV_MAX_IN_FLIGHT", def: "0", help: "events one process holds at once (0 = BHIV_MAX_ACK_PENDING)"},
		{env: "BHIV_CONCURRENCY", def: itoa(consumer.DefaultConcurrency), help: "deliveries at once to a sink that does not pace itself (the Bucket); Core paces itself"},
		{env: "BHIV_ACK_WAIT", def: durText(consumer.DefaultAckWait), help: "time JetStream waits for an ack before redelivering"},
		{env: "BHIV_MAX_DELIVER", def: itoa(consumer.DefaultMaxDeliver), help: "deliveries of one event before it goes to the failure log"},
		{env: "BHIV_SHUTDOWN_TIMEOUT", def: durText(consumer.DefaultShutdownTimeout), help: "time to finish in-flight events on SIGTERM"},
		{env: "BHIV_MAX_HOLD", def: durText(consumer.DefaultMaxHold), help: "longest an event is held for an unavailable sink before it goes to the failure log (keep it well under BHIV_STREAM_MAX_AGE)"},
		{env: "BHIV_MAX_FAILED_HOLDS", def: itoa(consumer.DefaultMaxFailedHolds), help: "holds of one event that may end with its own attempts failed while the sink takes other events (a poison event) before it goes to the failure log"},
	}}
	adminSettings = group{"Admin server", []setting{
		{env: "BHIV_ADMIN_ADDR", def: "127.0.0.1:8081", help: "address of /metrics, /healthz, /readyz (off or empty turns it off)", emptyMeans: adminOff},
		{env: "BHIV_ADMIN_PPROF", def: "false", help: "also serve the Go profiler at /debug/pprof/ on the admin address (keep that address private)"},
	}}
	ingestSettings = group{"HTTP ingest (bhiv ingest, bhiv dev)", []setting{
		{env: "BHIV_INGEST_ADDR", def: "127.0.0.1:8082", help: "address of POST /events/{kind}, POST /bhiv/core, /healthz, /readyz and /metrics (bhiv dev: off turns it off)"},
		{env: "BHIV_INGEST_TOKEN", help: "bearer token clients must send (empty: anyone who reaches the address can publish)", secret: true},
		{env: "BHIV_INGEST_MAX_BYTES", def: itoa(ingest.DefaultMaxBodyBytes), help: "largest request body, in bytes (each event must also fit BHIV_MAX_EVENT_BYTES)"},
		{env: "BHIV_INGEST_PUBLISH_TIMEOUT", def: durText(ingest.DefaultPublishTimeout), help: "how long a request waits for JetStream's ack before it is answered 503 (under the clients' own timeout: 5s for the old connector)"},
		{env: "BHIV_INGEST_READ_TIMEOUT", def: durText(ingest.DefaultReadTimeout), help: "time to read a whole request, body included"},
		{env: "BHIV_INGEST_WRITE_TIMEOUT", def: durText(ingest.DefaultWriteTimeout), help: "time from the end of the request headers to the end of the answer (above the read and publish timeouts)"},
		{env: "BHIV_INGEST_IDLE_TIMEOUT", def: durText(ingest.DefaultIdleTimeout), help: "how long an idle keep-alive connection stays open"},
	}}
	stubSettings = group{"Core stub (bhiv core-stub, bhiv dev)", []setting{
		{env: "BHIV_CORE_STUB_ADDR", def: "127.0.0.1:9000", help: "address the Core stand-in listens on"},
	}}
	logSettings = group{"Logging", []setting{
		{env: "LOG_LEVEL", def: "info", help: "debug, info, warn or error"},
		{env: "LOG_FORMAT", def: "text", help: "text (coloured on a terminal) or json"},
	}}
)

// allGroups lists every group, in .env.example order.
var allGroups = []group{natsSettings, coreSettings, bucketSettings, failureSettings, consumerSettings, adminSettings, ingestSettings, stubSettings, logSettings}

// settingsByEnv indexes every setting by its environment variable.
var settingsByEnv = func() map[string]setting {
	m := map[string]setting{}
	for _, g := range allGroups {
		for _, s := range g.settings {
			m[s.env] = s
		}
	}
	return m
}()

// getenvFrom returns the getenv that run reads the environment through, over
// lookup (os.LookupEnv in main): a variable set to the empty string reads as
// unset, so that its default applies, unless its setting says what empty
// means (emptyMeans).
func getenvFrom(lookup func(string) (string, bool)) func(string) string {
	return func(key string) string {
		v, ok := lookup(key)
		if ok && v == "" {
			return settingsByEnv[key].given(v)
		}
		return v
	}
}

// flagName turns an environment name into its flag: BHIV_CORE_URL → core-url,
// NATS_URL → nats-url.
func flagName(env string) string {
	n := strings.TrimPrefix(env, "BHIV_")
	return strings.ReplaceAll(strings.ToLower(n), "_", "-")
}

// config reads settings: flags first, then the environment, then defaults.
// Errors name the variable (or flag) and are collected, so that every bad
// value is reported at once, before anything connects.
type config struct {
	fs     *flag.FlagSet
	getenv func(string) string
	vals   map[string]*string
	known  map[string]setting
	errs   []error
}

func newConfig(fs *flag.FlagSet, getenv func(string) string, groups ...group) *config {
	c := &config{fs: fs, getenv: getenv, vals: map[string]*string{}, known: map[string]setting{}}
	for _, g := range groups {
		for _, s := range g.settings {
			help := fmt.Sprintf("%s (env %s", s.help, s.env)
			if s.def != "" {
				help += ", default " + s.def
			}
			help += ")"
			c.vals[s.env] = fs.String(flagName(s.env), "", help)
			c.known[s.env] = s
		}
	}
	return c
}

// isSet reports whether env was set, by its flag or in the environment,
// rather than left to its default.
func (c *config) isSet(env string) bool {
	_, from := c.lookup(env)
	return from != env || c.getenv(env) != ""
}

// lookup returns the value of env and where it came from, for error
// messages: the flag, or the variable.
func (c *config) lookup(env string) (val, from string) {
	s, ok := c.known[env]
	if !ok {
		panic("bhiv: unknown setting " + env)
	}
	set := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == flagName(env) {
			set = true
		}
	})
	if set {
		return s.given(*c.vals[env]), "--" + flagName(env)
	}
	if v := c.getenv(env); v != "" {
		return v, env
	}
	return s.def, env
}

func (c *config) fail(env, from, val string, err error) {
	if c.known[env].secret {
		val = "<redacted>"
	}
	val = sinks.RedactURL(val) // user-info in a URL is a secret too
	c.errs = append(c.errs, fmt.Errorf("%s=%q: %w", from, val, err))
}

func (c *config) str(env string) string {
	v, _ := c.lookup(env)
	return v
}

func (c *config) int(env string, min int) int {
	return atLeast(c, env, min, strconv.Atoi, "not a whole number")
}

func (c *config) dur(env string, min time.Duration) time.Duration {
	return atLeast(c, env, min, time.ParseDuration, "not a duration such as 500ms, 10s or 2m")
}

// atLeast reads env with parse and checks that it is at least min; notA
// says what a value parse refuses is not.
func atLeast[T int | time.Duration](c *config, env string, min T, parse func(string) (T, error), notA string) T {
	v, from := c.lookup(env)
	n, err := parse(v)
	if err != nil {
		c.fail(env, from, v, errors.New(notA))
		return 0
	}
	if n < min {
		c.fail(env, from, v, fmt.Errorf("must be at least %v", min))
	}
	return n
}

func (c *config) bool(env string) bool {
	v, from := c.lookup(env)
	b, err := strconv.ParseBool(v)
	if err != nil {
		c.fail(env, from, v, errors.New("not true or false"))
	}
	return b
}

func (c *config) oneOf(env string, choices ...string) string {
	v, from := c.lookup(env)
	for _, ch := range choices {
		if strings.EqualFold(v, ch) {
			return ch
		}
	}
	c.fail(env, from, v, fmt.Errorf("want one of %s", strings.Join(choices, ", ")))
	return choices[0]
}

// parseSize reads a size in bytes: a whole number, optionally with a B,
// KiB, MiB, GiB or TiB suffix; -1 is accepted (no limit).
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if len(s) > len(u.suffix) && strings.EqualFold(s[len(s)-len(u.suffix):], u.suffix) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, errors.New("not a size such as 10737418240, 512MiB or 10GiB")
	case n == -1 && mult == 1:
		return -1, nil
	case n < 0:
		return 0, errors.New("must not be negative (-1 for no limit)")
	case n > math.MaxInt64/mult:
		return 0, errors.New("too large")
	}
	return n * mult, nil
}

// check records err, if any, against the setting env.
func (c *config) check(env string, err error) {
	if err != nil {
		v, from := c.lookup(env)
		c.fail(env, from, v, err)
	}
}

// err returns every error found, joined, or nil.
func (c *config) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %w", errors.Join(c.errs...))
}

// effective returns the effective values of the settings, secrets redacted,
// as slog attributes for the start-up line.
func (c *config) effective() []any {
	var out []any
	for _, g := range allGroups {
		for _, s := range g.settings {
			if _, ok := c.vals[s.env]; !ok {
				continue
			}
			v, _ := c.lookup(s.env)
			if s.secret && v != "" {
				v = "<redacted>"
			}
			if v == "" {
				continue
			}
			out = append(out, strings.ToLower(s.env), sinks.RedactURL(v))
		}
	}
	return out
}

// itoa writes a whole-number default as a setting's text.
func itoa[T ~int | ~int64](n T) string { return strconv.FormatInt(int64(n), 10) }

// durText writes a duration default as a setting's text, the way a person
// would: 2m and 168h, not 2m0s and 168h0m0s.
func durText(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}
