package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/s3test"
	"github.com/hackaverse/bhiv/sinks"
)

// TestComposeTopology runs the docker-compose.yml topology as processes —
// nats-server, `bhiv core-stub`, `bhiv consume` and `bhiv ingest` with the
// commands and environment the compose file gives them (.env from
// .env.example), host names mapped to 127.0.0.1 ports — publishes with the
// Go publisher and over HTTP through ingest (every form, one request sent
// twice), and accounts for every event. With the s3 profile, the set-up of
// the compose file's header (BHIV_BUCKET_URL=s3://bhiv/events), MinIO is
// played by an in-process S3 server holding the bucket minio-init makes.
func TestComposeTopology(t *testing.T) {
	t.Run("files", func(t *testing.T) { composeTopology(t, "") })
	t.Run("s3", func(t *testing.T) { composeTopology(t, "s3://bhiv/events") })
}

func composeTopology(t *testing.T, bucketURL string) {
	root := filepath.Join("..", "..")
	dir := t.TempDir()
	for src, dst := range map[string]string{"docker-compose.yml": "docker-compose.yml", ".env.example": ".env"} {
		b, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		if dst == ".env" && bucketURL != "" {
			b = regexp.MustCompile(`(?m)^BHIV_BUCKET_URL=.*$`).ReplaceAll(b, []byte("BHIV_BUCKET_URL="+bucketURL))
		}
		os.WriteFile(filepath.Join(dir, dst), b, 0o644)
	}
	var profiles []string
	if bucketURL != "" {
		profiles = []string{"s3"}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")}, cli.WithWorkingDirectory(dir), cli.WithEnvFiles(), cli.WithDotEnv, cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, 1) // nats-server as a process; its own core stub is replaced below
	s.stub.kill(9)
	stubPort, adminPort, ingestPort := freePort(t), freePort(t), freePort(t)
	natsHostPort := strings.TrimPrefix(s.natsURL, "nats://")
	s3Addr := "minio:9000"
	if bucketURL != "" {
		// MinIO, with the bucket minio-init makes and the credentials the
		// compose file gives (the in-process server takes any).
		initCmd := p.Services["minio-init"].Command // mb --ignore-existing <alias>/<bucket>
		_, bucket, _ := strings.Cut(initCmd[len(initCmd)-1], "/")
		srv := s3test.Start(t, bucket)
		s3Addr = srv.Addr()
		r, err := sinks.NewS3Reader(context.Background(), sinks.S3Config{Bucket: bucket, Prefix: "events", Endpoint: srv.URL,
			Region: s3test.Region, Lookup: sinks.S3LookupPath, AccessKeyID: s3test.AccessKey, SecretAccessKey: s3test.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		s.bucket = r
	}
	mapHosts := func(v string) string {
		v = strings.ReplaceAll(v, "minio:9000", s3Addr)
		v = strings.ReplaceAll(v, "nats:4222", natsHostPort)
		v = strings.ReplaceAll(v, "core-stub:9000", fmt.Sprintf("127.0.0.1:%d", stubPort))
		v = strings.ReplaceAll(v, "0.0.0.0:9000", fmt.Sprintf("127.0.0.1:%d", stubPort))
		v = strings.ReplaceAll(v, "0.0.0.0:8081", fmt.Sprintf("127.0.0.1:%d", adminPort))
		v = strings.ReplaceAll(v, "127.0.0.1:8081", fmt.Sprintf("127.0.0.1:%d", adminPort))
		v = strings.ReplaceAll(v, "0.0.0.0:8082", fmt.Sprintf("127.0.0.1:%d", ingestPort))
		v = strings.ReplaceAll(v, "127.0.0.1:8082", fmt.Sprintf("127.0.0.1:%d", ingestPort))
		return strings.ReplaceAll(v, "/data/", s.dir+"/data/")
	}
	envOf := func(service string) []string {
		var env []string
		for k, v := range p.Services[service].Environment {
			if v != nil {
				env = append(env, k+"="+mapHosts(*v))
			}
		}
		return append(env, "LOG_FORMAT=json")
	}
	stubSvc, consSvc := p.Services["core-stub"], p.Services["consumer"]
	stub := start(t, s.dir, "compose-core-stub", envOf("core-stub"), bhivBin, append(stubSvc.Command, "--record", filepath.Join(s.dir, "core.jsonl"))...)
	defer stub.dump()
	waitFor(t, 10*time.Second, "core stub", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/bhiv/core/stats", stubPort))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	cons := start(t, s.dir, "compose-consumer", envOf("consumer"), bhivBin, consSvc.Command...)
	s.consumers = append(s.consumers, cons)
	// The compose health check of the consumer passes once it is ready.
	waitFor(t, 20*time.Second, "consumer healthy", func() bool {
		hc := consSvc.HealthCheck.Test // ["CMD", "/bhiv", "healthcheck", URL]
		return runCmd(bhivBin, append(hc[2:len(hc)-1], mapHosts(hc[len(hc)-1]))...) == nil
	})
	ingSvc := p.Services["ingest"]
	ing := start(t, s.dir, "compose-ingest", envOf("ingest"), bhivBin, ingSvc.Command...)
	defer ing.dump()
	waitFor(t, 20*time.Second, "ingest healthy", func() bool {
		hc := ingSvc.HealthCheck.Test
		return runCmd(bhivBin, append(hc[2:len(hc)-1], mapHosts(hc[len(hc)-1]))...) == nil
	})
	n := 500
	_, done := s.publish(n, 0)
	n += s.ingestAll(fmt.Sprintf("http://127.0.0.1:%d", ingestPort))
	<-done
	s.drained(time.Minute)
	if _, err := os.Stat(filepath.Join(s.dir, "data", "bucket")); (err == nil) != (bucketURL == "") {
		t.Errorf("the bucket is not where compose puts it (%q): %v", bucketURL, err)
	}
	// account() reads the bucket and failure log at the stack's default
	// paths; point it at compose's.
	os.Rename(filepath.Join(s.dir, "data", "bucket"), filepath.Join(s.dir, "bucket"))
	os.Rename(filepath.Join(s.dir, "data", "failed_core_sends.log"), filepath.Join(s.dir, "failed.log"))
	name := "compose-topology"
	if bucketURL != "" {
		name += "-s3"
	}
	r := s.account(name, n)
	if r.InBucket != n {
		t.Errorf("%d of %d events in the bucket", r.InBucket, n)
	}
}

// ingestAll sends events to bhiv ingest at base in every form — structured
// to /events/{kind}, binary to the old Core path, a batch — sends one
// request twice (stored once), expects each event, and returns how many it
// sent.
func (s *stack) ingestAll(base string) int {
	s.t.Helper()
	post := func(path, ct string, body []byte, headers map[string]string) []string {
		req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ct)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Fatalf("ingest: %v", err)
		}
		defer resp.Body.Close()
		var a struct {
			IDs []string `json:"ids"`
		}
		json.NewDecoder(resp.Body).Decode(&a)
		if resp.StatusCode != http.StatusAccepted {
			s.t.Fatalf("ingest POST %s: %s", path, resp.Status)
		}
		return a.IDs
	}
	var batch []bhiv.Event
	sent := 0
	for i := 0; i < 30; i++ {
		kind, data := bhiv.KindExecution, any(bhiv.Execution{TeamID: fmt.Sprintf("team_%d", i%5), Action: "ingest", DurationMS: int64(i)})
		if i%2 == 1 {
			kind, data = bhiv.KindReward, bhiv.Reward{TeamID: fmt.Sprintf("team_%d", i%5), Reward: float64(i)}
		}
		ev, err := bhiv.New(kind, "e2e-ingest", "", data)
		if err != nil {
			s.t.Fatal(err)
		}
		s.expect(ev)
		sent++
		switch i % 3 {
		case 0:
			body, _ := ev.MarshalJSON()
			post("/events/"+string(kind), "application/cloudevents+json", body, nil)
		case 1:
			post("/bhiv/core", "application/json", ev.Data, map[string]string{
				"ce-specversion": "1.0", "ce-id": ev.ID, "ce-type": ev.Type, "ce-source": "e2e%20ingest",
				"ce-time": ev.Time.Format(time.RFC3339Nano),
			})
		default:
			batch = append(batch, ev)
		}
	}
	body, _ := json.Marshal(batch)
	post("/bhiv/core", "application/cloudevents-batch+json", body, nil)
	if ids := post("/bhiv/core", "application/cloudevents-batch+json", body, nil); len(ids) != len(batch) {
		s.t.Fatalf("the batch sent again: %d ids, want %d", len(ids), len(batch))
	}
	return sent
}
