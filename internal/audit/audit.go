package audit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"slices"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/consumer"
	"github.com/hackaverse/bhiv/internal/config"
	"github.com/hackaverse/bhiv/internal/corestub"
	"github.com/hackaverse/bhiv/sinks"
)

// Names of the places an event can be missing from, as found in Lost.Missing.
const (
	MissingCore   = sinks.CoreName   // "core"
	MissingBucket = sinks.BucketName // "bucket"
	MissingDecode = bhiv.SinkDecode  // "decode": invalid input without its failure record
)

// Config says where to look. JS is required; the other fields may be empty.
type Config struct {
	// JS reaches the stream.
	JS jetstream.JetStream
	// Stream is the stream name; default bhiv.DefaultStreamName.
	Stream string
	// Durable is the consumer's durable name, whose ack floor tells pending
	// from lost; "" judges every message as processed.
	Durable string
	// Decode must match the consumer's decode options (subject prefix, size
	// limit), so that bare events get the same derived ids.
	Decode bhiv.DecodeOptions
	// Bucket reads the bucket, files or S3 objects; when nil, BucketDir is
	// read.
	Bucket sinks.BucketReader
	// BucketDir is the Bucket sink's directory, read when Bucket is nil;
	// "" means an empty bucket.
	BucketDir string
	// FailureLog is the failure log's path (rotated files included); "" or a
	// missing file means an empty failure log.
	FailureLog string
	// CoreRecord is the core stub's record file (one JSON line {"id","kind"}
	// per event received). It is read after the consumer's ack floor, so it
	// is the right choice for a live system.
	CoreRecord string
	// CoreSeen is how many times Core received each event id, when the
	// caller knows it otherwise (ignored when CoreRecord is set). When both
	// are unset, what Core received is inferred: an event that the consumer
	// acked, that the bucket side accounts for and that has no Core failure
	// record was settled at Core.
	CoreSeen map[string]int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default: the
// stream bhiv.DefaultStreamName, a logger that discards.
func (c Config) WithDefaults() Config {
	config.Default(&c.Stream, bhiv.DefaultStreamName)
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.JS == nil {
		errs = append(errs, errors.New("audit: no JetStream context"))
	}
	if !bhiv.ValidStreamName(c.Stream) {
		errs = append(errs, fmt.Errorf("audit: stream name %q: use letters, digits, - and _ only", c.Stream))
	}
	if c.Durable != "" && !bhiv.ValidStreamName(c.Durable) {
		errs = append(errs, fmt.Errorf("audit: durable name %q: use letters, digits, - and _ only", c.Durable))
	}
	return errors.Join(errs...)
}

// failures indexes the failure log.
type failures struct {
	byID  map[string]map[string]bool // sink → event id
	bySeq map[string]map[uint64]bool // sink → stream seq
}

func (f *failures) add(sink string, id string, seq uint64) {
	if id != "" {
		if f.byID[sink] == nil {
			f.byID[sink] = map[string]bool{}
		}
		f.byID[sink][id] = true
	}
	if seq != 0 {
		if f.bySeq[sink] == nil {
			f.bySeq[sink] = map[uint64]bool{}
		}
		f.bySeq[sink][seq] = true
	}
}

// has reports whether a record of sink names the event id or one of seqs.
func (f *failures) has(sink, id string, seqs []uint64) bool {
	if id != "" && f.byID[sink][id] {
		return true
	}
	for _, s := range seqs {
		if f.bySeq[sink][s] {
			return true
		}
	}
	return false
}

// whole reports whether a record covers the message as a whole: the
// consumer's record of a message it could not fetch, or a decode record (the
// consumer found it invalid).
func (f *failures) whole(seqs []uint64) bool {
	return f.has(consumer.SinkConsumer, "", seqs) || f.has(bhiv.SinkDecode, "", seqs)
}

// anySeq reports whether any record names the stream seq.
func (f *failures) anySeq(seq uint64) bool {
	for _, m := range f.bySeq {
		if m[seq] {
			return true
		}
	}
	return false
}

// event is what the stream holds about one event id.
type event struct {
	id      string
	kind    bhiv.Kind
	seqs    []uint64
	paths   []string // bucket files (relative) its messages make
	pending bool     // a message with this id is above the ack floor
}

// horizon tells, from the durable's state, which messages the consumer may
// not have processed yet.
type horizon struct {
	floor     uint64 // the durable's ack floor,
	haveFloor bool   // when it still has work pending or ack-pending
	delivered uint64 // above it, never delivered yet
}

// pending reports whether the message at seq may still be pending: above
// the ack floor while the durable still has work, or not delivered yet at
// all (the durable may also be a moment behind a publish that just
// happened).
func (h horizon) pending(seq uint64) bool {
	return h.haveFloor && seq > h.floor || seq > h.delivered
}

// checker is one reconciliation: what Check has read so far, and the report
// it fills in.
type checker struct {
	cfg      Config
	r        *Report
	horizon  horizon
	failures *failures
	coreSeen map[string]int  // event id → receipts at Core; nil when unknown
	bucket   map[string]bool // the bucket's keys

	events    map[string]*event // by id
	order     []*event          // in stream order
	explained map[string]bool   // bucket keys some message makes
}

// Check reconciles the stream with Core, the bucket and the failure log.
//
// It reads, in this order, the durable's ack floor, the failure log, what
// Core received, the bucket and then the stream up to its last sequence at
// that time, so that on a live system whatever the consumer had acked when
// the check began is found where it belongs.
func Check(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, err
	}
	c := &checker{
		cfg:       cfg,
		r:         &Report{Stream: cfg.Stream, ByClass: map[string]int{}, Lost: []Lost{}, Unexplained: []string{}},
		horizon:   horizon{delivered: math.MaxUint64},
		failures:  &failures{byID: map[string]map[string]bool{}, bySeq: map[string]map[uint64]bool{}},
		bucket:    map[string]bool{},
		events:    map[string]*event{},
		explained: map[string]bool{},
	}
	for _, step := range []func(context.Context) error{c.readConsumer, c.readFailureLog, c.readCore, c.readBucket, c.readStream} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	c.judgeEvents()
	c.countCore()
	c.findUnexplained()
	return c.r, nil
}

// readConsumer reads the durable's state: above its ack floor, an
// unaccounted message may just be pending. A missing durable judges every
// message as processed.
func (c *checker) readConsumer(ctx context.Context) error {
	if c.cfg.Durable == "" {
		return nil
	}
	stream, durable := c.cfg.Stream, c.cfg.Durable
	st := &ConsumerState{Durable: durable}
	c.r.Consumer = st
	cons, err := retryTransient(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return c.cfg.JS.Consumer(ctx, stream, durable)
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c.cfg.Logger.Warn("audit: durable consumer not found; judging every message as processed", "stream", stream, "durable", durable)
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: stream %s, durable %s: %w", stream, durable, err)
	}
	info, err := retryTransient(ctx, cons.Info)
	if err != nil {
		return fmt.Errorf("audit: stream %s, durable %s: %w", stream, durable, err)
	}
	st.Found, st.AckFloor, st.NumPending, st.NumAckPending = true, info.AckFloor.Stream, info.NumPending, info.NumAckPending
	st.Delivered = info.Delivered.Stream
	// With nothing pending or ack-pending, every message was settled
	// (acked, terminated, or given up at max deliveries, which can leave
	// the ack floor behind): judge them all.
	c.horizon = horizon{floor: info.AckFloor.Stream, haveFloor: info.NumPending > 0 || info.NumAckPending > 0,
		delivered: info.Delivered.Stream}
	return nil
}

// readFailureLog indexes the failure log's records and counts them by sink
// and class; a missing log is an empty one.
func (c *checker) readFailureLog(context.Context) error {
	if c.cfg.FailureLog == "" {
		return nil
	}
	err := sinks.ReadFailureLog(c.cfg.FailureLog, c.cfg.Logger, func(rec bhiv.FailureRecord) error {
		c.r.FailureRecords++
		c.r.ByClass[rec.Sink+"/"+string(rec.ErrorClass)]++
		c.failures.add(rec.Sink, rec.EventID, rec.StreamSeq)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("audit: failure log: %w", err)
	}
	return nil
}

// readCore learns what Core received, from the core stub's record or
// CoreSeen; with neither, it stays unknown (and is inferred).
func (c *checker) readCore(context.Context) error {
	c.coreSeen = c.cfg.CoreSeen
	if c.cfg.CoreRecord != "" {
		var err error
		if c.coreSeen, err = ReadCoreRecord(c.cfg.CoreRecord); err != nil {
			return err
		}
	}
	c.r.CoreKnown = c.coreSeen != nil
	return nil
}

// readBucket lists the keys of the bucket's events.
func (c *checker) readBucket(ctx context.Context) error {
	reader := c.cfg.Bucket
	if reader == nil && c.cfg.BucketDir != "" {
		reader = sinks.NewDirReader(c.cfg.BucketDir)
	}
	if reader == nil {
		return nil
	}
	err := reader.List(ctx, func(key string) error {
		c.bucket[key] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit: bucket: %w", err)
	}
	return nil
}

// readStream reads every message of the stream: invalid input is judged at
// once, valid events are gathered by id to be judged by judgeEvents.
func (c *checker) readStream(ctx context.Context) error {
	if err := eachMessage(ctx, c.cfg.JS, c.cfg.Stream, c.r, c.message); err != nil {
		return err
	}
	c.r.Events = len(c.order)
	c.r.Published = c.r.Events + c.r.Invalid
	return nil
}

// message takes one message of the stream.
func (c *checker) message(m bhiv.Message) {
	c.r.StreamMessages++
	pending := c.horizon.pending(m.Sequence)
	ev, err := bhiv.Decode(m, c.cfg.Decode)
	if err != nil {
		c.judgeInvalid(m, pending)
		return
	}
	e := c.events[ev.ID]
	if e == nil {
		e = &event{id: ev.ID, kind: ev.Kind()}
		c.events[ev.ID] = e
		c.order = append(c.order, e)
	} else {
		c.r.RepeatedIDs++
	}
	e.seqs = append(e.seqs, m.Sequence)
	e.pending = e.pending || pending
	if p, ok := bucketPath(&ev); ok {
		e.paths = append(e.paths, p)
		c.explained[p] = true
	}
}

// judgeInvalid judges a message that is not a valid event: a failure
// record must name its sequence, unless it may still be pending.
func (c *checker) judgeInvalid(m bhiv.Message, pending bool) {
	c.r.Invalid++
	switch {
	case c.failures.anySeq(m.Sequence):
		c.r.InFailureLog++
	case pending:
		c.r.Pending++
	default:
		l := Lost{StreamSeq: m.Sequence, Missing: []string{MissingDecode}}
		if id := bhiv.HeaderValue(m.Header, bhiv.MsgIDHeader); bhiv.ValidID(id) {
			l.ID = id
		}
		if k, err := bhiv.KindFromSubject(c.cfg.Decode.SubjectPrefix, m.Subject); err == nil {
			l.Kind = k
		}
		c.r.Lost = append(c.r.Lost, l)
	}
}

// judgeEvents judges every valid event: it must be at Core and in the
// bucket, or have a failure record for the sink it is missing from, unless
// it may still be pending. The lost come out in stream order.
func (c *checker) judgeEvents() {
	r, fl := c.r, c.failures
	for _, e := range c.order {
		whole := fl.whole(e.seqs)
		coreRec := fl.has(MissingCore, e.id, e.seqs)
		bucketRec := fl.has(MissingBucket, e.id, e.seqs)
		if whole || coreRec || bucketRec {
			r.InFailureLog++
		}
		inBucket := slices.ContainsFunc(e.paths, func(p string) bool { return c.bucket[p] })
		if inBucket {
			r.InBucket++
		}
		bucketOK := inBucket || bucketRec || whole
		var missing []string
		if c.coreSeen != nil {
			if c.coreSeen[e.id] > 0 {
				r.AtCore++
			} else if !coreRec && !whole {
				missing = append(missing, MissingCore)
			}
		} else if bucketOK && !coreRec && !whole && !e.pending {
			r.AtCore++ // acked, so the consumer settled Core, and not as a failure
		}
		if !bucketOK {
			missing = append(missing, MissingBucket)
		}
		switch {
		case len(missing) == 0:
		case e.pending:
			r.Pending++
		default:
			r.Lost = append(r.Lost, Lost{ID: e.id, Kind: e.kind, StreamSeq: e.seqs[0], Missing: missing})
		}
	}
	sort.Slice(r.Lost, func(i, j int) bool { return r.Lost[i].StreamSeq < r.Lost[j].StreamSeq })
}

// countCore counts Core's repeated receipts, and the events it received
// that the stream does not hold.
func (c *checker) countCore() {
	for id, n := range c.coreSeen {
		if n <= 0 {
			continue
		}
		c.r.CoreDuplicates += n - 1
		if c.events[id] == nil {
			c.r.CoreOther++
		}
	}
}

// findUnexplained lists the bucket keys no message of the stream explains.
func (c *checker) findUnexplained() {
	for p := range c.bucket {
		if !c.explained[p] {
			c.r.Unexplained = append(c.r.Unexplained, p)
		}
	}
	sort.Strings(c.r.Unexplained)
	if len(c.r.Unexplained) > 0 && c.r.FirstSeq > 1 {
		c.cfg.Logger.Warn("audit: the stream no longer holds its first messages; bucket files of events that aged out count as unexplained",
			"first_seq", c.r.FirstSeq, "unexplained", len(c.r.Unexplained))
	}
}

// bucketPath is where the Bucket sink keeps ev, relative to the bucket's
// root (sinks.EventKey), and false when it cannot keep it.
func bucketPath(ev *bhiv.Event) (string, bool) {
	key, err := sinks.EventKey(ev)
	return key, err == nil
}

// ReadCoreRecord reads the core stub's record file into id → receipts. A
// torn last line is skipped.
func ReadCoreRecord(path string) (map[string]int, error) {
	seen := map[string]int{}
	if err := corestub.ReadRecords(path, func(r corestub.Record) { seen[r.ID]++ }); err != nil {
		return nil, fmt.Errorf("audit: core record: %w", err)
	}
	return seen, nil
}
