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
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/time/rate"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/publisher"
)

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
	var (
		file       = fs.String("file", "", "publish every line of this JSON Lines file (- for stdin): envelopes, or bare data with --kind")
		kindFlag   = fs.String("kind", "", "kind of bare data lines in --file: execution or reward")
		ratePerSec = fs.Float64("rate", 0, "events per second with --file (0 = as fast as possible)")
		source     = fs.String("source", "bhiv-cli", "CloudEvents source of the events")
		id         = fs.String("id", "", "event id (default: a new ULID)")
		team       = fs.String("team", "", "team id")
		action     = fs.String("action", "", "execution: action")
		status     = fs.String("status", "", "execution: status, such as ok or error")
		output     = fs.String("output", "", "execution: output")
		errText    = fs.String("error", "", "execution: error message")
		durationMS = fs.Int64("duration-ms", 0, "execution: duration in milliseconds")
		execID     = fs.String("execution-id", "", "reward: the execution rewarded")
		reward     = fs.Float64("reward", 0, "reward: amount")
		reason     = fs.String("reason", "", "reward: reason")
		extra      = fs.String("data", "", "extra data fields, as a JSON object merged into the event data")
		timeout    = fs.Duration("timeout", 10*time.Second, "how long to wait for NATS and each acknowledgement")
	)
	// Flags may come before or after the kind: bhiv publish execution --team t.
	var kindArg string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		kindArg, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if kindArg == "" && fs.NArg() > 0 {
		kindArg = fs.Arg(0)
		if err := parse(fs, fs.Args()[1:]); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	log := newLogger(c, e.stderr)
	n := readNATS(c)
	if err := c.err(); err != nil {
		return usageError{err}
	}

	var single *bhiv.Event
	switch {
	case *file != "" && kindArg != "":
		return usageError{errors.New("give either a kind (execution, reward) or --file, not both")}
	case *file == "" && kindArg == "":
		fs.Usage()
		return usageError{errors.New("give a kind (execution, reward) or --file")}
	case kindArg != "":
		kind, err := bhiv.ParseKind(kindArg)
		if err != nil {
			return usageError{err}
		}
		var extras map[string]any
		if *extra != "" {
			if err := json.Unmarshal([]byte(*extra), &extras); err != nil {
				return usageError{fmt.Errorf("--data is not a JSON object: %w", err)}
			}
		}
		var data any
		switch kind {
		case bhiv.KindExecution:
			if *team == "" || *action == "" {
				return usageError{errors.New("publish execution needs --team and --action")}
			}
			data = bhiv.Execution{TeamID: *team, Action: *action, Status: *status, Output: nonEmpty(*output),
				Error: *errText, DurationMS: *durationMS, Extra: extras}
		case bhiv.KindReward:
			if *team == "" || !flagSet(fs, "reward") {
				return usageError{errors.New("publish reward needs --team and --reward")}
			}
			data = bhiv.Reward{TeamID: *team, ExecutionID: *execID, Reward: *reward, Reason: *reason, Extra: extras}
		}
		ev, err := bhiv.New(kind, *source, *id, data)
		if err != nil {
			return usageError{err}
		}
		single = &ev
	}
	var bareKind bhiv.Kind
	if *kindFlag != "" {
		k, err := bhiv.ParseKind(*kindFlag)
		if err != nil {
			return usageError{fmt.Errorf("--kind: %w", err)}
		}
		bareKind = k
	}

	cctx, cancel := context.WithTimeout(ctx, *timeout)
	nc, err := connect(cctx, n, "bhiv publish", log)
	cancel()
	if err != nil {
		return err
	}
	defer nc.Drain()
	js, err := jetStream(ctx, nc, n)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	p, err := publisher.New(pctx, js, publisher.Config{Source: *source, Stream: n.stream, Logger: log})
	if err != nil {
		return err
	}
	if single != nil {
		res, err := p.Publish(pctx, *single)
		if err != nil {
			return err
		}
		what := "published"
		if res.Duplicate {
			what = "duplicate (already stored)"
		}
		fmt.Fprintf(e.stdout, "%s %s %s (stream %s, seq %d)\n", what, single.Kind(), res.ID, res.Stream, res.Sequence)
		return nil
	}
	return publishFile(ctx, p, *file, bareKind, *source, *ratePerSec, *timeout, n.maxEventBytes, e)
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

// publishFile publishes every line of path (or stdin for "-") asynchronously,
// at most ratePerSec a second, and prints a summary. It fails when any line
// could not be published.
func publishFile(ctx context.Context, p *publisher.Publisher, path string, bareKind bhiv.Kind, source string, ratePerSec float64, timeout time.Duration, maxBytes int, e env) error {
	var r io.Reader
	total := -1
	if path == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		defer f.Close()
		if total, err = countLines(f); err != nil {
			return fmt.Errorf("publish: read %s: %w", path, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		r = f
	}
	var bar *progressbar.ProgressBar
	if isTerminal(e.stderr) && (total < 0 || total >= 1000) {
		bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("publishing"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	var lim *rate.Limiter
	if ratePerSec > 0 {
		lim = rate.NewLimiter(rate.Limit(ratePerSec), 1)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxBytes+4096)
	var invalid int
	lineNo := 0
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
			fmt.Fprintf(e.stderr, "line %d: %v\n", lineNo, err)
		}
		if bar != nil {
			bar.Add(1)
		}
		if ctx.Err() != nil {
			break
		}
	}
	scanErr := sc.Err()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
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
