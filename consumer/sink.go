package consumer

import (
	"sync"
	"sync/atomic"
	"time"
)

// sinkState is a sink with its queue of events and what the consumer knows
// of its availability and pace.
type sinkState struct {
	name  string
	bit   int
	sink  Sink
	avail Availability  // nil when the sink has no circuit breaker
	pacer Pacer         // nil when the sink does not set its own pace
	fixed int           // most deliveries at once without a pacer
	down  atomic.Bool   // it answered unavailable and has given no other answer since
	taken atomic.Uint64 // events it took in this process
	wake  chan struct{} // queue grew, a delivery returned (cap 1)

	mu         sync.Mutex
	queue      queue                    // events waiting for this sink
	running    int                      // deliveries running
	lastTry    time.Time                // start of the last delivery
	holdWait   time.Duration            // in an outage: least wait between probes, doubling to 1s
	holds      map[*inflight]*holdState // events held for this sink (see holdState)
	lastOutage error                    // the sink's latest outage answer
	lastSweep  time.Time                // last look for holds past MaxHold in the queue
	availSince time.Time                // in an outage: when it was first seen available again; zero until then
}

// available reports what the sink's breaker says (true without one).
func (s *sinkState) available() bool { return s.avail == nil || s.avail.Available() }

// isDown reports whether the sink is in an outage: intake pauses meanwhile.
// A sink with Availability is down exactly while it says so: its breaker or
// probe decides, and once it may be called again (an open breaker gone
// half-open) intake resumes, so that new events join the held ones behind
// the probe (an event the sink keeps failing, alone in its queue, must not
// keep intake paused). A sink without it is down while events wait for it
// and its latest answer was an outage; when its queue runs empty (the held
// events ended, however) it is not, so that new events probe it.
func (s *sinkState) isDown() bool {
	if s.avail != nil {
		return !s.avail.Available()
	}
	if !s.down.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.len() > 0 || s.running > 0
}

// up records an answer that is not an outage: the sink is not down.
func (s *sinkState) up() { s.down.Store(false) }

// limit is how many deliveries may run at once on the sink now.
func (s *sinkState) limit() int {
	if s.pacer != nil {
		return max(1, s.pacer.MaxInFlight())
	}
	return s.fixed
}

// enqueue adds t to the sink's queue.
func (s *sinkState) enqueue(t *inflight) {
	s.mu.Lock()
	s.queue.push(t)
	s.mu.Unlock()
	signal(s.wake)
}

// queued returns the number of events waiting for the sink.
func (s *sinkState) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queue.len()
}

// suspect reports whether the sink has tried t itself and answered with an
// outage (attempts of t's own, not a breaker that refused it untried): t may
// be the event that trips the sink's breaker. s.mu is held.
func (s *sinkState) suspect(t *inflight) bool {
	h := s.holds[t]
	return h != nil && h.attempts > 0
}

// start takes the next event from the queue to deliver it: the front, but a
// suspect at the front goes once to the back instead (once per outage
// answer, so that it waits one pass of the queue, never more), so that the
// event that keeps tripping the sink is neither the probe of an outage nor
// sent ahead of the events that came in while it was held. s.mu is held.
func (s *sinkState) start() *inflight {
	t := s.queue.pop()
	for s.queue.len() > 0 && s.suspect(t) && !s.holds[t].passed {
		s.holds[t].passed = true
		s.queue.push(t)
		t = s.queue.pop()
	}
	s.running++
	s.lastTry = time.Now()
	t.mu.Lock()
	t.started++
	t.mu.Unlock()
	return t
}
