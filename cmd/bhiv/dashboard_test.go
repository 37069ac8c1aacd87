package main

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/hackaverse/bhiv/internal/natstest"
)

// dashboardMetrics are the metrics the dashboard must show: throughput,
// ack decisions, errors by sink, breaker, intake, backlog, in flight,
// latency, batch size, retention and Core's concurrency limit.
var dashboardMetrics = []string{
	"bhiv_events_received_total",
	"bhiv_events_acked_total",
	"bhiv_events_naked_total",
	"bhiv_events_terminated_total",
	"bhiv_sink_deliveries_total",
	"bhiv_sink_delivery_duration_seconds",
	"bhiv_failure_records_total",
	"bhiv_intake_paused",
	"bhiv_events_in_flight",
	"bhiv_consumer_pending",
	"bhiv_consumer_ack_pending",
	"bhiv_sink_attempts_total",
	"bhiv_core_breaker_state",
	"bhiv_core_batch_size",
	"bhiv_sink_queued",
	"bhiv_sink_deliveries_running",
	"bhiv_consumer_oldest_unacked_age_seconds",
	"bhiv_stream_max_age_seconds",
	"bhiv_stream_bytes",
	"bhiv_stream_max_bytes",
	"bhiv_core_concurrency_limit",
	"bhiv_core_requests_in_flight",
	"bhiv_core_requests_queued",
}

// grafanaPanel is the part of a Grafana panel the tests read. Rows hold
// their panels in Panels.
type grafanaPanel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

// dashboardQuery is one target of one panel.
type dashboardQuery struct {
	panel, expr, legend string
}

// readDashboard parses deploy/grafana/dashboards/bhiv.json and returns its
// uid and queries, rows included.
func readDashboard(t *testing.T) (uid string, queries []dashboardQuery, panels []grafanaPanel) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "bhiv.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string         `json:"uid"`
		Title  string         `json:"title"`
		Panels []grafanaPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			panels = append(panels, p)
			for _, tg := range p.Targets {
				queries = append(queries, dashboardQuery{p.Title, tg.Expr, tg.LegendFormat})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	return dash.UID, queries, panels
}

var (
	metricRE   = regexp.MustCompile(`\b((?:bhiv|process|go)_[a-z0-9_]+)\b`)
	groupingRE = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	selectorRE = regexp.MustCompile(`\{([^{}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	legendRE   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	aggRE      = regexp.MustCompile(`\b(?:sum|max|min|avg|count)\s*\(`)
)

// queryLabels returns the labels an expression groups by or matches on.
func queryLabels(expr string) (grouping, matched []string) {
	for _, m := range groupingRE.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				grouping = append(grouping, l)
			}
		}
	}
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		for _, mm := range matcherRE.FindAllStringSubmatch(m[1], -1) {
			matched = append(matched, mm[1])
		}
	}
	return grouping, matched
}

func TestDashboardQueryLabels(t *testing.T) {
	g, m := queryLabels(`histogram_quantile(0.99, sum by (sink, le) (rate(bhiv_x_bucket{outcome!="success", kind=~"e.*"}[5m])))`)
	if !slices.Equal(g, []string{"sink", "le"}) || !slices.Equal(m, []string{"outcome", "kind"}) {
		t.Errorf("grouping %v, matched %v", g, m)
	}
}

// TestDashboardMetricsExist checks the Grafana dashboard against what a real
// `bhiv consume` run exports on /metrics: every metric a panel queries
// exists, every label it groups by, matches on or shows in a legend exists
// on that metric (and survives the aggregation), and every metric the
// dashboard is meant to show is queried.
func TestDashboardMetricsExist(t *testing.T) {
	_, queries, _ := readDashboard(t)
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	exported := scrapeRealRun(t)
	queried := map[string]bool{}
	for _, q := range queries {
		metrics := metricRE.FindAllString(q.expr, -1)
		if len(metrics) == 0 {
			t.Errorf("panel %q: %q queries no bhiv, go or process metric", q.panel, q.expr)
			continue
		}
		var labels map[string]bool
		for _, m := range metrics {
			queried[m] = true
			if ls, ok := exported[m]; !ok {
				t.Errorf("panel %q queries %s, which bhiv does not export", q.panel, m)
			} else if labels == nil {
				labels = maps.Clone(ls)
			} else {
				for l := range ls {
					labels[l] = true
				}
			}
		}
		grouping, matched := queryLabels(q.expr)
		for _, l := range append(slices.Clone(grouping), matched...) {
			if labels != nil && !labels[l] {
				t.Errorf("panel %q: label %q is not on %v (it has %v)", q.panel, l, metrics, slices.Sorted(maps.Keys(labels)))
			}
		}
		// A legend can only show labels the query keeps.
		for _, m := range legendRE.FindAllStringSubmatch(q.legend, -1) {
			l := m[1]
			switch {
			case len(grouping) > 0 && !slices.Contains(grouping, l):
				t.Errorf("panel %q: legend {{%s}} but the query groups by %v only", q.panel, l, grouping)
			case len(grouping) == 0 && aggRE.MatchString(q.expr):
				t.Errorf("panel %q: legend {{%s}} but %q aggregates every label away", q.panel, l, q.expr)
			case labels != nil && !labels[l]:
				t.Errorf("panel %q: legend {{%s}} is not a label of %v", q.panel, l, metrics)
			}
		}
	}
	for _, want := range dashboardMetrics {
		if !queried[want] && !queried[want+"_bucket"] && !queried[want+"_sum"] && !queried[want+"_count"] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// TestDashboardProvisioning checks that Grafana, as docker-compose.yml
// provisions it, finds the dashboard and the Prometheus data source its
// panels name, and that Prometheus scrapes the consumer's admin server.
func TestDashboardProvisioning(t *testing.T) {
	root := filepath.Join("..", "..")
	uid, _, panels := readDashboard(t)
	if uid == "" {
		t.Error("the dashboard has no uid (links to it would break on re-import)")
	}
	var ds struct {
		Datasources []struct {
			Name, UID, Type, URL string
		}
	}
	readYAML(t, filepath.Join(root, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml"), &ds)
	uids := map[string]string{}
	for _, d := range ds.Datasources {
		uids[d.UID] = d.Type
	}
	for _, p := range panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil {
			t.Errorf("panel %q names no data source", p.Title)
			continue
		}
		if typ, ok := uids[p.Datasource.UID]; !ok || typ != p.Datasource.Type {
			t.Errorf("panel %q uses data source %+v; provisioned: %v", p.Title, *p.Datasource, uids)
		}
	}

	proj := loadCompose(t, "monitoring")
	var prov struct {
		Providers []struct {
			Name, Type string
			Options    struct{ Path string }
		}
	}
	readYAML(t, filepath.Join(root, "deploy", "grafana", "provisioning", "dashboards", "bhiv.yml"), &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers: %+v", prov.Providers)
	}
	// The provider path is where compose mounts deploy/grafana/dashboards,
	// and the data source URL is the prometheus service.
	mounts := map[string]string{}
	for _, v := range proj.Services["grafana"].Volumes {
		mounts[v.Target] = v.Source
	}
	src, ok := mounts[prov.Providers[0].Options.Path]
	if !ok || filepath.Base(src) != "dashboards" || filepath.Base(filepath.Dir(src)) != "grafana" {
		t.Errorf("grafana reads dashboards from %s, but compose mounts there %q (mounts %v)", prov.Providers[0].Options.Path, src, mounts)
	}
	if src, ok := mounts["/etc/grafana/provisioning"]; !ok || filepath.Base(src) != "provisioning" {
		t.Errorf("provisioning is not mounted on /etc/grafana/provisioning: %v", mounts)
	}
	if len(ds.Datasources) == 0 || !strings.Contains(ds.Datasources[0].URL, "prometheus:9090") {
		t.Errorf("data source does not point at the prometheus service: %+v", ds.Datasources)
	}

	var prom struct {
		ScrapeConfigs []struct {
			JobName       string                       `yaml:"job_name"`
			MetricsPath   string                       `yaml:"metrics_path"`
			StaticConfigs []struct{ Targets []string } `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(root, "deploy", "prometheus", "prometheus.yml"), &prom)
	admin := proj.Services["consumer"].Environment["BHIV_ADMIN_ADDR"]
	if admin == nil {
		t.Fatal("consumer has no BHIV_ADMIN_ADDR")
	}
	_, port, _ := strings.Cut(*admin, ":")
	want := "consumer:" + port
	found := false
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, want) && (sc.MetricsPath == "" || sc.MetricsPath == "/metrics") {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("prometheus does not scrape %s/metrics: %+v", want, prom.ScrapeConfigs)
	}
	for _, v := range proj.Services["prometheus"].Volumes {
		if v.Target == "/etc/prometheus/prometheus.yml" && filepath.Base(v.Source) == "prometheus.yml" {
			return
		}
	}
	t.Errorf("prometheus.yml is not mounted where prometheus reads it: %+v", proj.Services["prometheus"].Volumes)
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// scrapeRealRun runs `bhiv consume` with Core batching on, publishes a
// valid event and an invalid message, and returns the metric names its
// /metrics exports (histogram series included) with their label names, once
// every metric the dashboard is meant to show is there.
func scrapeRealRun(t *testing.T) map[string]map[string]bool {
	t.Helper()
	ns := natstest.Start(t)
	dir := t.TempDir()
	core := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	env := map[string]string{
		"NATS_URL": ns.URL(), "BHIV_CORE_URL": core + "/bhiv/core", "BHIV_BUCKET_DIR": filepath.Join(dir, "b"),
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
	if err := nc.Publish("bhiv.events.reward", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	url := waitForLogField(t, &logs, "admin server listening", "metrics")
	names := map[string]map[string]bool{}
	missing := func() (out []string) {
		for _, m := range dashboardMetrics {
			if names[m] == nil && names[m+"_bucket"] == nil {
				out = append(out, m)
			}
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, text := get(t, url)
		for series := range parseMetrics(text) {
			name, labels, _ := strings.Cut(series, "{")
			if names[name] == nil {
				names[name] = map[string]bool{}
			}
			for _, m := range matcherRE.FindAllStringSubmatch(labels, -1) {
				names[name][m[1]] = true
			}
		}
		if len(missing()) == 0 && names["bhiv_failure_records_total"]["class"] {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s, /metrics still lacks %v\n%s", missing(), logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
