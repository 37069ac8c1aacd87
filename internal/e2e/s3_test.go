package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hackaverse/bhiv/internal/s3test"
	"github.com/hackaverse/bhiv/sinks"
)

// useS3 starts an S3-compatible server in this process (gofakes3 over
// loopback, with bucket name), and makes the stack's bucket the S3 bucket
// s3://<name>/<prefix> on it: the consumers started afterwards write there,
// and the accounting reads it.
func (s *stack) useS3(name, prefix string) *s3test.Server {
	s.t.Helper()
	srv := s3test.Start(s.t, name)
	cfg := sinks.S3Config{Bucket: name, Prefix: prefix, Endpoint: srv.URL, Region: s3test.Region, Lookup: sinks.S3LookupPath,
		AccessKeyID: s3test.AccessKey, SecretAccessKey: s3test.SecretKey}
	r, err := sinks.NewS3Reader(context.Background(), cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { r.Close() })
	s.bucket = r
	s.env = append(s.env, "BHIV_BUCKET_URL=s3://"+name+"/"+prefix, "BHIV_S3_ENDPOINT="+srv.URL, "BHIV_S3_PATH_STYLE=true",
		"AWS_REGION="+s3test.Region, "AWS_ACCESS_KEY_ID="+s3test.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3test.SecretKey)
	return srv
}

// consumerIn starts one more `bhiv consume` in its own working directory
// cwd, as on a machine of its own: its relative paths (./data/bucket,
// ./data/failed.log) are its own.
func (s *stack) consumerIn(cwd string, extraEnv ...string) *proc {
	s.t.Helper()
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		s.t.Fatal(err)
	}
	env := append(append([]string{}, s.env...), "BHIV_BUCKET_DIR=./data/bucket", "BHIV_FAILED_LOG=./data/failed.log")
	p := startIn(s.t, s.dir, cwd, fmt.Sprintf("consumer%d", len(s.consumers)), append(env, extraEnv...), bhivBin, "consume")
	s.consumers = append(s.consumers, p)
	return p
}

// gatherFailureLogs copies the failure logs of the consumers' working
// directories, one after the other, to the stack's failure log, which the
// accounting reads: what an operator does with the logs of several
// machines.
func (s *stack) gatherFailureLogs(cwds ...string) {
	s.t.Helper()
	out, err := os.OpenFile(filepath.Join(s.dir, "failed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	for _, cwd := range cwds {
		files, _ := filepath.Glob(filepath.Join(cwd, "data", "failed.log*"))
		for _, f := range files {
			if filepath.Ext(f) == ".lock" {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				s.t.Fatal(err)
			}
			if _, err := out.Write(b); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

// 11. Replicas on two machines share one S3 bucket: two consumers, each in
// its own working directory (nothing on disk shared), write the bucket to
// one S3-compatible server (gofakes3 in this test process, over loopback);
// one is killed with SIGKILL mid-run, and the events it held are
// redelivered to the other, which finds some already stored. Nothing is
// lost: every event is in the S3 bucket once, at Core, and no failure
// record was needed.
func TestS3BucketTwoMachinesOneKilled(t *testing.T) {
	s := newStack(t, 1)
	srv := s.useS3("bhiv-e2e", "events")
	cwdA, cwdB := filepath.Join(s.dir, "machine-a"), filepath.Join(s.dir, "machine-b")
	a := s.consumerIn(cwdA)
	s.consumerIn(cwdB)
	n := size(3000, 20000)
	_, done := s.publish(n, size(800.0, 2000.0))
	time.Sleep(2 * time.Second)
	a.kill(syscall.SIGKILL)
	<-done
	s.drained(size(40*time.Second, 3*time.Minute))
	// Stop the survivor before reading its failure log.
	if err := s.consumers[1].kill(syscall.SIGTERM); err != nil {
		t.Errorf("consumer1: %v", err)
	}
	s.gatherFailureLogs(cwdA, cwdB)
	r := s.account("11-s3-bucket-two-machines-one-killed", n)

	keys, err := srv.Keys("bhiv-e2e", "events/")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("S3: %d objects, %d PUTs, %d requests", len(keys), srv.Puts(), srv.Requests())
	if r.InBucket != n || r.FailureRecords != 0 {
		t.Errorf("%d of %d in the S3 bucket, %d failure records %v", r.InBucket, n, r.FailureRecords, r.ByClass)
	}
	// Each consumer really wrote to S3: no bucket directory on either
	// machine.
	for _, cwd := range []string{cwdA, cwdB} {
		if _, err := os.Stat(filepath.Join(cwd, "data", "bucket")); !os.IsNotExist(err) {
			t.Errorf("%s has a local bucket: %v", cwd, err)
		}
	}
	s.workSplit(s.consumers[1], n)
}
