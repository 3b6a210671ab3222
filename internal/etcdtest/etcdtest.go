// Package etcdtest starts a real, single-member etcd server (the etcd server's own embed
// package) for tests, so that the store suite and the chaos test run against etcd on a
// machine with nothing but Go.
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	_ "a.meshkit.dev/protoconflict" // before etcd's and libp2p's protos: see the package

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options tune the server; the zero value is etcd's defaults but for MaxTxnOps.
type Options struct {
	// MaxTxnOps bounds the operations of one transaction (etcd's default is 128; the seed
	// commits an apply of many resources in one). 0 means 20,000.
	MaxTxnOps uint
	// MaxRequestBytes bounds one request; 0 means etcd's default (1.5 MiB).
	MaxRequestBytes uint
	// TLS, when set, serves clients over TLS and requires a client certificate signed by
	// TLS.TrustedCAFile (the files are the caller's).
	TLS *transport.TLSInfo
}

// Server is a running etcd.
type Server struct {
	Etcd     *embed.Etcd
	Endpoint string // http://127.0.0.1:PORT
	cfg      *embed.Config
}

func freePort(tb testing.TB) url.URL {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// Start runs etcd in dir until the test ends.
func Start(tb testing.TB, dir string, opts Options) *Server {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "fatal" // its shutdown logs errors about closed listeners
	cfg.MaxTxnOps = opts.MaxTxnOps
	if cfg.MaxTxnOps == 0 {
		cfg.MaxTxnOps = 20000
	}
	if opts.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = opts.MaxRequestBytes
	}
	client, peer := freePort(tb), freePort(tb)
	if opts.TLS != nil {
		client.Scheme = "https"
		cfg.ClientTLSInfo = *opts.TLS
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s := &Server{Endpoint: client.String(), cfg: cfg}
	s.start(tb)
	tb.Cleanup(func() {
		if s.Etcd != nil {
			s.Etcd.Close()
		}
	})
	return s
}

func (s *Server) start(tb testing.TB) {
	tb.Helper()
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		tb.Fatalf("etcdtest: start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		tb.Fatal("etcdtest: etcd did not become ready in 30 s")
	}
	s.Etcd = e
}

// Stop stops the server; its data stays for Restart.
func (s *Server) Stop() {
	s.Etcd.Close()
	s.Etcd = nil
}

// Restart starts a stopped server again, on its data and at its addresses.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.cfg.ClusterState = embed.ClusterStateFlagExisting
	s.start(tb)
}

// Client returns a client of s, closed when the test ends.
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}
