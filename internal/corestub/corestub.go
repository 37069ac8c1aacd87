package corestub

import (
	"bufio"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/hackaverse/bhiv/internal/config"
)

// Path is where the stub takes events; Path+"/stats" reports what it has
// and Path+"/faults" reads (GET) or changes (PUT) the injected faults.
const Path = "/bhiv/core"

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

func (s *Stub) count(fn func(*Stats)) {
	s.mu.Lock()
	fn(&s.stats)
	s.mu.Unlock()
}
