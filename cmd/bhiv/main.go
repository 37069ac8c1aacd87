// Command bhiv carries HackaVerse execution and reward events from NATS
// JetStream to BHIV Core and the BHIV Bucket. Run `bhiv help` for its
// subcommands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// getenv reads the environment. A variable set to the empty string reads as
// unset (its default applies), except BHIV_ADMIN_ADDR, where empty means
// off, as documented.
func getenv(key string) string {
	if v, ok := os.LookupEnv(key); ok && v == "" && key == "BHIV_ADMIN_ADDR" {
		return "off"
	}
	return os.Getenv(key)
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "bhiv: shutting down (send the signal again to exit at once)")
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "bhiv: second signal, exiting now")
		os.Exit(130)
	}()
	err := run(ctx, os.Args, getenv, os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bhiv:", err)
		os.Exit(exitCode(err))
	}
}
