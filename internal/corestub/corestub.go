// Package corestub is a small stand-in for BHIV Core, used by `bhiv
// core-stub`, `bhiv dev`, `bhiv bench` and the tests. It takes events in the
// three content modes of the CloudEvents HTTP binding (binary, structured
// and batched, told apart by Content-Type as the binding's §3 says), counts
// them (deduplicated by event id) and the requests of each mode, records
// each event as the same envelope whichever mode it came in, checks the
// bearer token when one is set, and injects faults on request.
package corestub

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/cehttp"
	"github.com/hackaverse/bhiv/internal/config"
)

// Path is where the stub takes events; Path+"/stats" reports what it has
// and Path+"/faults" reads (GET) or changes (PUT) the injected faults.
const Path = "/bhiv/core"

// Faults are the failures the stub injects.
type Faults struct {
	FailRate    float64       `json:"fail_rate"`    // share of requests answered with Status (0..1)
	Status      int           `json:"status"`       // status of failed requests; default 503
	RetryAfter  string        `json:"retry_after"`  // Retry-After header sent with failures, if set
	Latency     time.Duration `json:"latency"`      // delay added to requests
	LatencyRate float64       `json:"latency_rate"` // share of requests delayed; 0 means all when Latency is set
	// LatencyJitter varies each delay uniformly within Latency ± LatencyJitter
	// (a delay that would fall below 0 is 0).
	LatencyJitter time.Duration `json:"latency_jitter"`
}

// Config configures a Stub.
type Config struct {
	Token  string // bearer token required when set
	Faults Faults
	// Capacity, when above 0, is how many requests the stub serves at once
	// (the delay of Faults included); the others wait in a first-in,
	// first-out queue of unbounded length, as in front of a server with
	// Capacity workers.
	Capacity int
	// RecordPath, when set, is a file to which the stub appends one JSON line
	// per event it accepts ({"id","kind","time"}), so that what Core received
	// survives a stub restart.
	RecordPath string
	// KeepEvents keeps every accepted event in memory, for Received
	// (tests).
	KeepEvents bool
	// Logger receives the fault changes; nil discards.
	Logger *slog.Logger
}

// WithDefaults returns f with every zero field set to its default: Status
// 503.
func (f Faults) WithDefaults() Faults {
	config.Default(&f.Status, http.StatusServiceUnavailable)
	return f
}

// Validate checks f after defaults and returns every problem found.
func (f Faults) Validate() error {
	f = f.WithDefaults()
	var errs []error
	if f.FailRate < 0 || f.FailRate > 1 {
		errs = append(errs, fmt.Errorf("fail rate %v: want 0 to 1", f.FailRate))
	}
	if f.LatencyRate < 0 || f.LatencyRate > 1 {
		errs = append(errs, fmt.Errorf("latency rate %v: want 0 to 1", f.LatencyRate))
	}
	if f.Latency < 0 || f.LatencyJitter < 0 {
		errs = append(errs, fmt.Errorf("latency %s and latency jitter %s: must not be negative", f.Latency, f.LatencyJitter))
	}
	if f.Status < 100 || f.Status > 599 {
		errs = append(errs, fmt.Errorf("status %d: not an HTTP status", f.Status))
	}
	return errors.Join(errs...)
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Faults = c.Faults.WithDefaults()
	c.Logger = config.Logger(c.Logger)
	return c
}

// Validate checks c after defaults and returns every problem found.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Capacity < 0 {
		errs = append(errs, fmt.Errorf("capacity %d: want 0 (no limit) or more", c.Capacity))
	}
	if err := c.Faults.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Stats is what GET /bhiv/core/stats returns.
type Stats struct {
	Requests     int64            `json:"requests"`
	Events       int64            `json:"events"`
	Unique       int64            `json:"unique"`
	Duplicates   int64            `json:"duplicates"`
	Injected     int64            `json:"injected_failures"`
	Unauthorized int64            `json:"unauthorized"`
	BadRequests  int64            `json:"bad_requests"`
	ByKind       map[string]int64 `json:"by_kind"`
	// ByMode counts the accepted requests by content mode: "binary",
	// "structured" or "batched".
	ByMode map[string]int64 `json:"by_mode"`
	// Serving and Queued are the requests being served and waiting for a
	// slot now (with Config.Capacity); MaxQueued is the most that waited
	// at once.
	Serving   int64 `json:"serving"`
	Queued    int64 `json:"queued"`
	MaxQueued int64 `json:"max_queued"`
}

// Stub is the Core stand-in; it is an http.Handler.
type Stub struct {
	cfg    Config
	log    *slog.Logger
	mux    *http.ServeMux
	mu     sync.Mutex
	faults Faults
	seen   map[string]int // event id → times received
	stats  Stats
	rec    *os.File
	recBuf *bufio.Writer
	kept   []Record
	slots  chan struct{} // one per request served at once (Capacity), nil when unlimited
}

// New returns a Stub, with what cfg.RecordPath holds already counted.
func New(cfg Config) (*Stub, error) {
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, fmt.Errorf("core stub: %w", err)
	}
	s := &Stub{cfg: cfg, log: cfg.Logger, faults: cfg.Faults, seen: make(map[string]int)}
	s.stats.ByKind = map[string]int64{}
	s.stats.ByMode = map[string]int64{}
	if cfg.Capacity > 0 {
		s.slots = make(chan struct{}, cfg.Capacity)
	}
	if cfg.RecordPath != "" {
		if err := s.loadRecord(cfg.RecordPath); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(cfg.RecordPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("core stub: open record: %w", err)
		}
		s.rec = f
		s.recBuf = bufio.NewWriter(f)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST "+Path, s.handleEvents)
	s.mux.HandleFunc("GET "+Path+"/stats", s.handleStats)
	s.mux.HandleFunc("GET "+Path+"/faults", s.handleGetFaults)
	s.mux.HandleFunc("PUT "+Path+"/faults", s.handlePutFaults)
	return s, nil
}

// Record is one line of the record file: an accepted event, the content
// mode of the request that carried it, and its envelope in the JSON event
// format, encoded the same way whichever mode it came in.
type Record struct {
	ID    string          `json:"id"`
	Kind  string          `json:"kind"`
	Mode  string          `json:"mode,omitempty"`
	Event json.RawMessage `json:"event,omitempty"`
}

// ReadRecords calls fn with every record of the record file at path, in
// order; a line that is not a record (a torn last line) is skipped.
func ReadRecords(path string, fn func(Record)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ID == "" {
			continue
		}
		fn(r)
	}
	return sc.Err()
}

// loadRecord counts the events the record file at path holds, as if they
// had just been received; a missing file holds none.
func (s *Stub) loadRecord(path string) error {
	err := ReadRecords(path, func(r Record) { s.note(r) })
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("core stub: read record: %w", err)
	}
	return nil
}

// note counts one received event and reports whether its id was seen
// before. The caller holds s.mu (or has s to itself).
func (s *Stub) note(r Record) (dup bool) {
	s.seen[r.ID]++
	s.stats.Events++
	if s.seen[r.ID] > 1 {
		s.stats.Duplicates++
		return true
	}
	s.stats.Unique++
	s.stats.ByKind[r.Kind]++
	return false
}

// ServeHTTP serves the stub's routes.
func (s *Stub) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetFaults replaces the injected faults (with their defaults).
func (s *Stub) SetFaults(f Faults) {
	f = f.WithDefaults()
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Stats returns a copy of the counters.
func (s *Stub) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByKind = make(map[string]int64, len(s.stats.ByKind))
	for k, v := range s.stats.ByKind {
		st.ByKind[k] = v
	}
	st.ByMode = make(map[string]int64, len(s.stats.ByMode))
	for k, v := range s.stats.ByMode {
		st.ByMode[k] = v
	}
	return st
}

// Received returns every event accepted so far, in order of arrival, when
// Config.KeepEvents is set.
func (s *Stub) Received() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.kept...)
}

// Seen returns how many times each event id was received.
func (s *Stub) Seen() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.seen))
	for k, v := range s.seen {
		m[k] = v
	}
	return m
}

// Close flushes and closes the record file.
func (s *Stub) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec == nil {
		return nil
	}
	err := s.recBuf.Flush()
	if cerr := s.rec.Close(); err == nil {
		err = cerr
	}
	s.rec = nil
	return err
}

// handleEvents takes the events of one request: it checks the token,
// injects the faults, parses the body in whichever content mode it comes,
// then counts and records the events and answers with what it accepted.
func (s *Stub) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.count(func(st *Stats) { st.Requests++ })
	if !s.acquire(r) {
		return // the client went away while queued
	}
	defer s.release()
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	if !s.authorized(w, r) || !hold(r, f) || s.injectFailure(w, f) {
		return
	}
	mode, recs, ok := s.readEvents(w, r)
	if !ok {
		return
	}
	dups, err := s.store(mode, recs)
	if err != nil {
		http.Error(w, "record: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if dups > 0 {
		w.Header().Set("X-Duplicates", strconv.Itoa(dups))
	}
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `{"accepted":%d,"duplicates":%d,"mode":%q}`+"\n", len(recs), dups, mode)
}

// authorized checks the bearer token, when the stub has one, and answers
// 401 when it is missing or wrong.
func (s *Stub) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	want := "Bearer " + s.cfg.Token
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) == 1 {
		return true
	}
	s.count(func(st *Stats) { st.Unauthorized++ })
	http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
	return false
}

// hold delays the request as f says; it returns false when the client went
// away meanwhile.
func hold(r *http.Request, f Faults) bool {
	d := f.delay()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// injectFailure answers the share f.FailRate of requests with f.Status and
// reports whether it answered.
func (s *Stub) injectFailure(w http.ResponseWriter, f Faults) bool {
	if f.FailRate <= 0 || rand.Float64() >= f.FailRate {
		return false
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	s.count(func(st *Stats) { st.Injected++ })
	http.Error(w, "injected failure", f.Status)
	return true
}

// readEvents reads and parses the request's events, each as the record it
// makes; on a bad request it answers 400 (415 for a media type the stub does
// not take) and returns false.
func (s *Stub) readEvents(w http.ResponseWriter, r *http.Request) (mode string, recs []Record, ok bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return "", nil, false
	}
	mode, events, err := Parse(r.Header, body)
	if err != nil {
		s.count(func(st *Stats) { st.BadRequests++ })
		status := http.StatusBadRequest
		var ue unsupportedError
		if errors.As(err, &ue) {
			status = http.StatusUnsupportedMediaType
		}
		http.Error(w, err.Error(), status)
		return "", nil, false
	}
	recs = make([]Record, len(events))
	for i := range events {
		env, err := events[i].MarshalJSON()
		if err != nil {
			s.count(func(st *Stats) { st.BadRequests++ })
			http.Error(w, fmt.Sprintf("event %s: %v", events[i].ID, err), http.StatusBadRequest)
			return "", nil, false
		}
		recs[i] = Record{ID: events[i].ID, Kind: events[i].Type, Mode: mode, Event: env}
	}
	return mode, recs, true
}

// store counts the records of one request, keeps them when asked to and
// appends them to the record file, flushed; it returns how many were
// duplicates.
func (s *Stub) store(mode string, recs []Record) (dups int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.ByMode[mode]++
	for _, rec := range recs {
		if s.note(rec) {
			dups++
		}
		if s.cfg.KeepEvents {
			s.kept = append(s.kept, rec)
		}
		if s.recBuf != nil {
			line, _ := json.Marshal(rec)
			s.recBuf.Write(line)
			s.recBuf.WriteByte('\n')
		}
	}
	if s.recBuf != nil {
		err = s.recBuf.Flush()
	}
	return dups, err
}

// The content modes, as Parse names them.
const (
	ModeBinary     = "binary"
	ModeStructured = "structured"
	ModeBatched    = "batched"
)

// unsupportedError is a request whose media type the stub does not take
// (415).
type unsupportedError struct{ msg string }

func (e unsupportedError) Error() string { return e.msg }

// Parse reads the events of a request in any of the three content modes of
// the CloudEvents HTTP binding, picked by Content-Type (§3): a type that
// starts with "application/cloudevents-batch" is batched mode (a JSON array
// of envelopes, §3.3), one that starts with "application/cloudevents" is
// structured mode (one envelope, §3.2), anything else is binary mode (the
// body is the data, Content-Type its datacontenttype, every other attribute
// a ce- header, §3.1). Header values are decoded as §3.1.3.2 says: a quoted
// string unquoted, then one round of percent-decoding, invalid UTF-8
// rejected. The events are valid bhiv envelopes.
func Parse(h http.Header, body []byte) (mode string, events []bhiv.Event, err error) {
	ct := h.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case strings.HasPrefix(mt, "application/cloudevents-batch"):
		if mt != "application/cloudevents-batch+json" {
			return ModeBatched, nil, unsupportedError{fmt.Sprintf("batch format %q is not supported: use application/cloudevents-batch+json", mt)}
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return ModeBatched, nil, fmt.Errorf("batched mode: body is not a JSON array: %w", err)
		}
		for i, raw := range raws {
			ev, err := parseEnvelope(raw)
			if err != nil {
				return ModeBatched, nil, fmt.Errorf("batched mode: event %d: %w", i, err)
			}
			events = append(events, ev)
		}
		return ModeBatched, events, nil
	case strings.HasPrefix(mt, "application/cloudevents"):
		if mt != "application/cloudevents+json" {
			return ModeStructured, nil, unsupportedError{fmt.Sprintf("event format %q is not supported: use application/cloudevents+json", mt)}
		}
		ev, err := parseEnvelope(body)
		if err != nil {
			return ModeStructured, nil, fmt.Errorf("structured mode: %w", err)
		}
		return ModeStructured, []bhiv.Event{ev}, nil
	}
	ev, err := parseBinary(h, body)
	if err != nil {
		return ModeBinary, nil, fmt.Errorf("binary mode: %w", err)
	}
	return ModeBinary, []bhiv.Event{ev}, nil
}

// parseEnvelope reads one envelope in the JSON event format.
func parseEnvelope(b []byte) (bhiv.Event, error) {
	var ev bhiv.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return bhiv.Event{}, fmt.Errorf("not a CloudEvents JSON envelope: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return bhiv.Event{}, err
	}
	return ev, nil
}

// binaryAttrs are the attributes binary mode carries in ce- headers that
// have their own field in bhiv.Event.
var binaryAttrs = map[string]bool{"specversion": true, "id": true, "source": true, "type": true, "time": true, "subject": true}

// parseBinary reads a binary-mode event.
func parseBinary(h http.Header, body []byte) (bhiv.Event, error) {
	if _, ok := h["Ce-Datacontenttype"]; ok {
		return bhiv.Event{}, errors.New("a ce-datacontenttype header must not be sent: Content-Type carries it (HTTP binding §3.1.1)")
	}
	attr := map[string]string{}
	var ext map[string]json.RawMessage
	for k, vs := range h {
		if len(k) < 4 || !strings.EqualFold(k[:3], "ce-") || len(vs) == 0 {
			continue
		}
		name := strings.ToLower(k[3:])
		v, err := cehttp.HeaderValue(vs[0])
		if err != nil {
			return bhiv.Event{}, fmt.Errorf("header %s: %w", k, err)
		}
		if binaryAttrs[name] {
			attr[name] = v
			continue
		}
		q, _ := json.Marshal(v)
		if ext == nil {
			ext = map[string]json.RawMessage{}
		}
		ext[name] = q
	}
	for _, name := range []string{"specversion", "id", "source", "type"} {
		if attr[name] == "" {
			return bhiv.Event{}, fmt.Errorf("not a CloudEvent: no ce-%s header (a binary-mode event needs ce-specversion, ce-id, ce-source and ce-type)", name)
		}
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		return bhiv.Event{}, errors.New("no Content-Type: binary mode carries the datacontenttype there")
	}
	if !json.Valid(body) {
		return bhiv.Event{}, unsupportedError{fmt.Sprintf("body is not JSON (Content-Type %q): bhiv data is a JSON object", ct)}
	}
	ev := bhiv.Event{
		SpecVersion: attr["specversion"], ID: attr["id"], Source: attr["source"], Type: attr["type"],
		Subject: attr["subject"], DataContentType: ct, Data: body, Extensions: ext,
	}
	if ts := attr["time"]; ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return bhiv.Event{}, fmt.Errorf("ce-time %q is not RFC 3339", ts)
		}
		ev.Time = t.UTC()
	}
	if err := ev.Validate(); err != nil {
		return bhiv.Event{}, err
	}
	return ev, nil
}

// acquire waits for a slot when the stub has a capacity. Goroutines
// blocked sending on a channel are served in the order they came, so the
// queue is first-in, first-out. It returns false if the client went away
// first.
func (s *Stub) acquire(r *http.Request) bool {
	if s.slots == nil {
		s.count(func(st *Stats) { st.Serving++ })
		return true
	}
	select {
	case s.slots <- struct{}{}:
		s.count(func(st *Stats) { st.Serving++ })
		return true
	default:
	}
	s.count(func(st *Stats) {
		st.Queued++
		st.MaxQueued = max(st.MaxQueued, st.Queued)
	})
	select {
	case s.slots <- struct{}{}:
		s.count(func(st *Stats) { st.Queued--; st.Serving++ })
		return true
	case <-r.Context().Done():
		s.count(func(st *Stats) { st.Queued-- })
		return false
	}
}

// release frees the slot taken by acquire.
func (s *Stub) release() {
	s.count(func(st *Stats) { st.Serving-- })
	if s.slots != nil {
		<-s.slots
	}
}

// delay returns how long a request is held before its answer: Latency for
// the share LatencyRate of requests (all when 0), varied uniformly within
// ± LatencyJitter and never below 0.
func (f Faults) delay() time.Duration {
	if f.Latency <= 0 && f.LatencyJitter <= 0 {
		return 0
	}
	if f.LatencyRate > 0 && rand.Float64() >= f.LatencyRate {
		return 0
	}
	d := f.Latency
	if f.LatencyJitter > 0 {
		d += time.Duration((2*rand.Float64() - 1) * float64(f.LatencyJitter))
	}
	return max(d, 0)
}

func (s *Stub) count(fn func(*Stats)) {
	s.mu.Lock()
	fn(&s.stats)
	s.mu.Unlock()
}

func (s *Stub) handleStats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.Stats())
}

func (s *Stub) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(f)
}

func (s *Stub) handlePutFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&f); err != nil {
		http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
		return
	}
	f = f.WithDefaults()
	if err := f.Validate(); err != nil {
		http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.SetFaults(f)
	s.log.Warn("core stub faults changed", "fail_rate", f.FailRate, "status", f.Status, "latency", f.Latency,
		"latency_jitter", f.LatencyJitter, "retry_after", f.RetryAfter)
	w.WriteHeader(http.StatusNoContent)
}
