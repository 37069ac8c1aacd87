package s3test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Credentials the tests use. gofakes3 does not check signatures: a
// credential is refused only by the Denied fault.
const (
	AccessKey = "bhiv-test"
	SecretKey = "bhiv-test-secret"
	Region    = "us-east-1"
)

// Fault is what the server does to the requests it fails.
type Fault int

// The faults.
const (
	None     Fault = iota
	Hang           // hold the request until the faults change or the server closes
	Slow           // answer after Faults.Delay
	SlowDown       // 503 SlowDown, with the S3 XML error body
	Internal       // 500 InternalError
	Denied         // 403 AccessDenied
	NoBucket       // 404 NoSuchBucket
	Invalid        // 400 InvalidArgument: about this request alone
	Reset          // close the connection without answering
)

// errorAnswer is an S3 error answer: the status, the error code and the
// message.
type errorAnswer struct {
	status        int
	code, message string
}

// errorAnswers are the answers of the faults that answer with an S3 error.
var errorAnswers = map[Fault]errorAnswer{
	SlowDown: {http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate."},
	Internal: {http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again."},
	Denied:   {http.StatusForbidden, "AccessDenied", "Access Denied"},
	NoBucket: {http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist"},
	Invalid:  {http.StatusBadRequest, "InvalidArgument", "Invalid argument"},
}

// Faults says which requests fail and how.
type Faults struct {
	Kind  Fault
	Delay time.Duration // for Slow
	// Count, when above 0, fails only the next Count matching requests.
	Count int
	// Methods, when set, limits the fault to requests of these methods.
	Methods []string
}

// Conditional is how the server treats If-None-Match on a PUT.
type Conditional int

// The ways of a store with conditional writes.
const (
	Honour Conditional = iota // as S3 and MinIO: 412 PreconditionFailed when the key exists
	Ignore                    // as an old store: the header is ignored, the PUT replaces
	Refuse                    // 501 NotImplemented
)

// Server is a running S3-compatible server.
type Server struct {
	// URL is the endpoint, http://127.0.0.1:<port>.
	URL  string
	addr string
	// Backend holds the objects.
	Backend *s3mem.Backend
	handler http.Handler

	mu      sync.Mutex
	faults  Faults
	left    int           // requests still to fail when faults.Count > 0
	release chan struct{} // closed when the faults change: hung requests go on
	cond    Conditional
	srv     *http.Server

	requests atomic.Int64
	injected atomic.Int64
	puts     atomic.Int64
}

// Start starts a server with the given buckets and stops it when the test
// ends.
func Start(tb testing.TB, buckets ...string) *Server {
	tb.Helper()
	s, err := New("127.0.0.1:0", buckets...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// New starts a server listening on addr with the given buckets.
func New(addr string, buckets ...string) (*Server, error) {
	backend := s3mem.New()
	for _, b := range buckets {
		if err := backend.CreateBucket(b); err != nil {
			return nil, fmt.Errorf("s3test: create bucket %s: %w", b, err)
		}
	}
	s := &Server{Backend: backend, release: make(chan struct{})}
	s.handler = gofakes3.New(backend, gofakes3.WithIntegrityCheck(true)).Server()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("s3test: %w", err)
	}
	s.addr = ln.Addr().String()
	s.URL = "http://" + s.addr
	s.serve(ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Set changes the faults; requests hung by the previous ones go on.
func (s *Server) Set(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults, s.left = f, f.Count
	close(s.release)
	s.release = make(chan struct{})
}

// SetConditional changes how PUTs with If-None-Match are treated.
func (s *Server) SetConditional(c Conditional) {
	s.mu.Lock()
	s.cond = c
	s.mu.Unlock()
}

// Requests returns how many requests the server received; Injected how
// many of them it failed on purpose; Puts how many object PUTs it took.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Injected returns how many requests were failed on purpose.
func (s *Server) Injected() int64 { return s.injected.Load() }

// Puts returns how many object PUTs reached the store.
func (s *Server) Puts() int64 { return s.puts.Load() }

// Stop closes the listener and every connection: clients get connection
// refused until Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Restart listens again on the same address, with the same objects.
func (s *Server) Restart() error {
	var ln net.Listener
	var err error
	for range 50 { // the port may take a moment to be free again
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			s.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("s3test: listen again on %s: %w", s.addr, err)
}

// Close stops the server for good.
func (s *Server) Close() {
	s.Set(Faults{}) // let hung requests go
	s.Stop()
}

// Object returns the bytes stored under key in bucket.
func (s *Server) Object(bucket, key string) ([]byte, error) {
	obj, err := s.Backend.GetObject(bucket, key, nil)
	if err != nil {
		return nil, err
	}
	defer obj.Contents.Close()
	return io.ReadAll(obj.Contents)
}

// Keys returns the keys in bucket under prefix.
func (s *Server) Keys(bucket, prefix string) ([]string, error) {
	res, err := s.Backend.ListBucket(bucket, &gofakes3.Prefix{HasPrefix: true, Prefix: prefix}, gofakes3.ListBucketPage{})
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, o := range res.Contents {
		keys = append(keys, o.Key)
	}
	return keys, nil
}

// take reports whether r is to fail and how, counting it against Count.
func (s *Server) take(r *http.Request) (Faults, <-chan struct{}, Conditional) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	if f.Kind == None || (len(f.Methods) > 0 && !slices.Contains(f.Methods, r.Method)) {
		return Faults{}, nil, s.cond
	}
	if f.Count > 0 {
		if s.left <= 0 {
			return Faults{}, nil, s.cond
		}
		s.left--
	}
	return f, s.release, s.cond
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	f, release, cond := s.take(r)
	if f.Kind != None {
		s.injected.Add(1)
	}
	switch f.Kind {
	case Hang:
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
	case Slow:
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
	case SlowDown, Internal, Denied, NoBucket, Invalid:
		e := errorAnswers[f.Kind]
		writeError(w, r, e.status, e.code, e.message)
		return
	case Reset:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST, not FIN
				}
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if r.Method == http.MethodPut && r.Header.Get("If-None-Match") != "" {
		switch cond {
		case Ignore:
			r.Header.Del("If-None-Match")
		case Refuse:
			writeError(w, r, http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented")
			return
		}
	}
	if r.Method == http.MethodPut {
		s.puts.Add(1)
	}
	s.handler.ServeHTTP(w, r)
}

// writeError answers as S3 does: the status, and for every method but
// HEAD an XML error body.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("x-amz-request-id", "s3test")
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>s3test</RequestId></Error>`,
		code, msg, r.URL.Path)
}

// Put stores data under key in bucket directly, as another writer would.
func (s *Server) Put(bucket, key string, data []byte) error {
	_, err := s.Backend.PutObject(bucket, key, map[string]string{}, bytes.NewReader(data), int64(len(data)), nil)
	return err
}
