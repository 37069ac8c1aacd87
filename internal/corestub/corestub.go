// Package corestub is a small stand-in for BHIV Core, used by `bhiv
// core-stub`, `bhiv dev`, `bhiv bench` and the tests. It stores the events it
// receives (deduplicated by Idempotency-Key and event id), checks the bearer
// token when one is set, and injects faults on request.
package corestub

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
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
}

// Config configures a Stub.
type Config struct {
	Token  string // bearer token required when set
	Faults Faults
	// RecordPath, when set, is a file to which the stub appends one JSON line
	// per event it accepts ({"id","kind","time"}), so that what Core received
	// survives a stub restart.
	RecordPath string
	Logger     *slog.Logger
	// Now, if set, replaces time.Now (tests).
	Now func() time.Time
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
}

// New returns a Stub.
func New(cfg Config) (*Stub, error) {
	s := &Stub{cfg: cfg, log: cfg.Logger, faults: cfg.Faults, seen: make(map[string]int)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.stats.ByKind = map[string]int64{}
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

// Record is one line of the record file.
type Record struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

func (s *Stub) loadRecord(path string) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("core stub: read record: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.ID == "" {
			continue // a torn last line
		}
		s.seen[r.ID]++
		s.stats.Events++
		if s.seen[r.ID] == 1 {
			s.stats.Unique++
			s.stats.ByKind[r.Kind]++
		} else {
			s.stats.Duplicates++
		}
	}
	return sc.Err()
}

// ServeHTTP serves the stub's routes.
func (s *Stub) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetFaults replaces the injected faults.
func (s *Stub) SetFaults(f Faults) {
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
	return st
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

type inEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

func (s *Stub) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.Requests++
	f := s.faults
	s.mu.Unlock()

	if s.cfg.Token != "" {
		want := "Bearer " + s.cfg.Token
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
			s.count(func(st *Stats) { st.Unauthorized++ })
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
	}
	if f.Latency > 0 && (f.LatencyRate <= 0 || rand.Float64() < f.LatencyRate) {
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			return
		}
	}
	if f.FailRate > 0 && rand.Float64() < f.FailRate {
		status := f.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		s.count(func(st *Stats) { st.Injected++ })
		http.Error(w, "injected failure", status)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var events []inEvent
	if len(body) > 0 && body[0] == '[' {
		err = json.Unmarshal(body, &events)
	} else {
		var one inEvent
		err = json.Unmarshal(body, &one)
		events = []inEvent{one}
	}
	if err != nil || len(events) == 0 {
		s.count(func(st *Stats) { st.BadRequests++ })
		http.Error(w, "body is not a CloudEvents JSON object or array", http.StatusBadRequest)
		return
	}
	for _, e := range events {
		if e.ID == "" {
			s.count(func(st *Stats) { st.BadRequests++ })
			http.Error(w, "event without id", http.StatusBadRequest)
			return
		}
	}
	dups := 0
	s.mu.Lock()
	for _, e := range events {
		s.seen[e.ID]++
		s.stats.Events++
		if s.seen[e.ID] == 1 {
			s.stats.Unique++
			s.stats.ByKind[e.Type]++
		} else {
			s.stats.Duplicates++
			dups++
		}
		if s.recBuf != nil {
			line, _ := json.Marshal(Record{ID: e.ID, Kind: e.Type})
			s.recBuf.Write(line)
			s.recBuf.WriteByte('\n')
		}
	}
	var recErr error
	if s.recBuf != nil {
		recErr = s.recBuf.Flush()
	}
	s.mu.Unlock()
	if recErr != nil {
		http.Error(w, "record: "+recErr.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if dups > 0 {
		w.Header().Set("X-Duplicates", strconv.Itoa(dups))
	}
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `{"accepted":%d,"duplicates":%d}`+"\n", len(events), dups)
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
	if f.FailRate < 0 || f.FailRate > 1 || f.LatencyRate < 0 || f.LatencyRate > 1 {
		http.Error(w, "faults: rates must be within 0..1", http.StatusBadRequest)
		return
	}
	s.SetFaults(f)
	s.log.Warn("core stub faults changed", "fail_rate", f.FailRate, "status", f.Status, "latency", f.Latency, "retry_after", f.RetryAfter)
	w.WriteHeader(http.StatusNoContent)
}
