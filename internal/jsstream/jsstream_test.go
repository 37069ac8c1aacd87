package jsstream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/jsstream"
	"github.com/hackaverse/bhiv/internal/natstest"
)

func streamInfo(t *testing.T, s jetstream.Stream) jetstream.StreamConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.Config
}

func TestEnsure(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{})
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	cfg := streamInfo(t, s)
	if cfg.Name != "BHIV" || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "bhiv.events.>" ||
		cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.MaxAge != 7*24*time.Hour || cfg.Duplicates != 2*time.Minute || cfg.Replicas != 1 {
		t.Errorf("stream config %+v", cfg)
	}

	// Both kinds land in the stream.
	for _, k := range bhiv.Kinds {
		if _, err := js.Publish(ctx, bhiv.Subject("", k), []byte(`{"team_id":"t"}`)); err != nil {
			t.Fatalf("publish %s: %v", k, err)
		}
	}

	// Calling it again with the same config is a no-op.
	if _, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{}); err != nil {
		t.Fatalf("Ensure again: %v", err)
	}

	// A changed config updates the stream and keeps its messages.
	s, err = jsstream.Ensure(ctx, js, bhiv.StreamConfig{MaxAge: 24 * time.Hour, Duplicates: 5 * time.Minute})
	if err != nil {
		t.Fatalf("Ensure update: %v", err)
	}
	cfg = streamInfo(t, s)
	if cfg.MaxAge != 24*time.Hour || cfg.Duplicates != 5*time.Minute || cfg.Storage != jetstream.FileStorage {
		t.Errorf("updated config %+v", cfg)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages after update, want 2", info.State.Msgs)
	}

	// An operator-created stream that drifted from ours is put back.
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "BHIV", Subjects: []string{"bhiv.events.>"}, MaxAge: time.Hour, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	s, err = jsstream.Ensure(ctx, js, bhiv.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := streamInfo(t, s); cfg.MaxAge != 7*24*time.Hour || cfg.Duplicates != 2*time.Minute {
		t.Errorf("drifted stream not restored: %+v", cfg)
	}
}

func TestEnsureCustomNameAndPrefix(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{Name: "ACME_EVENTS", SubjectPrefix: "acme.bhiv"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := streamInfo(t, s)
	if cfg.Name != "ACME_EVENTS" || cfg.Subjects[0] != "acme.bhiv.>" {
		t.Errorf("config %+v", cfg)
	}
	ack, err := js.Publish(ctx, bhiv.Subject("acme.bhiv", bhiv.KindReward), []byte(`{}`))
	if err != nil || ack.Stream != "ACME_EVENTS" {
		t.Errorf("publish: %+v, %v", ack, err)
	}
}

func TestEnsureErrors(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{Name: "bad name"}); err == nil {
		t.Error("bad name accepted")
	}
	// Three replicas need a cluster: a single server refuses.
	if _, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{Replicas: 3}); err == nil {
		t.Error("3 replicas on one server accepted")
	}
	// NATS gone: a clear error within the deadline.
	srv.Shutdown()
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	start := time.Now()
	if _, err := jsstream.Ensure(short, js, bhiv.StreamConfig{}); err == nil {
		t.Error("no error with the server down")
	} else if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v with a 500ms deadline", d)
	}
}

func TestEnsureReplicasOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := natstest.StartCluster(t)
	_, js := c.Nodes[0].Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// natstest.StartCluster returns once there is a meta leader; the other
	// peers may take a moment more to be placeable.
	var s jetstream.Stream
	var err error
	for {
		s, err = jsstream.Ensure(ctx, js, bhiv.StreamConfig{Replicas: 3})
		if err == nil || !strings.Contains(err.Error(), "no suitable peers") || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Ensure R3: %v", err)
	}
	if cfg := streamInfo(t, s); cfg.Replicas != 3 || cfg.Storage != jetstream.FileStorage {
		t.Errorf("config %+v", cfg)
	}
}

// countingJS counts the stream creations and updates Ensure sends.
type countingJS struct {
	jetstream.JetStream
	updates int
}

func (c *countingJS) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.updates++
	return c.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// TestEnsureRetention: the default keeps events 7 days; NoMaxAge
// keeps them without an age limit, bounded by MaxBytes, and a full stream
// refuses publishes (DiscardNew) instead of deleting events. Ensure
// moves an existing stream between the two, keeps its messages, and leaves
// a matching stream alone (no update at every start).
func TestEnsureRetention(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	cjs := &countingJS{JetStream: js}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ensure := func(c bhiv.StreamConfig, wantUpdates int) jetstream.StreamConfig {
		t.Helper()
		cjs.updates = 0
		s, err := jsstream.Ensure(ctx, cjs, c)
		if err != nil {
			t.Fatalf("Ensure(%+v): %v", c, err)
		}
		if cjs.updates != wantUpdates {
			t.Errorf("Ensure(%+v) sent %d creations or updates, want %d", c, cjs.updates, wantUpdates)
		}
		return streamInfo(t, s)
	}
	cfg := ensure(bhiv.StreamConfig{}, 1)
	if cfg.MaxAge != 7*24*time.Hour || cfg.MaxBytes != -1 || cfg.Discard != jetstream.DiscardNew {
		t.Errorf("default: max age %s, max bytes %d, discard %s; want 168h, none, new", cfg.MaxAge, cfg.MaxBytes, cfg.Discard)
	}
	ensure(bhiv.StreamConfig{}, 0)
	if _, err := js.Publish(ctx, bhiv.Subject("", bhiv.KindReward), []byte(`{"team_id":"t"}`)); err != nil {
		t.Fatal(err)
	}

	cfg = ensure(bhiv.StreamConfig{MaxAge: bhiv.NoMaxAge}, 1)
	if cfg.MaxAge != 0 || cfg.MaxBytes != bhiv.DefaultStreamMaxBytes || cfg.Discard != jetstream.DiscardNew {
		t.Errorf("no max age: max age %s, max bytes %d, discard %s; want none, %d, new", cfg.MaxAge, cfg.MaxBytes, cfg.Discard, bhiv.DefaultStreamMaxBytes)
	}
	ensure(bhiv.StreamConfig{MaxAge: bhiv.NoMaxAge}, 0)
	cfg = ensure(bhiv.StreamConfig{MaxAge: bhiv.NoMaxAge, MaxBytes: -1}, 1)
	if cfg.MaxAge != 0 || cfg.MaxBytes != -1 {
		t.Errorf("no limits: max age %s, max bytes %d", cfg.MaxAge, cfg.MaxBytes)
	}
	cfg = ensure(bhiv.StreamConfig{MaxBytes: 1 << 30}, 1)
	if cfg.MaxAge != 7*24*time.Hour || cfg.MaxBytes != 1<<30 {
		t.Errorf("back to the default age with 1 GiB: max age %s, max bytes %d", cfg.MaxAge, cfg.MaxBytes)
	}
	s, err := js.Stream(ctx, bhiv.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("stream holds %v messages after the updates (%v), want 1", info.State.Msgs, err)
	}
}

// TestFullStreamRefusesPublishes: a stream at MaxBytes refuses the next
// publish with an error and deletes nothing.
func TestFullStreamRefusesPublishes(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := jsstream.Ensure(ctx, js, bhiv.StreamConfig{MaxAge: bhiv.NoMaxAge, MaxBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"team_id":"t","pad":"` + strings.Repeat("x", 500) + `"}`)
	var refused error
	stored := 0
	for range 100 {
		if _, refused = js.Publish(ctx, bhiv.Subject("", bhiv.KindExecution), body); refused != nil {
			break
		}
		stored++
	}
	if refused == nil {
		t.Fatal("100 publishes of 500 bytes into a 4 KiB stream all succeeded")
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Msgs != uint64(stored) {
		t.Errorf("stream first seq %d, %d messages; want 1 and %d: events were deleted to make room", info.State.FirstSeq, info.State.Msgs, stored)
	}
	t.Logf("%d events stored, then: %v", stored, refused)
}
