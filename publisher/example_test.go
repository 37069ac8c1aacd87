package publisher_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// embeddedNATS starts a throwaway JetStream server so the examples run; a
// service connects to its real NATS_URL instead.
func embeddedNATS() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "bhiv-example-")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		log.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		log.Fatal("nats-server not ready")
	}
	return srv.ClientURL(), func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}
}

// The executor publishes one execution event per finished action and waits
// for JetStream to store it.
func Example_executor() {
	url, stop := embeddedNATS()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(url, nats.Name("executor"), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	pub, err := publisher.New(ctx, js, publisher.Config{Source: "executor", EnsureStream: true})
	if err != nil {
		log.Fatal(err)
	}

	res, err := pub.Execution(ctx, bhiv.Execution{
		TeamID:     "team_42",
		Action:     "analyze_data",
		Status:     "ok",
		Output:     map[string]any{"rows": 1200},
		DurationMS: 830,
		Extra:      map[string]any{"runner": "gpu-3"}, // extra fields travel as they are
	}, publisher.WithID("exec-0001")) // a stable id makes retries safe
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored", res.ID, "in", res.Stream, "at", res.Sequence)

	// Publishing again after a timeout is harmless: JetStream keeps one copy.
	res, err = pub.Execution(ctx, bhiv.Execution{TeamID: "team_42", Action: "analyze_data", Status: "ok", DurationMS: 830},
		publisher.WithID("exec-0001"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("duplicate:", res.Duplicate)
	// Output:
	// stored exec-0001 in BHIV at 1
	// duplicate: true
}

// The reward service publishes a reward for an execution, and a batch of
// rewards asynchronously.
func Example_rewardService() {
	url, stop := embeddedNATS()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(url, nats.Name("reward-service"), nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	pub, err := publisher.New(ctx, js, publisher.Config{Source: "reward-service", EnsureStream: true})
	if err != nil {
		log.Fatal(err)
	}

	res, err := pub.Reward(ctx, bhiv.Reward{TeamID: "team_42", ExecutionID: "exec-0001", Reward: 10, Reason: "fastest run"},
		publisher.WithID("exec-0001-reward"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reward stored:", res.ID, "duplicate:", res.Duplicate)

	// Many at once: PublishAsync returns at once (blocking only while
	// MaxPending acks are outstanding); Wait reports how they all ended.
	for i := range 100 {
		ev, err := bhiv.New(bhiv.KindReward, pub.Source(), fmt.Sprintf("bonus-%03d", i),
			bhiv.Reward{TeamID: "team_42", Reward: 1, Reason: "weekly bonus"})
		if err != nil {
			log.Fatal(err)
		}
		if err := pub.PublishAsync(ev); err != nil {
			log.Fatal(err) // invalid event or closed connection: not sent
		}
	}
	sum, err := pub.Wait(ctx)
	if err != nil {
		log.Fatal(err) // joins a *publisher.PublishError per failed event
	}
	fmt.Printf("published %d, duplicates %d, failed %d\n", sum.Published, sum.Duplicates, sum.Failed)
	// Output:
	// reward stored: exec-0001-reward duplicate: false
	// published 100, duplicates 0, failed 0
}
