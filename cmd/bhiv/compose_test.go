package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/hackaverse/bhiv/internal/natstest"
)

// loadCompose loads docker-compose.yml as docker compose would, with .env
// copied from .env.example, and every profile on.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root := filepath.Join("..", "..")
	dir := t.TempDir()
	for _, f := range []string{"docker-compose.yml", ".env.example"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		name := f
		if f == ".env.example" {
			name = ".env"
		}
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir), cli.WithDotEnv, cli.WithProfiles([]string{"*"}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

// TestCompose checks that docker-compose.yml is consistent with the binary:
// its commands are real subcommands, its environment names real settings,
// and it has the volumes, health checks and start-up order a user needs.
func TestCompose(t *testing.T) {
	p := loadCompose(t)
	known := map[string]bool{}
	for _, g := range allGroups {
		for _, s := range g.settings {
			known[s.env] = true
		}
	}
	for _, name := range []string{"nats", "core-stub", "consumer", "prometheus", "grafana"} {
		if _, ok := p.Services[name]; !ok {
			t.Fatalf("service %s is missing", name)
		}
	}
	for _, name := range []string{"core-stub", "consumer"} {
		svc := p.Services[name]
		t.Run(name, func(t *testing.T) {
			if svc.Build == nil {
				t.Errorf("not built from this repo's Dockerfile")
			}
			if len(svc.Command) == 0 {
				t.Fatalf("no command")
			}
			if _, ok := commands[svc.Command[0]]; !ok {
				t.Errorf("command %q is not a bhiv subcommand", svc.Command[0])
			}
			if len(svc.EnvFiles) == 0 || filepath.Base(svc.EnvFiles[0].Path) != ".env" {
				t.Errorf("env_file .env missing: %+v", svc.EnvFiles)
			}
			for k := range svc.Environment {
				if !known[k] {
					t.Errorf("environment %s is not a bhiv setting", k)
				}
			}
			hc := svc.HealthCheck
			if hc == nil || len(hc.Test) < 3 {
				t.Fatalf("no health check")
			}
			if hc.Test[1] != "/bhiv" || hc.Test[2] != "healthcheck" {
				t.Errorf("health check %v does not use `bhiv healthcheck`", hc.Test)
			}
		})
	}
	consumer := p.Services["consumer"]
	for _, dep := range []string{"nats", "core-stub"} {
		if d, ok := consumer.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("consumer must depend on %s being healthy: %+v", dep, consumer.DependsOn)
		}
	}
	if !slices.ContainsFunc(consumer.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" }) {
		t.Errorf("consumer has no volume on /data")
	}
	env := consumer.Environment
	val := func(k string) string {
		if v := env[k]; v != nil {
			return *v
		}
		return ""
	}
	if !strings.Contains(val("NATS_URL"), "nats:4222") {
		t.Errorf("consumer NATS_URL = %q", val("NATS_URL"))
	}
	stubAddr := p.Services["core-stub"].Environment["BHIV_CORE_STUB_ADDR"]
	if stubAddr == nil || !strings.HasSuffix(*stubAddr, ":9000") || !strings.Contains(val("BHIV_CORE_URL"), "core-stub:9000/bhiv/core") {
		t.Errorf("consumer BHIV_CORE_URL %q does not reach core-stub", val("BHIV_CORE_URL"))
	}
	if !strings.HasPrefix(val("BHIV_ADMIN_ADDR"), "0.0.0.0:") {
		t.Errorf("admin server not reachable from other containers: %q", val("BHIV_ADMIN_ADDR"))
	}
	nats := p.Services["nats"]
	if !slices.Contains(nats.Command, "-js") || nats.HealthCheck == nil {
		t.Errorf("nats: JetStream off or no health check: %v", nats.Command)
	}
	for _, name := range []string{"prometheus", "grafana"} {
		if !slices.Contains(p.Services[name].Profiles, "monitoring") {
			t.Errorf("%s is not in the monitoring profile", name)
		}
	}
	// The env_file carries every setting, so the file compose reads is complete.
	for k := range known {
		if _, ok := p.Services["consumer"].Environment[k]; !ok {
			t.Errorf("consumer does not get %s from .env", k)
		}
	}
}

// TestDashboardMetricsExist checks that every bhiv_ metric the Grafana
// dashboard queries is exported by a real consume run (the series come from
// TestMetricsAndSecrets' kind of run, scraped here again).
func TestDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "bhiv.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	exported := scrapeRealRun(t)
	re := regexp.MustCompile(`\b(bhiv_[a-z_]+|process_[a-z_]+|go_[a-z_]+)\b`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				n++
				if !exported[m] {
					t.Errorf("panel %q queries %s, which bhiv does not export", p.Title, m)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("the dashboard queries only %d metrics", n)
	}
}

// scrapeRealRun runs `bhiv consume` briefly and returns the metric names its
// /metrics exports (histogram series names included).
func scrapeRealRun(t *testing.T) map[string]bool {
	t.Helper()
	ns := natstest.Start(t)
	srv := ns.URL()
	dir := t.TempDir()
	core := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	env := map[string]string{
		"NATS_URL": srv, "BHIV_CORE_URL": core + "/bhiv/core", "BHIV_BUCKET_DIR": filepath.Join(dir, "b"),
		"BHIV_FAILED_LOG": filepath.Join(dir, "f.log"), "BHIV_ADMIN_ADDR": "127.0.0.1:0", "LOG_FORMAT": "json",
		"BHIV_CORE_BATCH_MAX": "2",
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"bhiv", "consume"}, envMap(env), &logs, &logs) }()
	defer func() { cancel(); <-done }()
	if _, errOut, err := runBhiv(t, context.Background(), env, "publish", "execution", "--team", "t", "--action", "a"); err != nil {
		t.Fatalf("publish: %v %s", err, errOut)
	}
	// An invalid message, so that the failure-record series exist too.
	nc, _ := ns.Connect()
	nc.Publish("bhiv.events.reward", []byte("not json"))
	nc.Flush()
	url := waitForLogField(t, &logs, "admin server listening", "metrics")
	names := map[string]bool{}
	waitFor(t, 20*time.Second, func() bool {
		for k := range parseMetrics(httpGet(t, url)) {
			name, _, _ := strings.Cut(k, "{")
			names[name] = true
		}
		return names["bhiv_sink_delivery_duration_seconds_bucket"] && names["bhiv_failure_records_total"]
	})
	return names
}
