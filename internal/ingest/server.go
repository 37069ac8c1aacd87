package ingest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lmittmann/tint"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hackaverse/bhiv"
	"github.com/hackaverse/bhiv/internal/config"
)

// Paths served.
const (
	EventsPath = "/events/" // POST /events/{kind}
	CorePath   = "/bhiv/core"
)

// Answer is the JSON body of every answer to a POST.
type Answer struct {
	// IDs are the ids JetStream acked, in request order, duplicates
	// included: these events are stored. Never null; empty when nothing
	// was stored.
	IDs []string `json:"ids"`
	// Duplicates are the ids among IDs that the stream already held
	// (a retry within its Duplicates window): stored once, not again.
	Duplicates []string `json:"duplicates,omitempty"`
	// NotStored are the ids of a 503 or 500 answer that JetStream did not
	// ack. Retrying the whole request is safe: the ids in IDs come back
	// as duplicates.
	NotStored []string `json:"not_stored,omitempty"`
	// Error says what went wrong, for a person; Reason is short and stable,
	// for a program (such as "missing team id", "too large").
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Invalid lists every invalid event of a refused batch.
	Invalid []InvalidEvent `json:"invalid,omitempty"`
}

// InvalidEvent is one invalid event of a batch.
type InvalidEvent struct {
	Index  int    `json:"index"` // its place in the batch, from 0
	ID     string `json:"id,omitempty"`
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// Server takes events over HTTP and publishes them to JetStream. It is an
// http.Handler; Serve runs it on a listener with the configured timeouts.
type Server struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	m    *metrics
	mux  *http.ServeMux
	auth []byte // "Bearer <token>", or nil

	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// New returns a server that publishes on nc. The connection should
// reconnect forever (nats.MaxReconnects(-1)); the server does not close it.
func New(nc *nats.Conn, cfg Config) (*Server, error) {
	if nc == nil {
		return nil, errors.New("ingest: nats connection is nil")
	}
	cfg, err := config.Ready(cfg)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	// Async publishes let a batch go out at once; every one of them settles
	// (acked, refused or timed out) within PublishTimeout.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("ingest: jetstream: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	s := &Server{cfg: cfg, nc: nc, js: js, log: cfg.Logger, m: m, mux: http.NewServeMux()}
	if cfg.Token != "" {
		s.auth = []byte("Bearer " + cfg.Token)
	}
	s.mux.HandleFunc(EventsPath+"{kind}", func(w http.ResponseWriter, r *http.Request) {
		kind, err := bhiv.ParseKind(r.PathValue("kind"))
		if err != nil {
			s.answer(w, http.StatusNotFound, Answer{Reason: "not found",
				Error: fmt.Sprintf("no such endpoint %s: POST events to %sexecution or %sreward", r.URL.Path, EventsPath, EventsPath)})
			return
		}
		s.handlePost(w, r, kind)
	})
	s.mux.HandleFunc(CorePath, func(w http.ResponseWriter, r *http.Request) { s.handlePost(w, r, "") })
	s.mux.HandleFunc("/healthz", s.handleHealth)
	s.mux.HandleFunc("/readyz", s.handleReady)
	if cfg.Metrics != nil {
		s.mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			if s.getOnly(w, r) {
				cfg.Metrics.ServeHTTP(w, r)
			}
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.answer(w, http.StatusNotFound, Answer{Reason: "not found",
			Error: fmt.Sprintf("no such endpoint %s: POST events to %s{execution,reward} or %s", r.URL.Path, EventsPath, CorePath)})
	})
	return s, nil
}

// route is the path label of the request metrics: one of the served paths,
// or "other".
func route(path string) string {
	switch path {
	case EventsPath + string(bhiv.KindExecution), EventsPath + string(bhiv.KindReward), CorePath, "/healthz", "/readyz", "/metrics":
		return path
	}
	return "other"
}

// ServeHTTP serves the ingest endpoints, /healthz and /readyz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	s.mux.ServeHTTP(sw, r)
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	s.m.observe(route(r.URL.Path), sw.code, time.Since(start))
}

// statusWriter records the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// getOnly answers 405 to anything but GET and HEAD, and reports whether
// the request is one of those.
func (s *Server) getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	s.answer(w, http.StatusMethodNotAllowed, Answer{Reason: "method not allowed", Error: r.Method + " " + r.URL.Path + ": use GET"})
	return false
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !s.getOnly(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !s.getOnly(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready: "+err.Error()+"\n")
		return
	}
	io.WriteString(w, "ready\n")
}

// Ready reports whether the server can take events: NATS is connected and
// the stream answers.
func (s *Server) Ready(ctx context.Context) error {
	if !s.nc.IsConnected() {
		return fmt.Errorf("nats is %s", strings.ToLower(s.nc.Status().String()))
	}
	if _, err := s.js.Stream(ctx, s.cfg.Stream.Name); err != nil {
		return fmt.Errorf("stream %s: %w", s.cfg.Stream.Name, err)
	}
	return nil
}

// authorized reports whether the request carries the bearer token, compared
// in constant time.
func (s *Server) authorized(r *http.Request) bool {
	if s.auth == nil {
		return true
	}
	got := r.Header.Get("Authorization")
	// The scheme is case-insensitive (RFC 9110 §11.1).
	if len(got) > 7 && strings.EqualFold(got[:7], "Bearer ") {
		got = "Bearer " + got[7:]
	}
	return subtle.ConstantTimeCompare([]byte(got), s.auth) == 1
}

// handlePost takes the events of one POST; kind is the route's, or "" for
// /bhiv/core (each event's own).
func (s *Server) handlePost(w http.ResponseWriter, r *http.Request, kind bhiv.Kind) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.answer(w, http.StatusMethodNotAllowed, Answer{Reason: "method not allowed", Error: r.Method + " " + r.URL.Path + ": events are POSTed"})
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bhiv ingest"`)
		msg := "missing bearer token: send Authorization: Bearer <token>"
		if r.Header.Get("Authorization") != "" {
			msg = "wrong bearer token"
		}
		s.answer(w, http.StatusUnauthorized, Answer{Reason: reasonUnauthorized, Error: msg})
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		s.problem(w, &problem{status: http.StatusUnsupportedMediaType, reason: reasonMediaType,
			msg: fmt.Sprintf("Content-Encoding %q is not supported: send the body uncompressed", ce)})
		return
	}
	md, p := modeOf(r.Header)
	if p != nil {
		s.problem(w, p)
		return
	}
	body, p := s.readBody(w, r)
	if p != nil {
		s.problem(w, p)
		return
	}
	evs, p := s.decodeRequest(r.Header, kind, md, body)
	if p != nil {
		s.m.invalid.Add(float64(max(1, len(p.invalid))))
		s.problem(w, p)
		return
	}
	s.publishAndAnswer(w, r, md, evs)
}

// readBody reads the body within MaxBodyBytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *problem) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := func(n string) *problem {
		return &problem{status: http.StatusRequestEntityTooLarge, reason: reasonTooLarge,
			msg: fmt.Sprintf("the body is %s bytes, limit %d", n, limit)}
	}
	if r.ContentLength > limit {
		return nil, tooLarge(strconv.FormatInt(r.ContentLength, 10))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge("over " + strconv.FormatInt(limit, 10))
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, &problem{status: http.StatusRequestTimeout, reason: "timeout",
				msg: fmt.Sprintf("the body did not arrive within the read timeout (%s)", s.cfg.ReadTimeout)}
		}
		return nil, badRequest(reasonBadRequest, "reading the body: %v", err)
	}
	return body, nil
}

// publishAndAnswer publishes evs and answers 202 once JetStream acked every
// one, else 503 (or 500) saying which were stored.
func (s *Server) publishAndAnswer(w http.ResponseWriter, r *http.Request, md mode, evs []event) {
	a := Answer{IDs: make([]string, 0, len(evs))}
	if len(evs) > 0 && !s.nc.IsConnected() {
		for _, ev := range evs {
			a.NotStored = append(a.NotStored, ev.id)
			s.m.events.WithLabelValues(string(ev.kind), outcomeNotStored).Inc()
		}
		a.Reason, a.Error = reasonUnavailable, fmt.Sprintf("NATS is %s: nothing was stored; retry later", strings.ToLower(s.nc.Status().String()))
		s.unavailable(w, r, a, nil)
		return
	}
	results := s.publish(evs)
	status := http.StatusAccepted
	var firstErr error
	for i, res := range results {
		ev := evs[i]
		switch {
		case res.err != nil:
			a.NotStored = append(a.NotStored, ev.id)
			s.m.events.WithLabelValues(string(ev.kind), outcomeNotStored).Inc()
			if firstErr == nil {
				firstErr = res.err
			}
			if st := classifyPublish(res.err); st > status {
				status = st
			}
		case res.dup:
			a.IDs = append(a.IDs, ev.id)
			a.Duplicates = append(a.Duplicates, ev.id)
			s.m.events.WithLabelValues(string(ev.kind), outcomeDuplicate).Inc()
		default:
			a.IDs = append(a.IDs, ev.id)
			s.m.events.WithLabelValues(string(ev.kind), outcomeStored).Inc()
		}
	}
	if firstErr == nil {
		s.log.Debug("ingest: stored", "mode", md.String(), "events", len(evs), "duplicates", len(a.Duplicates))
		s.answer(w, http.StatusAccepted, a)
		return
	}
	a.Error = fmt.Sprintf("JetStream did not take %d of %d events: %v", len(a.NotStored), len(evs), firstErr)
	if len(a.IDs) > 0 {
		a.Error += fmt.Sprintf(" (%d stored, listed in ids; retrying the whole request is safe)", len(a.IDs))
	} else {
		a.Error += " (nothing was stored)"
	}
	switch status {
	case http.StatusServiceUnavailable:
		a.Reason = reasonUnavailable
		s.unavailable(w, r, a, firstErr)
	case http.StatusRequestEntityTooLarge:
		a.Reason = reasonTooLarge
		s.answer(w, status, a)
	default:
		a.Reason = reasonFailed
		s.warn(r, status, firstErr)
		s.answer(w, status, a)
	}
}

// unavailable answers 503 with Retry-After.
func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, a Answer, err error) {
	if err == nil {
		err = errors.New(a.Error)
	}
	s.warn(r, http.StatusServiceUnavailable, err)
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(s.cfg.RetryAfter.Seconds()))))
	s.answer(w, http.StatusServiceUnavailable, a)
}

// warn logs a 5xx answer: the first at once, then at most one line every 10
// seconds saying how many more there were, so that an outage does not flood
// the log.
func (s *Server) warn(r *http.Request, status int, err error) {
	s.warnMu.Lock()
	now := time.Now()
	if now.Sub(s.lastWarn) < 10*time.Second {
		s.suppressed++
		s.warnMu.Unlock()
		return
	}
	more := s.suppressed
	s.lastWarn, s.suppressed = now, 0
	s.warnMu.Unlock()
	s.log.Warn("ingest: events not stored", "status", status, "path", r.URL.Path, "more_since_last_warning", more, tint.Err(err))
}

func (s *Server) problem(w http.ResponseWriter, p *problem) {
	s.answer(w, p.status, Answer{Reason: p.reason, Error: p.msg, Invalid: p.invalid})
}

// answer writes a as JSON with the status.
func (s *Server) answer(w http.ResponseWriter, status int, a Answer) {
	if a.IDs == nil {
		a.IDs = []string{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "<token>", not "\u003ctoken\u003e": the answer is JSON, not HTML
	if err := enc.Encode(a); err != nil {
		b.Reset()
		b.WriteString(`{"ids":[],"error":"encoding the answer failed"}` + "\n")
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// accepting connections and lets requests in flight finish (they wait for
// their acks) within ShutdownTimeout. Without a token on an address other
// hosts can reach, it warns at start.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.Token == "" && !loopback(ln.Addr()) {
		s.log.Warn("ingest: NO AUTHENTICATION: no bearer token is configured and the server listens on an address other hosts can reach; anyone who reaches it can publish events",
			"addr", ln.Addr().String())
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("ingest: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("ingest: %w", serr)
	}
	if err != nil {
		srv.Close()
		return fmt.Errorf("ingest: shutdown: %w", err)
	}
	return nil
}

// loopback reports whether addr is a loopback address.
func loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
