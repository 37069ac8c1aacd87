package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// setting is one configuration value: read from a flag when given, else from
// its environment variable, else its default. Every setting is listed, with
// its default and help, in .env.example (a test keeps the two in step).
type setting struct {
	env    string // environment variable
	def    string // default, as text
	help   string
	secret bool // never printed
}

// group is a titled list of settings, as in .env.example.
type group struct {
	title    string
	settings []setting
}

// Setting groups. The order is the order of .env.example.
var (
	natsSettings = group{"NATS", []setting{
		{env: "NATS_URL", def: "nats://127.0.0.1:4222", help: "NATS server URL(s), comma-separated"},
		{env: "NATS_CREDS", help: "path of a credentials file (JWT + NKey seed)"},
		{env: "NATS_USER", help: "user name for user/password auth"},
		{env: "NATS_PASSWORD", help: "password for user/password auth", secret: true},
		{env: "NATS_TOKEN", help: "token for token auth", secret: true},
		{env: "NATS_NKEY_SEED", help: "path of an NKey seed file", secret: false},
		{env: "NATS_CA", help: "path of a CA certificate (PEM) to verify the server"},
		{env: "NATS_CERT", help: "path of a client certificate (PEM) for TLS client auth"},
		{env: "NATS_KEY", help: "path of the client certificate's key (PEM)"},
		{env: "BHIV_STREAM", def: "BHIV", help: "JetStream stream name"},
		{env: "BHIV_SUBJECT_PREFIX", def: "bhiv.events", help: "subject prefix: events go to <prefix>.execution and <prefix>.reward"},
		{env: "BHIV_STREAM_REPLICAS", def: "1", help: "stream replicas (3 on a JetStream cluster)"},
		{env: "BHIV_MANAGE_STREAM", def: "true", help: "create or update the stream at start (false where operators own it)"},
		{env: "BHIV_MAX_EVENT_BYTES", def: "1048576", help: "largest event accepted, in bytes"},
	}}
	coreSettings = group{"Core sink (BHIV Core over HTTP)", []setting{
		{env: "BHIV_CORE_URL", def: "http://localhost:9000/bhiv/core", help: "URL events are POSTed to"},
		{env: "BHIV_CORE_TOKEN", help: "bearer token sent to Core", secret: true},
		{env: "BHIV_CORE_MODE", def: "binary", help: "CloudEvents HTTP content mode: binary (body = the event's data, attributes in ce- headers) or structured (body = the envelope); batches are always batched mode"},
		{env: "BHIV_CORE_MAX_RETRIES", def: "3", help: "retries after the first attempt"},
		{env: "BHIV_CORE_BACKOFF", def: "1s", help: "first retry delay (doubles, with jitter)"},
		{env: "BHIV_CORE_BACKOFF_MAX", def: "30s", help: "largest retry delay, Retry-After included"},
		{env: "BHIV_CORE_BREAKER_FAILURES", def: "5", help: "consecutive failures that open the circuit breaker"},
		{env: "BHIV_CORE_BREAKER_DELAY", def: "10s", help: "time the breaker stays open before a probe"},
		{env: "BHIV_CORE_TIMEOUT", def: "10s", help: "timeout of one attempt"},
		{env: "BHIV_CORE_CA_FILE", help: "CA certificate (PEM) to verify Core"},
		{env: "BHIV_CORE_CERT_FILE", help: "client certificate (PEM) for mTLS to Core"},
		{env: "BHIV_CORE_KEY_FILE", help: "client key (PEM) for mTLS to Core"},
		{env: "BHIV_CORE_BATCH_MAX", def: "1", help: "events per POST (1 = one event per POST; above 1, a JSON array)"},
		{env: "BHIV_CORE_BATCH_LINGER", def: "5ms", help: "how long a partial batch waits for more events"},
		{env: "BHIV_CORE_CONCURRENCY", def: "auto", help: "requests in flight to Core at once: auto (an adaptive limit that follows Core's latency) or a fixed number"},
		{env: "BHIV_CORE_CONCURRENCY_MIN", def: "1", help: "lowest adaptive limit (it starts at 8, or here when this is higher)"},
		{env: "BHIV_CORE_CONCURRENCY_MAX", def: "1024", help: "highest adaptive limit; also sizes the connection pool"},
	}}
	bucketSettings = group{"Bucket sink (files on local disk)", []setting{
		{env: "BHIV_BUCKET_DIR", def: "./data/bucket", help: "directory of the event files"},
		{env: "BHIV_BUCKET_FSYNC", def: "true", help: "fsync each file before it counts as written (false trades durability for speed)"},
	}}
	failureSettings = group{"Failure log", []setting{
		{env: "BHIV_FAILED_LOG", def: "./data/failed_core_sends.log", help: "JSON Lines file of events a sink finally could not take"},
		{env: "BHIV_FAILED_LOG_MAX_MB", def: "100", help: "size at which the failure log is rotated, in MiB"},
	}}
	consumerSettings = group{"Consumer", []setting{
		{env: "BHIV_CONSUMER", def: "bhiv-sinks", help: "durable consumer name (shared by all replicas)"},
		{env: "BHIV_MAX_ACK_PENDING", def: "5000", help: "events in flight on the durable, all replicas together: how far the Bucket may run ahead of a slow Core"},
		{env: "BHIV_MAX_IN_FLIGHT", def: "0", help: "events one process holds at once (0 = BHIV_MAX_ACK_PENDING)"},
		{env: "BHIV_CONCURRENCY", def: "256", help: "deliveries at once to a sink that does not pace itself (the Bucket); Core paces itself"},
		{env: "BHIV_ACK_WAIT", def: "30s", help: "time JetStream waits for an ack before redelivering"},
		{env: "BHIV_MAX_DELIVER", def: "20", help: "deliveries of one event before it goes to the failure log"},
		{env: "BHIV_SHUTDOWN_TIMEOUT", def: "30s", help: "time to finish in-flight events on SIGTERM"},
	}}
	adminSettings = group{"Admin server", []setting{
		{env: "BHIV_ADMIN_ADDR", def: "127.0.0.1:8081", help: "address of /metrics, /healthz, /readyz (off or empty turns it off)"},
		{env: "BHIV_ADMIN_PPROF", def: "false", help: "also serve the Go profiler at /debug/pprof/ on the admin address (keep that address private)"},
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
var allGroups = []group{natsSettings, coreSettings, bucketSettings, failureSettings, consumerSettings, adminSettings, stubSettings, logSettings}

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

// source says where a setting's value came from, for error messages.
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
		return *c.vals[env], "--" + flagName(env)
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
	c.errs = append(c.errs, fmt.Errorf("%s=%q: %w", from, val, err))
}

func (c *config) str(env string) string {
	v, _ := c.lookup(env)
	return v
}

func (c *config) int(env string, min int) int {
	v, from := c.lookup(env)
	n, err := strconv.Atoi(v)
	if err != nil {
		c.fail(env, from, v, errors.New("not a whole number"))
		return 0
	}
	if n < min {
		c.fail(env, from, v, fmt.Errorf("must be at least %d", min))
	}
	return n
}

func (c *config) dur(env string, min time.Duration) time.Duration {
	v, from := c.lookup(env)
	d, err := time.ParseDuration(v)
	if err != nil {
		c.fail(env, from, v, errors.New("not a duration such as 500ms, 10s or 2m"))
		return 0
	}
	if d < min {
		c.fail(env, from, v, fmt.Errorf("must be at least %s", min))
	}
	return d
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
			out = append(out, strings.ToLower(s.env), redactURL(v))
		}
	}
	return out
}
