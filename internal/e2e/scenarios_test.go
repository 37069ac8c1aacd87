package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/hackaverse/bhiv/sinks"
)

// 1. Steady load with Core failing 20% with 503 and 200 ms latency on 10%.
func TestSteadyLoadWithCoreFaults(t *testing.T) {
	s := newStack(t, 1, "--fail-rate", "0.2", "--status", "503", "--latency", "200ms", "--latency-rate", "0.1")
	s.consumer()
	n := size(2000, 20000)
	_, done := s.publish(n, 0)
	<-done
	s.drained(3 * time.Minute)
	st := s.stubStats()
	s.account("1-steady-20pct-503", n)
	t.Logf("core stub: %d requests, %d injected failures", st.Requests, st.Injected)
	if st.Injected < int64(n/10) {
		t.Errorf("only %d injected failures in %d requests: the fault did not bite", st.Injected, st.Requests)
	}
}

// 2. Core answers 429 with Retry-After for a while, then recovers.
func TestCore429RetryAfter(t *testing.T) {
	s := newStack(t, 1)
	s.consumer()
	s.setFaults(`{"fail_rate":1,"status":429,"retry_after":"1"}`)
	n := size(1000, 5000)
	_, done := s.publish(n, 400)
	time.Sleep(5 * time.Second)
	s.setFaults(`{"fail_rate":0}`)
	<-done
	s.drained(2 * time.Minute)
	st := s.stubStats()
	r := s.account("2-core-429-retry-after", n)
	t.Logf("core stub: %d requests, %d answered 429", st.Requests, st.Injected)
	if st.Injected == 0 {
		t.Error("no request was answered 429: the fault did not bite")
	}
	if r.FailureRecords > 64 {
		t.Errorf("%d failure records: a 429 phase should hold events, not log them", r.FailureRecords)
	}
}

// 3. Core down (connection refused) mid-run, then back: nothing lost and the
// failure log (nearly) empty, because the open breaker holds events in
// JetStream.
func TestCoreDownThenBack(t *testing.T) {
	s := newStack(t, 1)
	s.consumer()
	// Long: a steady 200 events/s for 80 s with Core down for 60 s of it.
	n := size(2000, 16000)
	_, done := s.publish(n, 200)
	time.Sleep(size(2*time.Second, 10*time.Second))
	s.stub.kill(syscall.SIGKILL)
	time.Sleep(size(5*time.Second, 60*time.Second))
	s.stub.restart()
	<-done
	s.drained(3 * time.Minute)
	r := s.account("3-core-down", n)
	if b, _ := os.ReadFile(s.consumers[0].log); !strings.Contains(string(b), "intake paused") {
		t.Error("the consumer never paused intake: the outage did not bite")
	}
	if r.FailureRecords > 64 {
		t.Errorf("%d failure records for a Core outage: want at most BHIV_CONCURRENCY (64), aim for 0", r.FailureRecords)
	}
}

// 4. kill -9 of the consumer 5 times during the run, restarting it each time.
func TestConsumerKilled(t *testing.T) {
	s := newStack(t, 1)
	c := s.consumer()
	n := size(3000, 20000)
	_, done := s.publish(n, size(600.0, 2000.0))
	for i := 0; i < 5; i++ {
		time.Sleep(800 * time.Millisecond)
		c.kill(syscall.SIGKILL)
		c.restart()
	}
	<-done
	s.drained(3 * time.Minute)
	s.account("4-consumer-kill-9-x5", n)
}

// 5. nats-server killed and restarted twice mid-run (the file store persists).
func TestNATSServerKilled(t *testing.T) {
	s := newStack(t, 1)
	s.consumer()
	n := size(2000, 20000)
	_, done := s.publish(n, size(400.0, 2000.0))
	for i := 0; i < 2; i++ {
		time.Sleep(1500 * time.Millisecond)
		s.nats[0].kill(syscall.SIGKILL)
		time.Sleep(time.Second)
		s.nats[0].restart()
	}
	<-done
	s.drained(3 * time.Minute)
	s.account("5-nats-server-kill-9-x2", n)
}

// 6. The bucket unwritable for a while, then writable. Tests run as root,
// which chmod does not stop: the bucket directory is swapped for a plain
// file, so every write fails with ENOTDIR, then swapped back.
func TestBucketUnwritable(t *testing.T) {
	s := newStack(t, 1)
	s.consumer()
	n := size(1500, 10000)
	_, done := s.publish(n, 300)
	time.Sleep(1500 * time.Millisecond)
	// Swap the directory and a plain file atomically (renameat2 with
	// RENAME_EXCHANGE), so that the running consumer never sees the path
	// missing and recreates the directory in between.
	bucket := filepath.Join(s.dir, "bucket")
	swap := func() {
		if err := unix.Renameat2(unix.AT_FDCWD, bucket+".swap", unix.AT_FDCWD, bucket, unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("swap the bucket: %v", err)
		}
	}
	if err := os.WriteFile(bucket+".swap", []byte("not a directory"), 0o640); err != nil {
		t.Fatal(err)
	}
	swap() // the bucket is now a file
	time.Sleep(size(3*time.Second, 10*time.Second))
	swap() // and a directory again
	<-done
	s.drained(3 * time.Minute)
	r := s.account("6-bucket-unwritable", n)
	// The outage bit (the consumer saw the bucket down) and was held in
	// JetStream, as a Core outage is: every event is in the bucket, none in
	// the failure log.
	if b, _ := os.ReadFile(s.consumers[0].log); !strings.Contains(string(b), "bucket: unavailable") {
		t.Error("the consumer never saw the bucket unavailable: the outage did not bite")
	}
	if r.InBucket != n || r.FailureRecords != 0 {
		t.Errorf("%d of %d in the bucket, %d failure records %v: the outage was not held in JetStream",
			r.InBucket, n, r.FailureRecords, r.ByClass)
	}
}

// 7. Hostile inputs mixed into the stream: every one accounted for, the
// consumer never crashes, memory stays bounded.
func TestHostileInputs(t *testing.T) {
	s := newStack(t, 1)
	c := s.consumer()
	nc, _ := s.js()
	n := size(500, 5000)
	_, done := s.publish(n, 0)
	hostile := size(1000, 1000)
	big := strings.Repeat("x", 5<<20)
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	tp := time.Now()
	for i := 0; i < hostile; i++ {
		subj := "bhiv.events.execution"
		msg := nats.NewMsg(subj)
		switch i % 10 {
		case 0:
			b := make([]byte, 200)
			rand.Read(b)
			msg.Data = b
		case 1:
			msg.Data = []byte(`{"team_id":"t1","action":"trunc`)
		case 2:
			if i%100 == 2 { // 5 MiB bodies, a few of them
				msg.Data = []byte(`{"team_id":"t1","pad":"` + big + `"}`)
			} else { // over the consumer's size limit
				msg.Data = []byte(`{"team_id":"t1","pad":"` + big[:1<<20+1000] + `"}`)
			}
		case 3:
			msg.Data = []byte(deep)
		case 4:
			msg.Data = []byte(`{"team_id":"t1","action":"a"}`)
			msg.Header.Set("Nats-Msg-Id", "../../etc/passwd-"+strconv.Itoa(i))
		case 5:
			msg.Data = []byte(`{"specversion":"1.0","id":"../../../tmp/x` + strconv.Itoa(i) + `","source":"s","type":"bhiv.execution","data":{"team_id":"t"}}`)
		case 6:
			msg.Data = []byte("{\"team_id\":\"t\x00\x01\x1b[31m\",\"action\":\"\x07\"}")
		case 7:
			msg.Data = []byte(fmt.Sprintf(`{"specversion":"1.0","id":"dup-%d","source":"s","type":"bhiv.execution","data":{"team_id":"t","variant":%d}}`, i%30, i))
		case 8:
			msg.Subject = "bhiv.events.bogus"
			msg.Data = []byte(`{"team_id":"t1"}`)
		case 9:
			msg.Data = []byte(`[{"team_id":"t1"}]`)
		}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatalf("publish hostile %d: %v", i, err)
		}
	}
	nc.Flush()
	t.Logf("%d hostile inputs published in %s", hostile, time.Since(tp).Round(time.Millisecond))
	t0 := time.Now()
	<-done
	t.Logf("hostile inputs published; valid events published %s later", time.Since(t0).Round(time.Millisecond))
	s.drained(3 * time.Minute)
	t.Logf("drained %s after publishing", time.Since(t0).Round(time.Millisecond))
	if !c.running() {
		t.Fatal("the consumer crashed on hostile input")
	}
	hwm := vmHWM(t, c.pid())
	t.Logf("consumer peak RSS %d MiB", hwm>>20)
	if hwm > 1<<30 {
		t.Errorf("consumer peak RSS %d MiB: memory is not bounded", hwm>>20)
	}
	r := s.account("7-hostile-inputs", n+hostile)
	t.Logf("accounted %s after publishing", time.Since(t0).Round(time.Millisecond))
	if r.Invalid < hostile/2 {
		t.Errorf("only %d invalid inputs seen", r.Invalid)
	}
}

// 8. Two consumer processes, one killed mid-run.
func TestTwoConsumersOneKilled(t *testing.T) {
	s := newStack(t, 1)
	a := s.consumer()
	s.consumer()
	n := size(3000, 20000)
	_, done := s.publish(n, size(800.0, 2000.0))
	time.Sleep(2 * time.Second)
	a.kill(syscall.SIGKILL)
	<-done
	s.drained(size(40*time.Second, 3*time.Minute))
	s.account("8-two-consumers-one-killed", n)
	s.workSplit(s.consumers[1], n)
}

// workSplit checks that the work was shared: the surviving consumer p did
// not ack all n events itself, nor none.
func (s *stack) workSplit(p *proc, n int) {
	s.t.Helper()
	acked := stoppedAcked(s.t, p)
	s.t.Logf("the surviving consumer acked %d of %d", acked, n)
	if acked <= 0 || acked >= n {
		s.t.Errorf("the surviving consumer acked %d of %d: the work was not split", acked, n)
	}
}

// 9. A 3-node JetStream cluster, stream with 3 replicas, two consumers; the
// stream leader killed mid-run.
func TestClusterLeaderKilled(t *testing.T) {
	s := newStack(t, 3)
	s.consumer()
	s.consumer()
	n := size(2000, 20000)
	_, done := s.publish(n, size(400.0, 2000.0))
	time.Sleep(2 * time.Second)
	_, js := s.js()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := js.Stream(ctx, "BHIV")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil {
		t.Fatalf("stream replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}
	leader := info.Cluster.Leader
	var killed bool
	for i, p := range s.nats {
		if leader == fmt.Sprintf("n%d", i) {
			t.Logf("killing stream leader %s", leader)
			p.kill(syscall.SIGKILL)
			killed = true
		}
	}
	if !killed {
		t.Fatalf("stream leader %q not found", leader)
	}
	<-done
	s.drained(3 * time.Minute)
	s.account("9-cluster-leader-killed", n)
}

// 10. Graceful stop under load: SIGTERM, exit 0 within the shutdown timeout,
// and nothing waits for AckWait afterwards.
func TestGracefulStopUnderLoad(t *testing.T) {
	s := newStack(t, 1, "--latency", "300ms")
	c := s.consumer("BHIV_ACK_WAIT=60s")
	n := size(1500, 10000)
	// Published over 3 s (15 s long): the signal comes while events are
	// arriving and in flight, however fast the consumer is.
	_, done := s.publish(n, float64(n)/size(3.0, 15.0))
	time.Sleep(2 * time.Second)
	s.sigterm(c, 5*time.Second)
	if held := logInt(t, c, "consumer stopping", "in_flight"); held <= 0 {
		t.Errorf("%d events in flight at SIGTERM: the scenario did not stop the consumer under load", held)
	}
	<-done
	// A new consumer gets everything at once: nothing waits for the 60 s AckWait.
	restart := time.Now()
	c2 := s.consumer("BHIV_ACK_WAIT=60s")
	waitFor(t, 10*time.Second, "the new consumer started", func() bool { return logInt(t, c2, "consumer started", "max_in_flight") > 0 })
	s.drained(50 * time.Second)
	t.Logf("a new consumer drained the rest in %s (AckWait 60s)", time.Since(restart))
	s.account("10-sigterm-under-load", n)
}

// 10b. SIGTERM while Core hangs: the events in flight cannot finish within
// the shutdown timeout, so they must be given back (Nak), not left to AckWait;
// the process still exits 0 within the timeout.
func TestGracefulStopCoreHanging(t *testing.T) {
	s := newStack(t, 1, "--latency", "120s")
	c := s.consumer("BHIV_ACK_WAIT=60s", "BHIV_CORE_TIMEOUT=100s", "BHIV_SHUTDOWN_TIMEOUT=3s")
	n := size(500, 2000)
	_, done := s.publish(n, 0)
	<-done
	// Wait until the consumer holds a full set of events that hang at Core.
	_, js := s.js()
	waitFor(t, 20*time.Second, "events in flight at a hanging Core", func() bool {
		info := s.consumerInfo(js)
		return info != nil && info.NumAckPending >= 32
	})
	s.sigterm(c, 3*time.Second)
	s.setFaults(`{"fail_rate":0}`)
	// A new consumer, Core healthy again, gets the events that were in
	// flight at once: it drains well within the 60 s AckWait.
	restart := time.Now()
	s.consumer("BHIV_ACK_WAIT=60s")
	s.drained(40 * time.Second)
	t.Logf("a new consumer drained everything in %s (AckWait 60s)", time.Since(restart))
	s.account("10b-sigterm-core-hanging", n)
}

// 10c. A second signal exits at once, even while in-flight events hang at
// Core and the shutdown timeout is long; those events come back after
// AckWait, nothing is lost.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	s := newStack(t, 1, "--latency", "120s")
	c := s.consumer("BHIV_CORE_TIMEOUT=100s", "BHIV_SHUTDOWN_TIMEOUT=60s")
	n := 300
	_, done := s.publish(n, 0)
	<-done
	_, js := s.js()
	waitFor(t, 20*time.Second, "events in flight at a hanging Core", func() bool {
		info := s.consumerInfo(js)
		return info != nil && info.NumAckPending >= 32
	})
	c.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	err := c.kill(syscall.SIGTERM)
	took := time.Since(start)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Errorf("second SIGTERM: exit %v, want status 130", err)
	}
	t.Logf("second SIGTERM → exit in %s", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("exit took %s after the second signal (shutdown timeout 60s): not at once", took)
	}
	s.setFaults(`{"fail_rate":0}`)
	s.consumer()
	s.drained(40 * time.Second) // AckWait 5s
	s.account("10c-second-signal", n)
}

// sigterm stops c with SIGTERM and checks that it exits 0 within the
// shutdown timeout (plus the connection drain and process exit). Whether
// anything waits for AckWait afterwards is checked by the caller with a new
// consumer: a Nak'ed message stays ack-pending on the server until it is
// delivered again, so the durable's info right after the exit cannot tell a
// Nak'ed message from a stranded one.
func (s *stack) sigterm(c *proc, shutdownTimeout time.Duration) {
	s.t.Helper()
	start := time.Now()
	if err := c.kill(syscall.SIGTERM); err != nil {
		s.t.Fatalf("consumer exit after SIGTERM: %v", err)
	}
	took := time.Since(start)
	s.t.Logf("SIGTERM → exit 0 in %s", took.Round(time.Millisecond))
	if took > shutdownTimeout+5*time.Second {
		s.t.Errorf("exit took %s, the shutdown timeout is %s", took, shutdownTimeout)
	}
	_, js := s.js()
	if info := s.consumerInfo(js); info != nil {
		s.t.Logf("right after the exit: pending %d, ack pending %d (Nak'ed or stranded)", info.NumPending, info.NumAckPending)
	}
}

// stoppedAcked returns the "acked" count of p's "consumer stopped" log
// line (-1 when there is none).
func stoppedAcked(t *testing.T, p *proc) int {
	t.Helper()
	return logInt(t, p, "consumer stopped", "acked")
}

// logInt returns the whole-number field of p's first log line with message
// msg (-1 when there is none).
func logInt(t *testing.T, p *proc, msg, field string) int {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			if v, ok := rec[field].(float64); ok {
				return int(v)
			}
		}
	}
	return -1
}

// vmHWM returns the peak resident set of a process.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// 4b. A crash loop: events whose handling kills the process every time
// (here: kill -9 while they hang at Core) reach BHIV_MAX_DELIVER; each must
// then be in the failure log, never silently gone. JetStream keeps them (the
// durable's MaxDeliver is unlimited) and the next process to receive one
// past BHIV_MAX_DELIVER deliveries writes its records and terminates it,
// whether it restarts within AckWait or long after (as a supervisor's
// crash-loop back-off does).
func TestCrashLoopMaxDeliver(t *testing.T) {
	for _, tc := range []struct {
		name         string
		restartDelay time.Duration
	}{
		{"restart-within-ackwait", 0},
		{"restart-after-ackwait", 6 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, 1, "--latency", "120s")
			env := []string{"BHIV_MAX_DELIVER=2", "BHIV_ACK_WAIT=2s", "BHIV_CORE_TIMEOUT=100s", "BHIV_CONCURRENCY=4"}
			// Six events, fewer than one process holds (4 handled, 4 queued),
			// so that each process gets all of them.
			poison := 6
			_, done := s.publish(poison, 0)
			<-done
			_, js := s.js()
			held := func(what string, cond func(*jetstream.ConsumerInfo) bool) {
				t.Helper()
				waitFor(t, 20*time.Second, what, func() bool {
					info := s.consumerInfo(js)
					return info != nil && cond(info)
				})
			}
			c := s.consumer(env...)
			held("first deliveries held", func(i *jetstream.ConsumerInfo) bool { return i.NumAckPending == poison })
			c.kill(syscall.SIGKILL)
			c.restart() // gets them again once AckWait expires
			held("second deliveries held", func(i *jetstream.ConsumerInfo) bool { return i.NumRedelivered == poison })
			time.Sleep(300 * time.Millisecond) // the handlers have them
			c.kill(syscall.SIGKILL)
			time.Sleep(tc.restartDelay)
			s.setFaults(`{"fail_rate":0}`)
			c.restart()
			n := size(300, 3000)
			_, done = s.publish(n, 0)
			<-done
			n += poison
			// The accounting below judges; this only gives the give-up
			// records time to be written before the consumer is stopped.
			if !eventually(20*time.Second, func() bool {
				f := readFailed(t, filepath.Join(s.dir, "failed.log"))
				return len(f[sinks.CoreName]) == poison
			}) {
				t.Log("the poison events are not all in the failure log 20s after the restart")
			}
			s.drained(30 * time.Second)
			r := s.account("4b-crash-loop-max-deliver-"+tc.name, n)
			t.Logf("failure records by class: %v", r.ByClass)
		})
	}
}
