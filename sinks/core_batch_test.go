package sinks

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// When the only caller of a filling batch gives up, a caller that joins
// later is not failed by the abandoned batch: its event goes in a new one.
func TestCoreBatchAbandoned(t *testing.T) {
	srv := newFakeCore(t, nil)
	cfg := fastCore(srv.URL)
	cfg.BatchMax = 10
	cfg.BatchLinger = 200 * time.Millisecond
	c := newTestCore(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := c.Deliver(ctx, testEvent(t, bhiv.KindReward, "01GAVEUP", 0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	ev := testEvent(t, bhiv.KindReward, "01LATER", 0)
	if err := c.Deliver(context.Background(), ev); err != nil {
		t.Fatalf("caller after the one that gave up: %v", err)
	}
	reqs := srv.requests()
	if len(reqs) != 1 || !bytes.Equal(reqs[0].body, ev.Data) || reqs[0].header.Get("Ce-Id") != ev.ID {
		t.Errorf("%d requests, want 1 with the later event alone", len(reqs))
		for _, r := range reqs {
			t.Logf("sent %s", r.body)
		}
	}
}
