package ingest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hackaverse/bhiv"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serving runs Serve on addr and returns the listener's address, the log
// and a stop function that cancels the context and returns Serve's error.
func serving(t *testing.T, f *fixture, cfg Config, addr string) (string, *syncBuffer, func() error) {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(f.nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Serve did not return after its context ended")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "127.0.0.1:" + port, logs, stop
}

// TestServeWarnsWithoutToken: without a token, Serve warns loudly when
// other hosts can reach it, and only then.
func TestServeWarnsWithoutToken(t *testing.T) {
	f := newFixture(t, Config{})
	for _, tt := range []struct {
		name, addr, token string
		warn              bool
	}{
		{"loopback, no token", "127.0.0.1:0", "", false},
		{"all interfaces, no token", "0.0.0.0:0", "", true},
		{"all interfaces, token", "0.0.0.0:0", "t0ken", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, logs, stop := serving(t, f, Config{Token: tt.token}, tt.addr)
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if err := stop(); err != nil {
				t.Errorf("Serve: %v", err)
			}
			if got := strings.Contains(logs.String(), "NO AUTHENTICATION"); got != tt.warn {
				t.Errorf("warned %v, want %v; logs:\n%s", got, tt.warn, logs)
			}
		})
	}
}

// TestServeGracefulShutdown: a request being sent when the context ends is
// still read, published and answered 202; new connections are refused; and
// Serve returns nil.
func TestServeGracefulShutdown(t *testing.T) {
	f := newFixture(t, Config{})
	addr, _, stop := serving(t, f, Config{}, "127.0.0.1:0")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"team_id":"t1","action":"in flight"}`
	fmt.Fprintf(conn, "POST /events/execution HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: inflight-1\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	time.Sleep(100 * time.Millisecond) // the server is reading the body
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(200 * time.Millisecond) // shutdown has begun
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted during shutdown")
	}
	io.WriteString(conn, body[10:])
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the request in flight: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 || !strings.Contains(string(b), "inflight-1") {
		t.Errorf("request in flight: %d %s", resp.StatusCode, b)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, ok := f.stored()["inflight-1"]; !ok {
		t.Errorf("the request in flight is not stored")
	}
}

// TestServeTimeouts: a client that sends its headers or its body too slowly
// is cut off (ReadHeaderTimeout, ReadTimeout) and nothing is stored.
func TestServeTimeouts(t *testing.T) {
	f := newFixture(t, Config{})
	addr, _, _ := serving(t, f, Config{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond}, "127.0.0.1:0")
	for _, tt := range []struct{ name, send, status string }{
		// net/http closes the connection without an answer.
		{"headers never end", "POST /events/execution HTTP/1.1\r\nHost: x\r\n", ""},
		{"body never ends", "POST /events/execution HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"team_id\":", "HTTP/1.1 408 Request Timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, tt.send)
			start := time.Now()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := io.ReadAll(conn) // until the server closes the connection
			if err != nil {
				t.Fatalf("the server kept the connection open: %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("cut off after %s", d)
			}
			if status, _, _ := strings.Cut(string(rest), "\r\n"); status != tt.status {
				t.Errorf("answered %q, want %q", rest, tt.status)
			}
		})
	}
	if n := f.count(); n != 0 {
		t.Errorf("stored %d", n)
	}
}

// TestConfigValidate checks the settings a server refuses.
func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // "" : valid
	}{
		{"defaults", Config{}, ""},
		{"write timeout not above publish timeout", Config{WriteTimeout: time.Second, PublishTimeout: 2 * time.Second}, "write timeout"},
		{"negative publish timeout", Config{PublishTimeout: -1}, "publish timeout"},
		{"negative body limit", Config{MaxBodyBytes: -1}, "max body bytes"},
		{"bad stream name", Config{Stream: bhiv.StreamConfig{Name: "bad name"}}, "stream name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	d := Config{ReadTimeout: time.Minute, PublishTimeout: 20 * time.Second}.WithDefaults()
	if d.WriteTimeout <= d.ReadTimeout+d.PublishTimeout || d.ReadHeaderTimeout > d.ReadTimeout || d.ShutdownTimeout <= d.PublishTimeout {
		t.Errorf("defaults %+v: the write timeout must outlast reading and publishing, shutdown the publish timeout", d)
	}
}
