package corestub

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

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
