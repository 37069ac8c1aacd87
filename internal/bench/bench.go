package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/hackaverse/bhiv/publisher"
	"github.com/hackaverse/bhiv/sinks"
)

// Run runs the benchmark.
func Run(ctx context.Context, c Config) (*Result, error) {
	c, err := config.Ready(c)
	if err != nil {
		return nil, err
	}
	res := &Result{LoadAverage: loadAverage()}
	dir, cleanup, err := workDir(c.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	c.Dir = dir
	url, opts := c.NATSURL, c.NATSOpts
	var st *stack
	if c.Embedded {
		if st, err = startStack(c); err != nil {
			return nil, err
		}
		defer st.close()
		url = st.ns.ClientURL()
		if c.CoreCapacity > 0 && c.CoreLatency > 0 {
			res.CoreBound = float64(c.CoreCapacity) / c.CoreLatency.Seconds()
		}
	}
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("bhiv bench"), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("bench: connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if c.Ceilings {
		if res.Ceilings, err = ceilings(ctx, c, js, st); err != nil {
			return nil, err
		}
	}
	if c.Parts {
		if res.Parts, err = measureParts(ctx, c, js, st); err != nil {
			return nil, err
		}
	}
	r := &run{c: c, st: st, js: js, res: res}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	if c.Ceilings && st != nil {
		if res.CeilingsAfter, err = fileCeilings(c); err != nil {
			return nil, err
		}
	}
	_, res.PeakRSSBytes, _ = procMem("self")
	return res, nil
}

// workDir returns dir, made if missing, or a new temporary directory when
// dir is empty; cleanup removes the temporary one.
func workDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", nil, fmt.Errorf("bench: %w", err)
		}
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "bhiv-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("bench: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// run is the measured part of a Run: the consumer, the events published,
// what the consumer did with them.
type run struct {
	c   Config
	st  *stack // nil against a running stack
	js  jetstream.JetStream
	res *Result

	w        *watcher
	sentByID map[string]int64   // publish times, embedded: for the bucket lag
	ready    time.Time          // the consumer's durable exists
	cpu0     time.Duration      // the consumer process's CPU time then
	self0    time.Duration      // this process's
	busy0    time.Duration      // the machine's (every CPU)
	kernel0  time.Duration      // kernel threads' and interrupts'
	profiles func() []string    // stops the consumer's profiles (Config.ConsumerProfile)
	limit    func() *LimitStats // stops sampling Core's limit
}

func (r *run) run(ctx context.Context) error {
	c, st := r.c, r.st
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer func() { // on an early return
		if r.profiles != nil {
			r.profiles()
		}
		if r.limit != nil {
			r.limit()
		}
	}()
	if !c.Preload {
		if err := r.startConsumer(ctx, cancel); err != nil {
			return err
		}
	}
	pub, err := publisher.New(ctx, r.js, publisher.Config{Source: "bhiv-bench", EnsureStream: c.Embedded, Stream: bhiv.StreamConfig{Name: c.Stream}})
	if err != nil {
		return err
	}
	// The stream's last sequence before the run: the bench's events follow.
	startSeq, err := lastSeq(ctx, r.js, c.Stream)
	if err != nil {
		return err
	}
	r.w = &watcher{startSeq: startSeq, progress: c.Progress, total: c.Events}
	if c.Duration > 0 {
		r.w.total = 0
	}
	defer r.w.stop()
	if !c.Preload {
		if err := r.watch(ctx); err != nil {
			return err
		}
	}
	if st != nil {
		r.sentByID = map[string]int64{}
	}
	start, n, endSeq, err := r.publishAll(ctx, pub, startSeq)
	if err != nil {
		return err
	}
	if c.Preload {
		if err := r.startConsumer(ctx, cancel); err != nil {
			return err
		}
		if err := r.watch(ctx); err != nil {
			return err
		}
		start = r.ready // rates count from the consumer's start
	}
	end, err := r.awaitEnd(ctx, endSeq)
	if err != nil {
		return err
	}
	return r.results(start, end, n)
}

// results fills in what the run measured, once its n events (published
// from start) are acked at end.
func (r *run) results(start, end time.Time, n int) error {
	c, res := r.c, r.res
	if c.Hold == 0 {
		res.EndToEndRate = float64(n) / end.Sub(start).Seconds()
	}
	if err := r.cpuStats(end); err != nil {
		return err
	}
	res.Profiles, res.CoreLimit = r.profiles(), r.limit()
	r.w.stop()
	if c.Progress != nil {
		c.Progress(n, int(r.w.floor), r.w.total)
	}
	res.AckLatency = percentiles(r.w.latency)
	if r.st == nil {
		return nil
	}
	return r.embeddedResults(start)
}

// embeddedResults stops the embedded consumer and reads what the embedded
// stack saw: Core's latency and rate (from start), the core stub's queue,
// the failure records and the bucket's lag.
func (r *run) embeddedResults(start time.Time) error {
	c, st, res := r.c, r.st, r.res
	if err := st.stopConsumer(); err != nil {
		return fmt.Errorf("bench: consumer: %w", err)
	}
	st.mu.Lock()
	res.CoreLatency = percentiles(st.latency)
	res.CoreAccepted = st.accepted
	if st.accepted > 0 {
		res.CoreRate = float64(st.accepted) / st.lastAt.Sub(start).Seconds()
	}
	st.mu.Unlock()
	res.CoreMaxQueued = st.stub.Stats().MaxQueued
	if st.pipe != nil {
		if err := st.pipe.FailureLog.Close(); err != nil { // flushed: every record is on disk
			return fmt.Errorf("bench: close failure log: %w", err)
		}
	}
	if err := sinks.ReadFailureLog(st.failureLog(), nil, func(bhiv.FailureRecord) error { res.FailureRecords++; return nil }); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bench: read failure log: %w", err)
	}
	if !c.Preload {
		var err error
		if res.BucketLag, err = bucketLag(st.bucketDir(), r.sentByID); err != nil {
			return err
		}
		if res.BucketLag != nil {
			res.BucketLagTick = changeTimeTick()
		}
	}
	return nil
}

// publishAll publishes the run's events and waits for their acks; it
// returns when publishing started, how many were published and the
// stream's last sequence then, and records the publish rate and what
// others published meanwhile.
func (r *run) publishAll(ctx context.Context, pub *publisher.Publisher, startSeq uint64) (start time.Time, n int, endSeq uint64, err error) {
	res := r.res
	start, n, err = r.publish(ctx, pub)
	if err != nil {
		return start, n, 0, err
	}
	actx, cancelWait := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	ar, werr := pub.Wait(actx)
	cancelWait()
	if werr != nil {
		return start, n, 0, fmt.Errorf("bench: %d of %d publishes failed: %w", ar.Failed, n, werr)
	}
	res.Events = n
	res.PublishSeconds = time.Since(start).Seconds()
	res.PublishRate = float64(n) / res.PublishSeconds
	if endSeq, err = lastSeq(ctx, r.js, r.c.Stream); err != nil {
		return start, n, 0, err
	}
	res.OtherMessages = max(0, int(endSeq-startSeq)-ar.Published)
	return start, n, endSeq, nil
}

// awaitEnd waits for the end of the run: the hold (Config.Hold), or the
// consumer having acked everything in the stream up to endSeq, ours and
// anyone else's.
func (r *run) awaitEnd(ctx context.Context, endSeq uint64) (time.Time, error) {
	if r.c.Hold > 0 {
		return r.hold(ctx)
	}
	return r.w.waitFor(ctx, endSeq, 10*time.Minute)
}

// startConsumer starts the embedded consumer, if any, and cancels ctx with
// the reason should its process exit before the run ends.
func (r *run) startConsumer(ctx context.Context, cancel context.CancelCauseFunc) error {
	if r.st == nil {
		return nil
	}
	if err := r.st.startConsumer(r.c); err != nil {
		return err
	}
	if p := r.st.proc; p != nil {
		go func() {
			select {
			case <-p.done:
				cancel(p.exited())
			case <-ctx.Done():
			}
		}()
	}
	return nil
}

// watch finds the durable (the embedded consumer creates it as it
// starts) and starts watching it.
func (r *run) watch(ctx context.Context) error {
	cons, err := r.js.Consumer(ctx, r.c.Stream, r.c.Durable)
	if err != nil && r.st != nil {
		cons, err = waitConsumer(ctx, r.js, r.c.Stream, r.c.Durable)
	}
	if err != nil {
		return fmt.Errorf("bench: durable %s on stream %s (is `bhiv consume` running?): %w", r.c.Durable, r.c.Stream, err)
	}
	r.ready, r.self0, r.busy0, r.kernel0 = time.Now(), selfCPU(), machineBusy(), kernelCPU()
	if r.st != nil && r.st.proc != nil {
		if r.cpu0, err = procCPU(r.st.proc.pid()); err != nil {
			return err
		}
	}
	r.profiles, r.limit = r.profile(ctx), r.sampleLimit(ctx)
	r.w.start(ctx, cons)
	return nil
}

// publish publishes the run's events and returns when it started and how
// many it published.
func (r *run) publish(ctx context.Context, pub *publisher.Publisher) (time.Time, int, error) {
	c := r.c
	padding := strings.Repeat("x", max(0, c.Size-120))
	share := c.Mix.executionShare()
	start := time.Now()
	n := 0
	for ; ; n++ {
		if c.Duration > 0 && time.Since(start) >= c.Duration || c.Duration == 0 && n >= c.Events || ctx.Err() != nil {
			break
		}
		if c.Rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(n) / c.Rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		sent := time.Now().UnixNano()
		ev, err := benchEvent(n, share, padding, sent)
		if err != nil {
			return start, n, err
		}
		r.w.published(sent)
		if r.sentByID != nil {
			r.sentByID[ev.ID] = sent
		}
		if err := pub.PublishAsync(ev); err != nil {
			return start, n, fmt.Errorf("bench: publish: %w", err)
		}
	}
	if err := context.Cause(ctx); err != nil {
		return start, n, err
	}
	return start, n, nil
}

// HoldQuiet is how long the consumer's intake must have stopped for a hold
// to end before Config.Hold.
const HoldQuiet = 10 * time.Second

// holdQuiet is HoldQuiet, shorter in tests.
var holdQuiet = HoldQuiet

// hold lets the consumer run until its intake stopped for HoldQuiet, or
// for Config.Hold from its start, and reports what it did.
func (r *run) hold(ctx context.Context) (time.Time, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return time.Time{}, context.Cause(ctx)
		}
		r.w.mu.Lock()
		quiet := r.w.delivered > r.w.startSeq && time.Since(r.w.deliveredAt) >= holdQuiet
		r.w.mu.Unlock()
		if quiet || time.Since(r.ready) >= r.c.Hold {
			break
		}
	}
	end := time.Now()
	r.w.mu.Lock()
	h := &HoldResult{Seconds: end.Sub(r.ready).Seconds(), TakenIn: int(r.w.delivered - r.w.startSeq),
		AckPending: r.w.ackPending, PausedSeconds: end.Sub(r.w.deliveredAt).Seconds()}
	if r.w.delivered <= r.w.startSeq {
		h.TakenIn, h.PausedSeconds = 0, h.Seconds
	}
	r.w.mu.Unlock()
	r.res.Hold = h
	return end, nil
}

// cpuStats reads what the consumer process used since it was ready, and
// what other processes used of the machine meanwhile.
func (r *run) cpuStats(end time.Time) error {
	self, busy, kernel := selfCPU(), machineBusy(), kernelCPU()
	events := r.res.Events
	if r.res.Hold != nil {
		events = r.res.Hold.TakenIn
	}
	var consumer time.Duration
	if r.st != nil && r.st.proc != nil {
		pid := r.st.proc.pid()
		cpu, err := procCPU(pid)
		if err != nil {
			return err
		}
		rss, peak, err := procMem(strconv.Itoa(pid))
		if err != nil {
			return err
		}
		consumer = cpu - r.cpu0
		ps := &ProcessStats{PID: pid, CPUSeconds: consumer.Seconds(), PeakRSSBytes: peak, RSSBytes: rss}
		if events > 0 {
			ps.CPUPerEvent = ps.CPUSeconds / float64(events) * 1e6
		}
		r.res.Consumer = ps
	}
	if events > 0 {
		r.res.BenchCPUPerEvent = (self - r.self0).Seconds() / float64(events) * 1e6
	}
	if wall := end.Sub(r.ready).Seconds(); busy > 0 && wall > 0 {
		r.res.MachineBusy = min(1, (busy-r.busy0).Seconds()/wall/float64(runtime.NumCPU()))
		r.res.OtherCPU = max(0, (busy-r.busy0-(self-r.self0)-consumer).Seconds()/wall)
		// A kernel thread that ended meanwhile takes its CPU time with it.
		r.res.KernelCPU = min(r.res.OtherCPU, max(0, (kernel-r.kernel0).Seconds()/wall))
	}
	return nil
}

func benchEvent(i int, execShare float64, padding string, sent int64) (bhiv.Event, error) {
	team := "team_" + strconv.Itoa(i%50)
	// Spread the kinds evenly: event i is an execution while the executions
	// so far are behind their share.
	if int(float64(i+1)*execShare) > int(float64(i)*execShare) {
		return bhiv.New(bhiv.KindExecution, "bhiv-bench", "", bhiv.Execution{TeamID: team, Action: "bench",
			Status: "ok", Output: padding, DurationMS: int64(i % 1000), Extra: map[string]any{sentField: sent}})
	}
	return bhiv.New(bhiv.KindReward, "bhiv-bench", "", bhiv.Reward{TeamID: team, Reward: float64(i % 10),
		Reason: padding, Extra: map[string]any{sentField: sent}})
}

func lastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("bench: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bench: stream %s: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

func waitConsumer(ctx context.Context, js jetstream.JetStream, stream, durable string) (jetstream.Consumer, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cons, err := js.Consumer(ctx, stream, durable)
		if err == nil || time.Now().After(deadline) {
			return cons, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}
