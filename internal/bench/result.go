package bench

import (
	"slices"
	"time"
)

// Result is what a run measured.
type Result struct {
	// LoadAverage is the machine's 1-minute load average when the run
	// started: these figures mean little on a busy machine.
	LoadAverage float64 `json:"load_average"`
	// MachineBusy is the share of the machine's CPUs that were busy while
	// the consumer ran (from its start to the end of the run; /proc/stat),
	// and OtherCPU the CPU, in cores, used meanwhile outside the bench's
	// and the consumer's processes: other processes, and kernel threads and
	// interrupts, some of them on the pipeline's behalf (writeback, loopback
	// networking). On a shared machine, a run with OtherCPU near a core is
	// not comparable with one near 0. The load average measures others less
	// well: the previous run's own writers still weigh on it.
	MachineBusy float64 `json:"machine_busy"`
	OtherCPU    float64 `json:"other_cpu"`
	// KernelCPU is the part of OtherCPU that kernel threads and interrupts
	// used; the rest is other processes'.
	KernelCPU float64 `json:"kernel_cpu"`
	// BenchCPUPerEvent is the CPU microseconds per event this process
	// used over the same time: with the consumer in its own process, that
	// is the embedded NATS server, the core stub and the publisher.
	BenchCPUPerEvent float64 `json:"bench_cpu_per_event_us"`
	Events           int     `json:"events"`
	PublishSeconds   float64 `json:"publish_seconds"`
	PublishRate      float64 `json:"publish_rate"`    // events/s
	EndToEndRate     float64 `json:"end_to_end_rate"` // events/s, first publish → last ack
	// CoreLatency is publish → accepted by Core (embedded only: the core
	// stub reads the publish time carried in the event).
	CoreLatency *Latency `json:"latency_core,omitempty"`
	// CoreAccepted counts the run's events the core stub accepted
	// (embedded; a redelivered event counts again), and CoreRate is
	// CoreAccepted per second from the first publish to the last
	// acceptance. CoreBound is what the stub can take,
	// capacity / latency, when both are set; CoreMaxQueued the most
	// requests that waited for a slot at once.
	CoreAccepted  int     `json:"core_accepted"`
	CoreRate      float64 `json:"core_rate"`
	CoreBound     float64 `json:"core_bound,omitempty"`
	CoreMaxQueued int64   `json:"core_max_queued"`
	// CoreLimit is Core's concurrency limit while the consumer ran,
	// sampled every 50 ms in-process, every 500 ms from the consumer
	// process's /metrics (embedded only).
	CoreLimit *LimitStats `json:"core_limit,omitempty"`
	// BucketLag is publish → the event's file renamed into the bucket
	// (embedded; read from the file's ctime after the run), to
	// BucketLagTick: the kernel takes file times from a coarse clock, so
	// each reads up to one tick early.
	BucketLag     *Latency      `json:"latency_bucket,omitempty"`
	BucketLagTick time.Duration `json:"latency_bucket_tick,omitempty"`
	// AckLatency is publish → the durable's ack floor passing the event,
	// observed by polling the consumer info (an upper bound, coarse to the
	// poll interval; exact only when the bench is the stream's only
	// publisher during the run).
	AckLatency *Latency `json:"latency_ack,omitempty"`
	// OtherMessages counts messages others published on the stream during
	// the run (they make AckLatency approximate).
	OtherMessages  int   `json:"other_messages"`
	FailureRecords int   `json:"failure_records"` // embedded only
	PeakRSSBytes   int64 `json:"peak_rss_bytes"`  // of the bench process
	// Consumer is what the consumer process used (Config.ConsumerProcess).
	Consumer *ProcessStats `json:"consumer,omitempty"`
	// Profiles are the files of Config.ConsumerProfile.
	Profiles []string `json:"consumer_profiles,omitempty"`
	// Parts are the bare parts (Config.Parts), measured before the run.
	Parts []PartResult `json:"parts,omitempty"`
	// Hold is what the consumer did during Config.Hold.
	Hold     *HoldResult        `json:"hold,omitempty"`
	Ceilings map[string]float64 `json:"ceilings,omitempty"` // events/s of the bare parts, before the run
	// CeilingsAfter holds the file ceilings measured again after the run
	// (embedded only): the disk's pace drifts, and the pipeline ran between
	// the two.
	CeilingsAfter map[string]float64 `json:"ceilings_after,omitempty"`
}

// ProcessStats is what the consumer process used from the moment it was
// ready (its durable existed) to the end of the run: every event acked, or
// the end of the hold.
type ProcessStats struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPerEvent is CPU microseconds per event of the run (per event
	// taken in, with Config.Hold).
	CPUPerEvent  float64 `json:"cpu_per_event_us"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"` // VmHWM, start-up included
	RSSBytes     int64   `json:"rss_bytes"`      // VmRSS at the end
}

// HoldResult is what the consumer did while held (Config.Hold).
type HoldResult struct {
	Seconds float64 `json:"seconds"`
	// TakenIn counts the events delivered to the consumer; AckPending
	// those not acked at the end.
	TakenIn    int `json:"taken_in"`
	AckPending int `json:"ack_pending"`
	// PausedSeconds is how long no new event had been delivered at the
	// end of the hold (intake paused, or MaxAckPending reached).
	PausedSeconds float64 `json:"paused_seconds"`
}

// CPURatio returns the consumer's CPU per event over the sum of the bare
// parts', or 0 when either was not measured.
func (r *Result) CPURatio() float64 {
	sum := r.PartsCPUPerEvent()
	if r.Consumer == nil || sum == 0 {
		return 0
	}
	return r.Consumer.CPUPerEvent / sum
}

// PartsCPUPerEvent returns the sum of the bare parts' CPU per event, in
// microseconds.
func (r *Result) PartsCPUPerEvent() float64 {
	sum := 0.0
	for _, p := range r.Parts {
		sum += p.CPUPerEvent
	}
	return sum
}

// Latency holds percentiles of a latency, in nanoseconds in JSON.
type Latency struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P90   time.Duration `json:"p90"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// Ceiling returns the ceiling called name: for the file ceilings measured before
// and after the run, the mean of the two; 0 when not measured.
func (r *Result) Ceiling(name string) float64 {
	if after, ok := r.CeilingsAfter[name]; ok {
		return (r.Ceilings[name] + after) / 2
	}
	return r.Ceilings[name]
}

// The ceilings measured with Config.Ceilings.
const (
	CeilingPublish     = "jetstream_publish_async"
	CeilingConsume     = "jetstream_consume_ack"
	CeilingHTTP        = "http_post"
	CeilingFiles       = "file_temp_rename"
	CeilingFilesFsync  = "file_temp_fsync_rename"
	CeilingFilesSyncfs = "file_temp_rename_grouped_syncfs"
)

func percentiles(d []time.Duration) *Latency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return &Latency{Count: len(d), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}
