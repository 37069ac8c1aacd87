package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pollInterval is how often the durable's ack floor is read.
const pollInterval = 10 * time.Millisecond

// watcher polls the durable's info: it times each event from its publish
// until the ack floor passes it, reports progress, tells when the floor
// reached a sequence with nothing pending, and notes when intake last
// moved.
type watcher struct {
	startSeq uint64
	progress func(published, acked, total int)
	total    int
	cancel   context.CancelFunc
	done     chan struct{}

	mu          sync.Mutex
	sent        []int64 // publish times, in publish order (stream order)
	floor       uint64  // events acked so far (of ours, by the floor)
	idleAt      uint64  // a floor seen with nothing pending, and when
	idleT       time.Time
	delivered   uint64    // the last stream sequence delivered, and since when
	deliveredAt time.Time //
	ackPending  int
	latency     []time.Duration
	changed     chan struct{}
}

func (w *watcher) published(sent int64) {
	w.mu.Lock()
	w.sent = append(w.sent, sent)
	w.mu.Unlock()
}

// start starts polling cons until stop.
func (w *watcher) start(ctx context.Context, cons jetstream.Consumer) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan struct{})
	w.mu.Lock()
	w.deliveredAt = time.Now()
	w.mu.Unlock()
	go func() { defer close(w.done); w.run(ctx, cons) }()
}

// stop stops polling, if started, and waits until it has.
func (w *watcher) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

func (w *watcher) run(ctx context.Context, cons jetstream.Consumer) {
	lastProgress := time.Time{}
	for {
		if info, err := cons.Info(ctx); err == nil {
			now := time.Now()
			w.mu.Lock()
			acked := uint64(0)
			if info.AckFloor.Stream > w.startSeq {
				acked = min(info.AckFloor.Stream-w.startSeq, uint64(len(w.sent)))
			}
			for ; w.floor < acked; w.floor++ {
				w.latency = append(w.latency, now.Sub(time.Unix(0, w.sent[w.floor])))
			}
			if info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream > w.idleAt {
				w.idleAt, w.idleT = info.AckFloor.Stream, now
				if w.changed != nil {
					close(w.changed)
					w.changed = nil
				}
			}
			if info.Delivered.Stream != w.delivered {
				w.delivered, w.deliveredAt = info.Delivered.Stream, now
			}
			w.ackPending = info.NumAckPending
			published, floor := len(w.sent), int(w.floor)
			w.mu.Unlock()
			if w.progress != nil && now.Sub(lastProgress) >= 100*time.Millisecond {
				w.progress(published, floor, w.total)
				lastProgress = now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollInterval):
		}
	}
}

// waitFor waits until the ack floor reached seq with nothing pending, and
// returns when that was first seen.
func (w *watcher) waitFor(ctx context.Context, seq uint64, within time.Duration) (time.Time, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		if w.idleAt >= seq {
			t := w.idleT
			w.mu.Unlock()
			return t, nil
		}
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, context.Cause(ctx)
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("bench: the consumer did not ack everything up to stream sequence %d within %s", seq, within)
		}
	}
}
