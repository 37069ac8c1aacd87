package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

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
	err := run(ctx, os.Args, getenvFrom(os.LookupEnv), os.Stdout, os.Stderr)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bhiv:", err)
		os.Exit(exitCode(err))
	}
}
