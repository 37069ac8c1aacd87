package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/config"
)

// Config configures a run.
type Config struct {
	Events      int           // events to publish (default 10,000 when Duration is 0)
	Duration    time.Duration // publish for this long instead of a count
	Rate        float64       // events per second; 0 = as fast as possible
	Size        int           // approximate bytes of each event's data (default 256)
	Mix         Mix           // kinds published; zero = 70% executions, 30% rewards
	Concurrency int           // the embedded consumer's BHIV_CONCURRENCY (the Bucket's deliveries at once), default 256
	Ceilings    bool          // also measure the ceilings of the parts

	// MaxAckPending is the durable's BHIV_MAX_ACK_PENDING (embedded): how
	// far the Bucket may run ahead of a slow Core; 0 = the consumer's
	// default.
	MaxAckPending int

	// The embedded core stub: the latency of each request (varied
	// uniformly within ± CoreLatencyJitter), the requests it serves at once
	// (CoreCapacity, 0 = no limit; the others queue), and CoreDown: it
	// answers 503 to every event. Core's own concurrency is adaptive
	// (BHIV_CORE_CONCURRENCY=auto).
	CoreLatency       time.Duration
	CoreLatencyJitter time.Duration
	CoreCapacity      int
	CoreDown          bool

	// Preload publishes every event before the consumer starts: a backlog
	// (embedded). Rates then count from the consumer's start.
	Preload bool
	// Hold runs the consumer, once it has started, until its intake has
	// stopped (no new delivery) for HoldQuiet, or for Hold at the longest,
	// instead of waiting until it acked every event, and reports what it
	// took in (Result.Hold); for a Core that is down (embedded).
	Hold time.Duration

	// ConsumerProcess runs the consumer as its own process (embedded):
	// ConsumerCmd (`bhiv consume`), with the settings of the embedded stack
	// in its environment and ConsumerEnv after them. Its CPU time and peak
	// RSS are then measured alone (Result.Consumer).
	ConsumerProcess bool
	ConsumerCmd     []string
	ConsumerEnv     []string
	// ConsumerProfile, when set, takes CPU profiles of the consumer process
	// from its admin server (BHIV_ADMIN_PPROF) over the run, back to back,
	// into ConsumerProfile-NN.pprof (read them together with `go tool pprof
	// FILE-*.pprof`), and a heap profile at the end into
	// ConsumerProfile-heap.pprof.
	ConsumerProfile string

	// Parts measures the CPU per event of the bare parts (embedded), each
	// in a process started with PartCmd and PartEnv set: consume+ack,
	// HTTP POST, files with grouped syncfs.
	Parts   bool
	PartCmd []string

	// Embedded runs the whole stack in-process in Dir (a temporary
	// directory when empty): NATS, the core stub, the consumer with Core,
	// Bucket (durable) and the failure log. Otherwise NATSURL is a running
	// stack's NATS, and Stream/Durable name its stream and consumer.
	Embedded bool
	Dir      string
	NATSURL  string
	NATSOpts []nats.Option
	Stream   string
	Durable  string

	// Progress, when set, is called now and then with the events published
	// and acked so far, and the events to publish (0 when publishing for a
	// duration).
	Progress func(published, acked, total int)
	Logger   *slog.Logger
}

// Mix is the relative weight of each kind of event published.
type Mix struct {
	Execution float64 `json:"execution"`
	Reward    float64 `json:"reward"`
}

// DefaultMix is 70% executions, 30% rewards.
var DefaultMix = Mix{Execution: 0.7, Reward: 0.3}

// ParseMix parses "execution=0.7,reward=0.3" (weights, not necessarily
// summing to 1; a kind left out weighs 0).
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || err != nil || w < 0 {
			return Mix{}, fmt.Errorf("mix %q: want kind=weight pairs such as execution=0.7,reward=0.3", s)
		}
		switch bhiv.Kind(strings.TrimSpace(k)) {
		case bhiv.KindExecution:
			m.Execution = w
		case bhiv.KindReward:
			m.Reward = w
		default:
			return Mix{}, fmt.Errorf("mix %q: unknown kind %q (want execution or reward)", s, k)
		}
	}
	if m.Execution+m.Reward <= 0 {
		return Mix{}, fmt.Errorf("mix %q: weights add up to 0", s)
	}
	return m, nil
}

// executionShare returns the share of executions.
func (m Mix) executionShare() float64 { return m.Execution / (m.Execution + m.Reward) }

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Events == 0 && c.Duration == 0 {
		c.Events = 10_000
	}
	config.Default(&c.Size, 256)
	config.Default(&c.Mix, DefaultMix)
	config.Default(&c.Concurrency, consumer.DefaultConcurrency)
	config.Default(&c.Stream, bhiv.DefaultStreamName)
	config.Default(&c.Durable, consumer.DefaultDurable)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Events < 0 || c.Duration < 0 || c.Rate < 0 || c.Size < 0 || c.CoreLatency < 0 || c.CoreLatencyJitter < 0 ||
		c.CoreCapacity < 0 || c.Concurrency < 0 || c.MaxAckPending < 0 || c.Hold < 0 {
		errs = append(errs, errors.New("events, duration, rate, size, concurrency, max ack pending, hold and the core stub's latency, jitter and capacity must not be negative"))
	}
	if c.Mix.Execution < 0 || c.Mix.Reward < 0 || c.Mix != (Mix{}) && c.Mix.Execution+c.Mix.Reward <= 0 {
		errs = append(errs, fmt.Errorf("mix %+v: want weights ≥ 0, not all 0", c.Mix))
	}
	if !c.Embedded && c.NATSURL == "" {
		errs = append(errs, errors.New("give a NATS URL, or run --embedded"))
	}
	if !c.Embedded && (c.CoreLatency > 0 || c.CoreLatencyJitter > 0 || c.CoreCapacity > 0 || c.CoreDown) {
		errs = append(errs, errors.New("core latency, jitter, capacity and down are settings of the embedded core stub: use them with --embedded"))
	}
	if !c.Embedded && (c.ConsumerProcess || c.Parts || c.Preload || c.Hold > 0 || c.MaxAckPending > 0) {
		errs = append(errs, errors.New("the consumer process, the parts, preload, hold and max ack pending need the embedded stack: use them with --embedded"))
	}
	if c.ConsumerProcess && len(c.ConsumerCmd) == 0 {
		errs = append(errs, errors.New("a consumer process needs the command that runs `bhiv consume`"))
	}
	if c.ConsumerProfile != "" && !c.ConsumerProcess {
		errs = append(errs, errors.New("a consumer profile needs the consumer in its own process"))
	}
	if c.Parts && len(c.PartCmd) == 0 {
		errs = append(errs, errors.New("the parts need the command that runs a part process"))
	}
	if c.CoreDown && c.Hold == 0 {
		errs = append(errs, errors.New("with Core down nothing is ever acked: give a hold time"))
	}
	if c.CoreDown && (c.Ceilings || c.Parts) {
		errs = append(errs, errors.New("with Core down there is no HTTP ceiling or part to measure: leave out ceilings and parts"))
	}
	return errors.Join(errs...)
}
