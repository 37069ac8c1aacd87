package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/internal/natstest"
)

// TestMain makes this test binary double as `bhiv`: testscript puts it on
// PATH under that name, so `exec bhiv …` in a script (and the subprocess
// tests) run the binary's own main, and so run, without a separate build.
func TestMain(m *testing.M) {
	// Under -race, each process the tests start would sleep 1s as it exits.
	os.Setenv("GORACE", strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE")))
	testscript.Main(m, map[string]func(){"bhiv": main})
}

// TestScripts runs the CLI scenarios in testdata/script/*.txtar. Each script
// runs `exec bhiv …` as a real process (its exit status, its signals, its
// environment as main reads it), with these commands besides testscript's
// own (NATS and the Core stub run in the test process, one of each per
// script, gone when it ends):
//
//	nats-server start [-user U -password P]
//	    start an embedded JetStream server; sets NATS_URL.
//	core-stub start [-token T] [-reject-prefix P] [-record FILE]
//	    start the Core stub (internal/corestub), requiring bearer token T,
//	    answering 400 "rejected: schema" to events whose id starts with P,
//	    recording what it accepts in FILE; sets BHIV_CORE_URL.
//	free-addr VAR
//	    set VAR to 127.0.0.1:PORT, a port free a moment ago.
//	publish-raw SUBJECT BODY
//	    publish BODY as it is (core NATS, no envelope, no message id).
//	stream-count STREAM
//	    print how many messages STREAM holds.
//	stream-last STREAM SUBJECT
//	    print the data of the last message on SUBJECT; set MSG_ID to its
//	    Nats-Msg-Id header.
//	ack-next STREAM DURABLE
//	    take the next message of DURABLE and ack it (as a consumer that lost
//	    it would); fails unless there is one. Prints its sequence and subject.
//	http-get URL
//	    print the body of GET URL; fails unless the status is 2xx.
//	exits N COMMAND [ARGS...]
//	    run COMMAND as exec does; fails unless it exits with status N.
//	gen-lines N TEMPLATE FILE
//	    write FILE: TEMPLATE (a text/template file) executed N times, with
//	    . = 0 … N-1.
//	waitfor durable STREAM NAME | files DIR N | core-events N | nonempty FILE | metrics URL FILE
//	    wait up to 30s until: the durable consumer exists; DIR holds N
//	    event files (*.json, in subdirectories too); the Core stub has N
//	    distinct events; FILE is not empty; one scrape of URL has every
//	    series of FILE ("name{labels} value" lines, value * for present).
//
// The NATS commands connect as NATS_USER/NATS_PASSWORD when set. Every
// script starts with BHIV_ADMIN_ADDR=off (scripts that want the admin server
// set an address), and `go test -update` rewrites the golden files that a
// script's `cmp` finds different.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		Setup:               setupScript,
		RequireExplicitExec: true,
		UpdateScripts:       *update,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"nats-server":  cmdNATSServer,
			"core-stub":    cmdCoreStub,
			"free-addr":    cmdFreeAddr,
			"publish-raw":  cmdPublishRaw,
			"stream-count": cmdStreamCount,
			"stream-last":  cmdStreamLast,
			"ack-next":     cmdAckNext,
			"http-get":     cmdHTTPGet,
			"exits":        cmdExits,
			"gen-lines":    cmdGenLines,
			"waitfor":      cmdWaitfor,
		},
	})
}

// scriptState is what a script's commands share: its test, and the servers
// started for it.
type scriptState struct {
	t    testing.TB
	nats *natstest.Server
	stub *corestub.Stub
}

type scriptStateKey struct{}

func setupScript(e *testscript.Env) error {
	t, ok := e.T().(testing.TB)
	if !ok {
		return errors.New("scripts need a testing.TB")
	}
	e.Values[scriptStateKey{}] = &scriptState{t: t}
	e.Setenv("BHIV_ADMIN_ADDR", adminOff)
	return nil
}

func state(ts *testscript.TestScript) *scriptState {
	return ts.Value(scriptStateKey{}).(*scriptState)
}

// scriptUsage fails the script with the command's usage when bad is true
// or the command is negated.
func scriptUsage(ts *testscript.TestScript, neg, bad bool, line string) {
	if neg || bad {
		ts.Fatalf("usage: %s (and no !)", line)
	}
}

// startFlags reads the arguments of `NAME start [-flag value]...`, where
// the flags are the string flags names, failing with usage on others.
func startFlags(ts *testscript.TestScript, neg bool, args []string, usage string, names ...string) map[string]string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	vals := map[string]*string{}
	for _, n := range names {
		vals[n] = fs.String(n, "", "")
	}
	scriptUsage(ts, neg, len(args) == 0 || args[0] != "start" || fs.Parse(args[1:]) != nil || fs.NArg() > 0, usage)
	out := map[string]string{}
	for n, v := range vals {
		out[n] = *v
	}
	return out
}

func cmdNATSServer(ts *testscript.TestScript, neg bool, args []string) {
	f := startFlags(ts, neg, args, "nats-server start [-user U -password P]", "user", "password")
	st := state(ts)
	if st.nats != nil {
		ts.Fatalf("nats-server: already started")
	}
	st.nats = natstest.Start(st.t, func(o *server.Options) { o.Username, o.Password = f["user"], f["password"] })
	ts.Setenv("NATS_URL", st.nats.URL())
}

func cmdCoreStub(ts *testscript.TestScript, neg bool, args []string) {
	f := startFlags(ts, neg, args, "core-stub start [-token T] [-reject-prefix P] [-record FILE]", "token", "reject-prefix", "record")
	st := state(ts)
	if st.stub != nil {
		ts.Fatalf("core-stub: already started")
	}
	cfg := corestub.Config{Token: f["token"]}
	if f["record"] != "" {
		cfg.RecordPath = ts.MkAbs(f["record"])
	}
	stub, err := corestub.New(cfg)
	ts.Check(err)
	st.stub = stub
	st.t.Cleanup(func() { stub.Close() }) // after the server's, registered next
	var h http.Handler = stub
	if prefix := f["reject-prefix"]; prefix != "" {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.Header.Get("Idempotency-Key"), prefix) {
				http.Error(w, "rejected: schema", http.StatusBadRequest)
				return
			}
			stub.ServeHTTP(w, r)
		})
	}
	ts.Setenv("BHIV_CORE_URL", httptestServer(st.t, h)+corestub.Path)
}

func cmdFreeAddr(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) != 1, "free-addr VAR")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := ln.Addr().String()
	ts.Check(ln.Close())
	ts.Setenv(args[0], addr)
}

// scriptNATS connects to the script's NATS_URL; the connection closes when
// the command ends.
func scriptNATS(ts *testscript.TestScript) (*nats.Conn, jetstream.JetStream) {
	var opts []nats.Option
	if u := ts.Getenv("NATS_USER"); u != "" {
		opts = append(opts, nats.UserInfo(u, ts.Getenv("NATS_PASSWORD")))
	}
	nc, err := nats.Connect(ts.Getenv("NATS_URL"), opts...)
	ts.Check(err)
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		ts.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

func cmdPublishRaw(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) != 2, "publish-raw SUBJECT BODY")
	nc, _ := scriptNATS(ts)
	defer nc.Close()
	ts.Check(nc.Publish(args[0], []byte(args[1])))
	ts.Check(nc.Flush())
}

// withJS calls f with JetStream on the script's NATS server and a context
// for its calls, and closes the connection after.
func withJS(ts *testscript.TestScript, f func(ctx context.Context, js jetstream.JetStream)) {
	nc, js := scriptNATS(ts)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f(ctx, js)
}

func cmdStreamCount(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) != 1, "stream-count STREAM")
	withJS(ts, func(ctx context.Context, js jetstream.JetStream) {
		s, err := js.Stream(ctx, args[0])
		ts.Check(err)
		info, err := s.Info(ctx)
		ts.Check(err)
		fmt.Fprintln(ts.Stdout(), info.State.Msgs)
	})
}

func cmdStreamLast(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) != 2, "stream-last STREAM SUBJECT")
	withJS(ts, func(ctx context.Context, js jetstream.JetStream) {
		s, err := js.Stream(ctx, args[0])
		ts.Check(err)
		msg, err := s.GetLastMsgForSubject(ctx, args[1])
		ts.Check(err)
		fmt.Fprintf(ts.Stdout(), "%s\n", msg.Data)
		ts.Setenv("MSG_ID", msg.Header.Get(bhiv.MsgIDHeader))
	})
}

func cmdAckNext(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) != 2, "ack-next STREAM DURABLE")
	withJS(ts, func(ctx context.Context, js jetstream.JetStream) {
		cons, err := js.Consumer(ctx, args[0], args[1])
		ts.Check(err)
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		ts.Check(err)
		acked := 0
		for m := range batch.Messages() {
			ts.Check(m.DoubleAck(ctx))
			meta, err := m.Metadata()
			ts.Check(err)
			fmt.Fprintf(ts.Stdout(), "acked seq %d %s\n", meta.Sequence.Stream, m.Subject())
			acked++
		}
		ts.Check(batch.Error())
		if acked != 1 {
			ts.Fatalf("ack-next: acked %d messages, want 1", acked)
		}
	})
}

func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: http-get URL")
	}
	resp, err := http.Get(args[0])
	ts.Check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	ts.Check(err)
	ts.Stdout().Write(body)
	ok := resp.StatusCode/100 == 2
	switch {
	case ok && neg:
		ts.Fatalf("http-get: %s answered %s", args[0], resp.Status)
	case !ok && !neg:
		ts.Fatalf("http-get: %s answered %s", args[0], resp.Status)
	}
}

func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) < 2, "exits N COMMAND [ARGS...]")
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		got = exit.ExitCode()
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

func cmdGenLines(ts *testscript.TestScript, neg bool, args []string) {
	scriptUsage(ts, neg, len(args) != 3, "gen-lines N TEMPLATE FILE")
	n, err := strconv.Atoi(args[0])
	ts.Check(err)
	tmpl, err := template.New(args[1]).Parse(ts.ReadFile(args[1]))
	ts.Check(err)
	f, err := os.Create(ts.MkAbs(args[2]))
	ts.Check(err)
	defer f.Close()
	for i := range n {
		ts.Check(tmpl.Execute(f, i))
	}
	ts.Check(f.Close())
}

// waitConds holds the forms of waitfor: how many arguments each takes, and
// the condition it builds from them, which reports whether it holds and,
// while it does not, what there is instead.
var waitConds = map[string]struct {
	nargs int
	build func(ts *testscript.TestScript, a []string) func() (ok bool, have string)
}{
	"durable": {2, func(ts *testscript.TestScript, a []string) func() (bool, string) {
		nc, js := scriptNATS(ts)
		ts.Defer(nc.Close)
		return func() (bool, string) {
			_, err := js.Consumer(context.Background(), a[0], a[1])
			return err == nil, fmt.Sprint(err)
		}
	}},
	"files": {2, func(ts *testscript.TestScript, a []string) func() (bool, string) {
		want, err := strconv.Atoi(a[1])
		ts.Check(err)
		return func() (bool, string) {
			n := countFiles(state(ts).t, ts.MkAbs(a[0]))
			return n == want, fmt.Sprintf("%d files", n)
		}
	}},
	"core-events": {1, func(ts *testscript.TestScript, a []string) func() (bool, string) {
		want, err := strconv.ParseInt(a[0], 10, 64)
		ts.Check(err)
		stub := state(ts).stub
		if stub == nil {
			ts.Fatalf("waitfor core-events: no core-stub started")
		}
		return func() (bool, string) {
			st := stub.Stats()
			return st.Unique == want, fmt.Sprintf("%+v", st)
		}
	}},
	"nonempty": {1, func(ts *testscript.TestScript, a []string) func() (bool, string) {
		return func() (bool, string) {
			fi, err := os.Stat(ts.MkAbs(a[0]))
			if err != nil {
				return false, err.Error()
			}
			return fi.Size() > 0, "an empty file"
		}
	}},
	"metrics": {2, func(ts *testscript.TestScript, a []string) func() (bool, string) {
		want := ts.ReadFile(a[1])
		return func() (bool, string) { return metricsMatch(a[0], want) }
	}},
}

func cmdWaitfor(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		args = []string{""}
	}
	form, ok := waitConds[args[0]]
	scriptUsage(ts, neg, !ok || len(args)-1 != form.nargs,
		"waitfor durable STREAM NAME | files DIR N | core-events N | nonempty FILE | metrics URL FILE")
	cond := form.build(ts, args[1:])
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, have := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfor %s: not within 30s; have %s", strings.Join(args, " "), have)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricsMatch scrapes url once and reports whether it has every series of
// want ("name{labels} value" lines; value * for present), and else which
// series it lacks or has with another value.
func metricsMatch(url, want string) (bool, string) {
	resp, err := http.Get(url)
	if err != nil {
		return false, err.Error()
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err.Error()
	}
	got := parseMetrics(string(body))
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(want), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return false, fmt.Sprintf("%q: want \"name{labels} value\"", line)
		}
		series, v := line[:i], line[i+1:]
		g, present := got[series]
		w, err := strconv.ParseFloat(v, 64)
		if !present || (v != "*" && (err != nil || g != w)) {
			bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %s", series, g, present, v))
		}
	}
	return len(bad) == 0, "\n" + strings.Join(bad, "\n")
}
