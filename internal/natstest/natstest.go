package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded nats-server with JetStream on. It is shut down when
// the test ends.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// Option adjusts the server options before the server starts.
type Option func(*server.Options)

// Start starts a JetStream server on 127.0.0.1 and a random port, with its
// store under t.TempDir().
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := server.Options{
		ServerName: "test",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{t: t, opts: o}
	s.start()
	t.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := server.NewServer(&s.opts)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("natstest: server not ready")
	}
	s.srv = srv
	// Keep the port across restarts.
	if s.opts.Port == -1 {
		s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
}

// URL returns the client URL, nats://127.0.0.1:PORT.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port) }

// StoreDir returns the JetStream store directory given to the server.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// Server returns the running server.
func (s *Server) Server() *server.Server { return s.srv }

// Shutdown stops the server and waits until it is down. It is safe to call
// more than once.
func (s *Server) Shutdown() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart shuts the server down and starts it again on the same port with
// the same store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.start()
}

// Connect returns a connection to the server and its JetStream context; the
// connection is closed when the test ends.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	s.t.Helper()
	nc, err := nats.Connect(s.URL(), opts...)
	if err != nil {
		s.t.Fatalf("natstest: connect: %v", err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Cluster is an in-process JetStream cluster of three nodes.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts a 3-node JetStream cluster on 127.0.0.1 and waits for
// a meta leader that sees all three peers.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	const n = 3
	routePorts := make([]int, n)
	for i := range routePorts {
		routePorts[i] = freePort(t)
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		i := i
		c.Nodes = append(c.Nodes, Start(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Cluster = server.ClusterOpts{Name: "bhiv-test", Host: "127.0.0.1", Port: routePorts[i]}
			o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}))
	}
	// Wait for a meta leader that sees every peer, so that the first R3
	// stream finds room for its replicas.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.Nodes {
			if s.srv != nil && s.srv.JetStreamIsLeader() && len(s.srv.JetStreamClusterPeers()) == n {
				return c
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("natstest: no JetStream meta leader with %d peers after 30s", n)
	return nil
}

// URL returns a client URL list with every live node.
func (c *Cluster) URL() string {
	var urls []string
	for _, s := range c.Nodes {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
