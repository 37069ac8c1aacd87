package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/time/rate"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/publisher"
)

// runPublish publishes one event built from flags, or every line of a JSON
// Lines file, and waits for JetStream's acks.
func runPublish(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("publish", e)
	fs.Usage = func() {
		fmt.Fprint(e.stderr, `Usage:
  bhiv publish execution --team T --action A [--status ok] [--output X] [--error E] [--duration-ms N] [--data JSON] [--id ID]
  bhiv publish reward --team T --reward N [--execution-id ID] [--reason R] [--data JSON] [--id ID]
  bhiv publish --file events.jsonl|- [--kind execution|reward] [--rate N]

Flags:
`)
		fs.PrintDefaults()
	}
	c := newConfig(fs, e.getenv, natsSettings, logSettings)
	f := definePublishFlags(fs)
	kindArg, err := parsePublishArgs(fs, args)
	if err != nil {
		return err
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	if err := c.err(); err != nil {
		return usageError{err}
	}
	var single *bhiv.Event
	switch {
	case f.file != "" && kindArg != "":
		return usageError{errors.New("give either a kind (execution, reward) or --file, not both")}
	case f.file == "" && kindArg == "":
		fs.Usage()
		return usageError{errors.New("give a kind (execution, reward) or --file")}
	case kindArg != "":
		ev, err := f.event(fs, kindArg)
		if err != nil {
			return usageError{err}
		}
		single = &ev
	}
	var bareKind bhiv.Kind
	if f.kind != "" {
		if bareKind, err = bhiv.ParseKind(f.kind); err != nil {
			return usageError{fmt.Errorf("--kind: %w", err)}
		}
	}
	p, closeNATS, err := openPublisher(ctx, n, f, log)
	if err != nil {
		return err
	}
	defer closeNATS()
	if single != nil {
		return publishOne(ctx, p, *single, f.timeout, e.stdout)
	}
	return publishFile(ctx, p, f, bareKind, n.maxEventBytes, e)
}

// publishFlags are the flags of bhiv publish, once parsed.
type publishFlags struct {
	file, kind, source, id            string
	ratePerSec                        float64
	team, action, status, output, err string
	durationMS                        int64
	execID, reason, extra             string
	reward                            float64
	timeout                           time.Duration
}

// definePublishFlags defines the flags of bhiv publish on fs.
func definePublishFlags(fs *flag.FlagSet) *publishFlags {
	f := &publishFlags{}
	fs.StringVar(&f.file, "file", "", "publish every line of this JSON Lines file (- for stdin): envelopes, or bare data with --kind")
	fs.StringVar(&f.kind, "kind", "", "kind of bare data lines in --file: execution or reward")
	fs.Float64Var(&f.ratePerSec, "rate", 0, "events per second with --file (0 = as fast as possible)")
	fs.StringVar(&f.source, "source", "bhiv-cli", "CloudEvents source of the events")
	fs.StringVar(&f.id, "id", "", "event id (default: a new ULID)")
	fs.StringVar(&f.team, "team", "", "team id")
	fs.StringVar(&f.action, "action", "", "execution: action")
	fs.StringVar(&f.status, "status", "", "execution: status, such as ok or error")
	fs.StringVar(&f.output, "output", "", "execution: output")
	fs.StringVar(&f.err, "error", "", "execution: error message")
	fs.Int64Var(&f.durationMS, "duration-ms", 0, "execution: duration in milliseconds")
	fs.StringVar(&f.execID, "execution-id", "", "reward: the execution rewarded")
	fs.Float64Var(&f.reward, "reward", 0, "reward: amount")
	fs.StringVar(&f.reason, "reason", "", "reward: reason")
	fs.StringVar(&f.extra, "data", "", "extra data fields, as a JSON object merged into the event data")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for NATS and each acknowledgement")
	return f
}

// parsePublishArgs parses args into fs and returns the kind argument, if
// any: flags may come before or after it (bhiv publish execution --team t).
func parsePublishArgs(fs *flag.FlagSet, args []string) (kindArg string, err error) {
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		kindArg, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return "", err
	}
	if kindArg == "" && fs.NArg() > 0 {
		kindArg = fs.Arg(0)
		if err := parse(fs, fs.Args()[1:]); err != nil {
			return "", err
		}
	}
	if fs.NArg() > 0 {
		return "", usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return kindArg, nil
}

// event builds the one event the flags describe, of the kind kindArg
// names.
func (f *publishFlags) event(fs *flag.FlagSet, kindArg string) (bhiv.Event, error) {
	kind, err := bhiv.ParseKind(kindArg)
	if err != nil {
		return bhiv.Event{}, err
	}
	var extras map[string]any
	if f.extra != "" {
		if err := json.Unmarshal([]byte(f.extra), &extras); err != nil {
			return bhiv.Event{}, fmt.Errorf("--data is not a JSON object: %w", err)
		}
	}
	var data any
	switch kind {
	case bhiv.KindExecution:
		if f.team == "" || f.action == "" {
			return bhiv.Event{}, errors.New("publish execution needs --team and --action")
		}
		data = bhiv.Execution{TeamID: f.team, Action: f.action, Status: f.status, Output: nonEmpty(f.output),
			Error: f.err, DurationMS: f.durationMS, Extra: extras}
	case bhiv.KindReward:
		if f.team == "" || !flagSet(fs, "reward") {
			return bhiv.Event{}, errors.New("publish reward needs --team and --reward")
		}
		data = bhiv.Reward{TeamID: f.team, ExecutionID: f.execID, Reward: f.reward, Reason: f.reason, Extra: extras}
	}
	return bhiv.New(kind, f.source, f.id, data)
}

// openPublisher connects to NATS, within the flags' timeout, and returns a
// publisher on the stream with the function that drains the connection.
func openPublisher(ctx context.Context, n natsConfig, f *publishFlags, log *slog.Logger) (*publisher.Publisher, func(), error) {
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	nc, err := connect(cctx, n, "bhiv publish", log)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	js, err := jetStream(ctx, nc, n)
	if err != nil {
		nc.Drain()
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	p, err := publisher.New(pctx, js, publisher.Config{Source: f.source, Stream: n.stream, Logger: log})
	if err != nil {
		nc.Drain()
		return nil, nil, err
	}
	return p, func() { nc.Drain() }, nil
}

// publishOne publishes ev, waits up to timeout for its ack and says where
// it was stored.
func publishOne(ctx context.Context, p *publisher.Publisher, ev bhiv.Event, timeout time.Duration, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := p.Publish(ctx, ev)
	if err != nil {
		return err
	}
	what := "published"
	if res.Duplicate {
		what = "duplicate (already stored)"
	}
	fmt.Fprintf(w, "%s %s %s (stream %s, seq %d)\n", what, ev.Kind(), res.ID, res.Stream, res.Sequence)
	return nil
}

func nonEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// publishFile publishes every line of the --file (or stdin for "-")
// asynchronously, at most --rate a second, and prints a summary. It fails
// when any line could not be published.
func publishFile(ctx context.Context, p *publisher.Publisher, f *publishFlags, bareKind bhiv.Kind, maxBytes int, e env) error {
	r, total, closeFile, err := openLines(f.file, e.stdin)
	if err != nil {
		return err
	}
	defer closeFile()
	var bar *progressbar.ProgressBar
	if isTerminal(e.stderr) && (total < 0 || total >= 1000) {
		bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("publishing"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	var lim *rate.Limiter
	if f.ratePerSec > 0 {
		lim = rate.NewLimiter(rate.Limit(f.ratePerSec), 1)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxBytes+4096)
	lineNo, invalid := publishLines(ctx, p, sc, lim, bar, bareKind, f.source, e.stderr)
	scanErr := sc.Err()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
	defer cancel()
	res, werr := p.Wait(wctx)
	if bar != nil {
		bar.Finish()
	}
	fmt.Fprintf(e.stdout, "published %d, duplicates %d, failed %d\n", res.Published, res.Duplicates, res.Failed+invalid)
	switch {
	case scanErr != nil:
		return fmt.Errorf("publish: line %d: %w", lineNo+1, scanErr)
	case werr != nil:
		return werr
	case invalid > 0:
		return fmt.Errorf("publish: %d line(s) were not valid events", invalid)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return nil
}

// openLines opens the JSON Lines file at path, or stdin for "-", and
// returns it with its number of lines (-1 for stdin, which is not read
// twice) and the function that closes it.
func openLines(path string, stdin io.Reader) (r io.Reader, total int, closeFile func(), err error) {
	if path == "-" {
		return stdin, -1, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("publish: %w", err)
	}
	if total, err = countLines(f); err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("publish: read %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("publish: %w", err)
	}
	return f, total, func() { f.Close() }, nil
}

// publishLines publishes every line sc reads, without waiting for the
// acks, at the pace of lim when set, and stops early when ctx ends. It
// reports each line that is not a valid event on errw, and returns how many
// lines it read and how many were not valid events.
func publishLines(ctx context.Context, p *publisher.Publisher, sc *bufio.Scanner, lim *rate.Limiter, bar *progressbar.ProgressBar,
	bareKind bhiv.Kind, source string, errw io.Writer) (lineNo, invalid int) {
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if lim != nil {
			if err := lim.Wait(ctx); err != nil {
				break
			}
		}
		ev, err := eventFromLine(line, bareKind, source)
		if err == nil {
			err = p.PublishAsync(ev)
		}
		if err != nil {
			invalid++
			fmt.Fprintf(errw, "line %d: %v\n", lineNo, err)
		}
		if bar != nil {
			bar.Add(1)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return lineNo, invalid
}

// eventFromLine turns one line into an event: a CloudEvents envelope (has
// "specversion"), or bare data of bareKind.
func eventFromLine(line []byte, bareKind bhiv.Kind, source string) (bhiv.Event, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(line, &probe); err != nil {
		return bhiv.Event{}, &bhiv.DecodeError{Reason: bhiv.ErrNotJSON, Detail: err.Error()}
	}
	if _, ok := probe["specversion"]; ok {
		var ev bhiv.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return ev, &bhiv.DecodeError{Reason: bhiv.ErrInvalidEnvelope, Detail: err.Error()}
		}
		if ev.Source == "" {
			ev.Source = source
		}
		if ev.Time.IsZero() {
			ev.Time = time.Now().UTC()
		}
		if ev.ID == "" {
			ev.ID = bhiv.NewID()
		}
		return ev, ev.Validate()
	}
	if bareKind == "" {
		return bhiv.Event{}, errors.New("bare data line: give --kind execution or --kind reward")
	}
	// A bare line's fields are all data: the event gets a new id.
	return bhiv.New(bareKind, source, "", json.RawMessage(line))
}

func countLines(r io.Reader) (int, error) {
	buf := make([]byte, 256<<10)
	n := 0
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
