package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is the repository, seen from this package's directory.
var repoRoot = filepath.Join("..", "..")

// loadCompose loads docker-compose.yml as `docker compose` would after
// `cp .env.example .env`, with the given profiles on ("*": all).
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	return loadComposeEnv(t, nil, profiles...)
}

// loadComposeEnv is loadCompose with the given values set in .env.
func loadComposeEnv(t *testing.T, dotEnv map[string]string, profiles ...string) *types.Project {
	t.Helper()
	dir := t.TempDir()
	for from, to := range map[string]string{"docker-compose.yml": "docker-compose.yml", ".env.example": ".env"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, from))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range dotEnv {
			b = regexp.MustCompile(`(?m)^`+k+`=.*$`).ReplaceAll(b, []byte(k+"="+v))
		}
		if err := os.WriteFile(filepath.Join(dir, to), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir), cli.WithEnvFiles(), cli.WithDotEnv, cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

// inRepo maps a path compose resolved against the project directory back
// to the repository.
func inRepo(t *testing.T, p *types.Project, path string) string {
	t.Helper()
	rel, err := filepath.Rel(p.WorkingDir, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%s is outside the project", path)
	}
	return filepath.Join(repoRoot, rel)
}

// environ is a service's environment as the binary reads it (getenvFrom).
func environ(svc types.ServiceConfig) func(string) string {
	return getenvFrom(func(k string) (string, bool) {
		v := svc.Environment[k]
		if v == nil {
			return "", false
		}
		return *v, true
	})
}

// healthURL returns the URL a `CMD <binary> healthcheck URL` (or wget) test
// asks.
func healthURL(t *testing.T, hc *types.HealthCheckConfig) *url.URL {
	t.Helper()
	if hc == nil || hc.Disable || len(hc.Test) < 2 {
		t.Fatalf("no health check: %+v", hc)
	}
	if hc.Test[0] != "CMD" {
		t.Errorf("health check %v: use the exec form (CMD); the images have no shell", hc.Test)
	}
	for _, a := range hc.Test[1:] {
		if strings.HasPrefix(a, "http://") {
			u, err := url.Parse(a)
			if err != nil {
				t.Fatalf("health check URL: %v", err)
			}
			return u
		}
	}
	t.Fatalf("health check %v asks no http:// URL", hc.Test)
	return nil
}

func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return p
}

// TestCompose checks that docker-compose.yml, loaded with compose-go the
// way `docker compose up` loads it, is consistent with the binary: the
// bhiv services run real subcommands with settings the binary knows and
// accepts, every service has a health check that asks the port it listens
// on, the consumer and ingest start after their dependencies are healthy,
// Prometheus scrapes both, the monitoring and S3 services stay off unless
// their profile is asked for, and the s3 profile's MinIO, its bucket and
// the consumer's S3 settings fit together.
func TestCompose(t *testing.T) {
	p := loadCompose(t, "*")
	known := map[string]bool{}
	for _, g := range allGroups {
		for _, s := range g.settings {
			known[s.env] = true
		}
	}
	for _, name := range []string{"nats", "core-stub", "consumer", "ingest", "prometheus", "grafana", "minio", "minio-init"} {
		if _, ok := p.Services[name]; !ok {
			t.Fatalf("service %s is missing", name)
		}
	}
	consumer, stub, nats, ingestSvc := p.Services["consumer"], p.Services["core-stub"], p.Services["nats"], p.Services["ingest"]

	// The services built from this repository: bhiv subcommands, .env,
	// known settings only, and `bhiv healthcheck` on their own port.
	for _, tc := range []struct {
		service, command, listenEnv, healthPath string
	}{
		{"core-stub", "core-stub", "BHIV_CORE_STUB_ADDR", "/bhiv/core/stats"},
		{"consumer", "consume", "BHIV_ADMIN_ADDR", "/readyz"},
		{"ingest", "ingest", "BHIV_INGEST_ADDR", "/readyz"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			svc := p.Services[tc.service]
			if svc.Build == nil || svc.Build.Context != p.WorkingDir || filepath.Base(svc.Build.Dockerfile) != "Dockerfile" {
				t.Errorf("not built from this repository's Dockerfile: %+v", svc.Build)
			}
			if len(svc.Command) == 0 || svc.Command[0] != tc.command {
				t.Fatalf("command %v, want %s", svc.Command, tc.command)
			}
			if _, ok := commands[svc.Command[0]]; !ok {
				t.Errorf("command %q is not a bhiv subcommand", svc.Command[0])
			}
			if len(svc.EnvFiles) != 1 || filepath.Base(svc.EnvFiles[0].Path) != ".env" {
				t.Errorf("env_file is not .env: %+v", svc.EnvFiles)
			}
			for k := range svc.Environment {
				if !known[k] {
					t.Errorf("environment %s is not a bhiv setting", k)
				}
			}
			// The env_file carries every setting from .env.example.
			for k := range known {
				if _, ok := svc.Environment[k]; !ok {
					t.Errorf("%s does not get %s from .env", tc.service, k)
				}
			}
			listen := environ(svc)(tc.listenEnv)
			if host, _, err := net.SplitHostPort(listen); err != nil || (host != "0.0.0.0" && host != "") {
				t.Errorf("%s=%q: not reachable from other containers (listen on 0.0.0.0)", tc.listenEnv, listen)
			}
			hc := svc.HealthCheck
			u := healthURL(t, hc)
			if len(hc.Test) < 3 || hc.Test[1] != "/bhiv" || hc.Test[2] != "healthcheck" {
				t.Errorf("health check %v does not run `/bhiv healthcheck` (distroless: no shell, no curl)", hc.Test)
			}
			if u.Port() != port(t, listen) || u.Path != tc.healthPath {
				t.Errorf("health check asks %s, want port %s path %s", u, port(t, listen), tc.healthPath)
			}
			if hc.Interval == nil || hc.Retries == nil || hc.Timeout == nil {
				t.Errorf("health check without interval, timeout or retries: %+v", hc)
			}
		})
	}

	t.Run("consumer wiring", func(t *testing.T) {
		env := environ(consumer)
		if u, err := url.Parse(env("NATS_URL")); err != nil || u.Hostname() != "nats" || u.Port() != "4222" {
			t.Errorf("NATS_URL=%q does not reach the nats service", env("NATS_URL"))
		}
		u, err := url.Parse(env("BHIV_CORE_URL"))
		if err != nil || u.Hostname() != "core-stub" || u.Port() != port(t, environ(stub)("BHIV_CORE_STUB_ADDR")) || u.Path != "/bhiv/core" {
			t.Errorf("BHIV_CORE_URL=%q does not reach the core-stub service", env("BHIV_CORE_URL"))
		}
		// The bucket and the failure log live in the /data volume.
		if !slices.ContainsFunc(consumer.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" }) {
			t.Errorf("consumer has no volume on /data: %+v", consumer.Volumes)
		}
		for _, k := range []string{"BHIV_BUCKET_DIR", "BHIV_FAILED_LOG"} {
			if !strings.HasPrefix(env(k), "/data/") {
				t.Errorf("%s=%q is not in the /data volume", k, env(k))
			}
		}
		for _, dep := range []string{"nats", "core-stub"} {
			if d, ok := consumer.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("consumer must wait for %s to be healthy: %+v", dep, consumer.DependsOn)
			}
		}
		// docker compose stop sends SIGTERM, then SIGKILL after the grace
		// period: it must outlast the consumer's own shutdown.
		shutdown, err := time.ParseDuration(env("BHIV_SHUTDOWN_TIMEOUT"))
		if err != nil {
			shutdown = 30 * time.Second
		}
		if consumer.StopGracePeriod == nil || time.Duration(*consumer.StopGracePeriod) < shutdown+5*time.Second {
			t.Errorf("stop_grace_period %v does not outlast BHIV_SHUTDOWN_TIMEOUT %s", consumer.StopGracePeriod, shutdown)
		}
	})

	t.Run("ingest wiring", func(t *testing.T) {
		env := environ(ingestSvc)
		if u, err := url.Parse(env("NATS_URL")); err != nil || u.Hostname() != "nats" || u.Port() != "4222" {
			t.Errorf("NATS_URL=%q does not reach the nats service", env("NATS_URL"))
		}
		if d, ok := ingestSvc.DependsOn["nats"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("ingest must wait for nats to be healthy: %+v", ingestSvc.DependsOn)
		}
		listen := port(t, env("BHIV_INGEST_ADDR"))
		if !slices.ContainsFunc(ingestSvc.Ports, func(pc types.ServicePortConfig) bool {
			return pc.Published == listen && fmt.Sprint(pc.Target) == listen
		}) {
			t.Errorf("ingest does not publish its port %s: %+v", listen, ingestSvc.Ports)
		}
		// docker compose stop must outlast ingest's own shutdown: requests
		// in flight wait for their acks (publish timeout + 5 s).
		publish, err := time.ParseDuration(env("BHIV_INGEST_PUBLISH_TIMEOUT"))
		if err != nil {
			t.Fatalf("BHIV_INGEST_PUBLISH_TIMEOUT=%q: %v", env("BHIV_INGEST_PUBLISH_TIMEOUT"), err)
		}
		if ingestSvc.StopGracePeriod == nil || time.Duration(*ingestSvc.StopGracePeriod) < publish+5*time.Second {
			t.Errorf("stop_grace_period %v does not outlast ingest's shutdown (%s)", ingestSvc.StopGracePeriod, publish+5*time.Second)
		}
	})

	t.Run("ingest settings accepted", func(t *testing.T) {
		fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
		c := newConfig(fs, environ(ingestSvc), natsSettings, ingestSettings, logSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		newLogger(c, io.Discard)
		readIngest(c, readNATS(c))
		if err := c.err(); err != nil {
			t.Errorf("bhiv ingest would refuse the compose settings: %v", err)
		}
	})

	t.Run("prometheus scrapes consumer and ingest", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "prometheus.yml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"consumer:" + port(t, environ(consumer)("BHIV_ADMIN_ADDR")),
			"ingest:" + port(t, environ(ingestSvc)("BHIV_INGEST_ADDR")),
		} {
			if !strings.Contains(string(b), `"`+want+`"`) {
				t.Errorf("prometheus.yml does not scrape %s", want)
			}
		}
	})

	t.Run("consumer settings accepted", func(t *testing.T) {
		// The settings the consumer container gets pass the binary's own
		// checks (as `bhiv consume` reads them, before it connects).
		fs := flag.NewFlagSet("consume", flag.ContinueOnError)
		c := newConfig(fs, environ(consumer), natsSettings, coreSettings, bucketSettings, failureSettings, consumerSettings, adminSettings, logSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		newLogger(c, io.Discard)
		n := readNATS(c)
		readConsumer(c, n)
		readSinks(c)
		c.str("BHIV_ADMIN_ADDR")
		if err := c.err(); err != nil {
			t.Errorf("bhiv consume would refuse the compose settings: %v", err)
		}
	})

	t.Run("nats", func(t *testing.T) {
		if !strings.HasPrefix(nats.Image, "nats:") {
			t.Errorf("image %q is not the official nats image", nats.Image)
		}
		flagVal := func(name string) (string, bool) {
			i := slices.Index(nats.Command, name)
			if i < 0 {
				return "", false
			}
			if i+1 < len(nats.Command) {
				return nats.Command[i+1], true
			}
			return "", true
		}
		if _, ok := flagVal("-js"); !ok {
			t.Errorf("JetStream is off: %v", nats.Command)
		}
		store, _ := flagVal("-sd")
		if store == "" || !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == store }) {
			t.Errorf("JetStream store %q is not on a volume: %+v", store, nats.Volumes)
		}
		monitor, _ := flagVal("-m")
		u := healthURL(t, nats.HealthCheck)
		if monitor == "" || u.Port() != monitor || u.Path != "/healthz" || u.Query().Get("js-enabled-only") != "true" {
			t.Errorf("health check asks %s; want the monitoring port (-m %s) /healthz?js-enabled-only=true", u, monitor)
		}
		// The default nats image is built FROM scratch: no shell, no wget.
		// The -alpine variant has busybox wget.
		if slices.Contains(nats.HealthCheck.Test, "wget") && !strings.Contains(nats.Image, "alpine") {
			t.Errorf("health check uses wget, which image %s does not have (use an -alpine tag)", nats.Image)
		}
	})

	t.Run("s3 profile", func(t *testing.T) {
		minio, initSvc := p.Services["minio"], p.Services["minio-init"]
		for _, svc := range []types.ServiceConfig{minio, initSvc} {
			if !slices.Equal(svc.Profiles, []string{"s3"}) {
				t.Errorf("%s is not in the s3 profile alone: %v", svc.Name, svc.Profiles)
			}
		}
		if !strings.HasPrefix(minio.Image, "minio/minio") || !strings.HasPrefix(initSvc.Image, "minio/mc") {
			t.Errorf("images %q and %q, want minio/minio and minio/mc", minio.Image, initSvc.Image)
		}
		// MinIO serves its data from a volume and answers its health check
		// with its own mc (the image has no curl).
		if len(minio.Command) < 2 || minio.Command[0] != "server" ||
			!slices.ContainsFunc(minio.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == minio.Command[1] }) {
			t.Errorf("minio command %v does not serve a volume: %+v", minio.Command, minio.Volumes)
		}
		if hc := minio.HealthCheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "mc", "ready", "local"}) || hc.Interval == nil || hc.Retries == nil {
			t.Errorf("minio health check %+v", minio.HealthCheck)
		}
		// minio-init makes the bucket once MinIO is healthy, with MinIO's
		// root credentials, which the consumer uses too.
		if d, ok := initSvc.DependsOn["minio"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("minio-init must wait for minio to be healthy: %+v", initSvc.DependsOn)
		}
		if len(initSvc.Command) != 3 || initSvc.Command[0] != "mb" || initSvc.Command[1] != "--ignore-existing" {
			t.Fatalf("minio-init command %v, want mb --ignore-existing <alias>/<bucket>", initSvc.Command)
		}
		alias, bucketName, _ := strings.Cut(initSvc.Command[2], "/")
		host := environ(initSvc)("MC_HOST_" + alias)
		hu, err := url.Parse(host)
		env, menv := environ(consumer), environ(minio)
		if err != nil || hu.Hostname() != "minio" || hu.Port() != "9000" {
			t.Errorf("MC_HOST_%s=%q does not reach minio:9000", alias, host)
		} else if pw, _ := hu.User.Password(); hu.User.Username() != menv("MINIO_ROOT_USER") || pw != menv("MINIO_ROOT_PASSWORD") {
			t.Errorf("minio-init's credentials are not MinIO's")
		}
		if env("AWS_ACCESS_KEY_ID") != menv("MINIO_ROOT_USER") || env("AWS_SECRET_ACCESS_KEY") != menv("MINIO_ROOT_PASSWORD") {
			t.Errorf("the consumer's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not MinIO's credentials")
		}
		if len(menv("MINIO_ROOT_PASSWORD")) < 8 {
			t.Errorf("MinIO refuses a root password under 8 characters")
		}
		if u, err := url.Parse(env("BHIV_S3_ENDPOINT")); err != nil || u.Hostname() != "minio" || u.Port() != "9000" {
			t.Errorf("BHIV_S3_ENDPOINT=%q does not reach the minio service", env("BHIV_S3_ENDPOINT"))
		}
		// The consumer waits for the bucket when the profile is on, and not
		// otherwise.
		if d, ok := consumer.DependsOn["minio-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully || d.Required {
			t.Errorf("consumer must wait for minio-init to complete, when it runs (required: false): %+v", consumer.DependsOn)
		}
		// The set-up of the compose file's header passes the binary's checks
		// and names the bucket minio-init makes.
		b, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`BHIV_BUCKET_URL=(s3://\S+) docker compose --profile s3 up`).FindSubmatch(b)
		if m == nil {
			t.Fatal("the header does not show the s3 set-up (BHIV_BUCKET_URL=s3://... docker compose --profile s3 up)")
		}
		if u, _ := url.Parse(string(m[1])); u.Host != bucketName {
			t.Errorf("the header uses bucket %q, minio-init makes %q", u.Host, bucketName)
		}
		s3p := loadComposeEnv(t, map[string]string{"BHIV_BUCKET_URL": string(m[1])}, "s3")
		fs := flag.NewFlagSet("consume", flag.ContinueOnError)
		c := newConfig(fs, environ(s3p.Services["consumer"]), natsSettings, coreSettings, bucketSettings, failureSettings, consumerSettings, adminSettings, logSettings)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		sc := readSinks(c)
		if err := c.err(); err != nil || sc.s3 == nil || sc.s3.Bucket != bucketName {
			t.Errorf("bhiv consume reads the s3 set-up as %+v, %v", sc.s3, err)
		}
	})

	t.Run("monitoring profile", func(t *testing.T) {
		for _, name := range []string{"prometheus", "grafana"} {
			if !slices.Contains(p.Services[name].Profiles, "monitoring") {
				t.Errorf("%s is not in the monitoring profile", name)
			}
			for _, v := range p.Services[name].Volumes {
				if v.Type == types.VolumeTypeBind {
					if _, err := os.Stat(inRepo(t, p, v.Source)); err != nil {
						t.Errorf("%s mounts %s, which the repository lacks", name, v.Source)
					}
				}
			}
		}
		// Plain `docker compose up` starts the four services only.
		plain := loadCompose(t)
		if got := slices.Sorted(func(yield func(string) bool) {
			for n := range plain.Services {
				if !yield(n) {
					return
				}
			}
		}); !slices.Equal(got, []string{"consumer", "core-stub", "ingest", "nats"}) {
			t.Errorf("without a profile compose starts %v", got)
		}
	})
}

// dockerfile is the Dockerfile's instructions, continuation lines joined.
func dockerfile(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur += s + " "
			continue
		}
		out = append(out, cur+line)
		cur = ""
	}
	return out
}

// TestComposeDockerfile checks the image the compose services are built
// from: a static, trimmed, versioned build, run as a non-root user from a
// base without a shell, with /bhiv as entry point (the health checks call
// it), /data as volume and the admin, ingest and stub ports exposed; and that the
// build context leaves out .env and local data.
func TestComposeDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms []string
	final := map[string][]string{} // instruction → arguments, in the last stage
	build := ""
	for _, in := range ins {
		op, args, _ := strings.Cut(in, " ")
		op = strings.ToUpper(op)
		if op == "FROM" {
			froms = append(froms, args)
			final = map[string][]string{}
			continue
		}
		final[op] = append(final[op], args)
		if op == "RUN" && strings.Contains(args, "go build") {
			build = args
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("not a multi-stage build from golang:1.26: FROM %v", froms)
	}
	base := froms[len(froms)-1]
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && !strings.HasPrefix(base, "scratch") {
		t.Errorf("final stage %q is not distroless static or scratch", base)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=", "./cmd/bhiv"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build %q lacks %s", build, want)
		}
	}
	if u := final["USER"]; len(u) == 0 || regexp.MustCompile(`^(0|root)(:|$)`).MatchString(u[len(u)-1]) {
		t.Errorf("final stage runs as %v, want a non-root USER", u)
	}
	if e := final["ENTRYPOINT"]; len(e) != 1 || e[0] != `["/bhiv"]` {
		t.Errorf(`ENTRYPOINT %v, want ["/bhiv"]`, e)
	}
	if v := strings.Join(final["VOLUME"], " "); !strings.Contains(v, "/data") {
		t.Errorf("VOLUME %q lacks /data", v)
	}
	exposed := strings.Fields(strings.Join(final["EXPOSE"], " "))
	for _, p := range []string{"8081", "8082", "9000"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ignored := strings.Fields(string(b))
	for _, want := range []string{".env", "data", ".git"} {
		if !slices.Contains(ignored, want) && !slices.Contains(ignored, "/"+want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
	for _, pat := range ignored {
		for _, keep := range []string{"go.mod", "go.sum", "cmd", "cmd/bhiv", "sinks", "consumer", "publisher", "internal"} {
			if ok, _ := filepath.Match(strings.TrimPrefix(pat, "/"), keep); ok {
				t.Errorf(".dockerignore pattern %q leaves out %s, which the build needs", pat, keep)
			}
		}
	}
}
