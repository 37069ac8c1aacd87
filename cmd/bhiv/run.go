package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// Version returns the binary's version: the -ldflags value, else the module
// version from the build info, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// env bundles what a subcommand gets from the process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, args []string, e env) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"version":     {"print the version", runVersion},
		"publish":     {"publish execution or reward events (flags, or a JSON Lines file)", runPublish},
		"consume":     {"run the consumer: JetStream → Core, Bucket, failure log", runConsume},
		"ingest":      {"take events over HTTP (POST /events/{kind}, /bhiv/core) and publish them", runIngest},
		"core-stub":   {"run a BHIV Core stand-in (local use and tests)", runCoreStub},
		"dev":         {"run everything locally in one process: NATS, Core stub, consumer, HTTP ingest", runDev},
		"replay":      {"re-send failure-log records to their sink", runReplay},
		"bench":       {"measure throughput and latency (against a stack, or --embedded)", runBench},
		"audit":       {"reconcile the stream with Core, the bucket and the failure log", runAudit},
		"healthcheck": {"GET a URL, fail unless it answers 2xx (container health checks)", runHealthcheck},
	}
}

// usageError is a command-line mistake; it exits with status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// exitCode maps an error from run to a process exit status.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// run is the whole binary: main only calls it, so tests drive the binary
// in-process. args[0] is the program name.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdin: os.Stdin, stdout: stdout, stderr: stderr}
	if len(args) < 2 {
		usage(stderr)
		return usageError{errors.New("no subcommand given")}
	}
	name, rest := args[1], args[2:]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return nil
	case "-version", "--version":
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		usage(stderr)
		return usageError{fmt.Errorf("unknown subcommand %q", name)}
	}
	err := cmd.run(ctx, rest, e)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "bhiv %s carries HackaVerse events from NATS JetStream to BHIV Core and the Bucket.\n\nUsage: bhiv <command> [flags]\n\nCommands:\n", Version())
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nEvery setting is a flag and an environment variable (see .env.example); flags win.\nRun `bhiv <command> -h` for a command's flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet("bhiv "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parse parses args, turning flag mistakes into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

func runVersion(_ context.Context, args []string, e env) error {
	fs := newFlagSet("version", e)
	if err := parse(fs, args); err != nil {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	goVer := ""
	if bi != nil {
		goVer = bi.GoVersion
	}
	fmt.Fprintf(e.stdout, "bhiv %s (%s)\n", Version(), strings.TrimSpace(goVer))
	return nil
}
