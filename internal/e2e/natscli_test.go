package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hackaverse/bhiv/internal/audit"
)

// natsCLIVersion is the NATS CLI the tests inject events with.
const natsCLIVersion = "v0.5.0"

// natsCLI returns the path of the NATS CLI v0.5.0: on PATH or in GOBIN when
// it is that version, else built once into the user cache (about 1.5 min).
func natsCLI(t *testing.T) string {
	t.Helper()
	want := strings.TrimPrefix(natsCLIVersion, "v")
	var candidates []string
	if p, err := exec.LookPath("nats"); err == nil {
		candidates = append(candidates, p)
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	candidates = append(candidates, filepath.Join(strings.TrimSpace(string(gopath)), "bin", "nats"))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	gobin := filepath.Join(cache, "bhiv-test", "natscli-"+natsCLIVersion)
	candidates = append(candidates, filepath.Join(gobin, "nats"))
	for _, p := range candidates {
		if out, err := exec.Command(p, "--version").CombinedOutput(); err == nil && strings.Contains(string(out), want) {
			return p
		}
	}
	t.Logf("building the NATS CLI %s into %s", natsCLIVersion, gobin)
	cmd := exec.Command("go", "install", "github.com/nats-io/natscli/nats@"+natsCLIVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install natscli: %v\n%s", err, out)
	}
	return filepath.Join(gobin, "nats")
}

// TestNATSCLI injects events with the real NATS CLI in every way a person
// would, and checks each reaches Core and the bucket.
func TestNATSCLI(t *testing.T) {
	cli := natsCLI(t)
	s := newStack(t, 1)
	s.consumer()
	home := t.TempDir()
	nats := func(args ...string) {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"-s", s.natsURL}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nats %v: %v\n%s", args, err, out)
		}
	}
	nats("pub", "bhiv.events.execution", `{"team_id":"cli_bare","action":"analyze_data"}`)
	nats("pub", "-J", "bhiv.events.reward", `{"team_id":"cli_js","reward":5,"reason":"with -J"}`)
	for i := 0; i < 2; i++ { // the same Nats-Msg-Id twice: stored once, once at Core
		nats("pub", "-J", "-H", "Nats-Msg-Id:cli-dup-1", "bhiv.events.execution", `{"team_id":"cli_dup","action":"twice"}`)
	}
	nats("pub", "--count", "1000", "bhiv.events.execution", `{"team_id":"team_{{Count}}","action":"load","n":{{Count}}}`)
	nats("pub", "-J", "-H", "ce-specversion:1.0", "-H", "ce-id:cli-ce-1", "-H", "ce-type:bhiv.execution", "-H", "ce-source:nats-cli",
		"bhiv.events.execution", `{"team_id":"cli_ce","action":"binary mode"}`)

	s.drained(2 * time.Minute)
	core, err := audit.ReadCoreRecord(filepath.Join(s.dir, "core.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	const want = 1 + 1 + 1 + 1000 + 1
	if len(core) != want {
		t.Errorf("Core got %d distinct events, want %d", len(core), want)
	}
	for _, id := range []string{"cli-dup-1", "cli-ce-1"} {
		if core[id] != 1 {
			t.Errorf("Core got %s %d times, want once", id, core[id])
		}
		if files, _ := filepath.Glob(filepath.Join(s.dir, "bucket", "execution", "*", id+".json")); len(files) != 1 {
			t.Errorf("%s in the bucket: %v", id, files)
		}
	}
	b, _ := os.ReadFile(filepath.Join(s.dir, "failed.log"))
	if len(b) != 0 {
		t.Errorf("failure log not empty:\n%s", b)
	}
	r := s.account("nats-cli", want)
	if r.Events != want || r.InBucket != want {
		t.Errorf("events %d, in bucket %d, want %d", r.Events, r.InBucket, want)
	}
}
