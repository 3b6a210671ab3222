package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/p2p"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/election"
	"meshkit.dev/meshkit/seed/etcdstore"
)

// etcdClient connects to etcd, over TLS when a CA or a client certificate is given.
func etcdClient(endpoints []string, caPath, certPath, keyPath string) (*clientv3.Client, error) {
	var eps []string
	for _, e := range endpoints {
		for _, p := range strings.Split(e, ",") {
			if p = strings.TrimSpace(p); p != "" {
				eps = append(eps, p)
			}
		}
	}
	if len(eps) == 0 {
		return nil, usagef("--store etcd needs --etcd-endpoints")
	}
	cfg := clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
		Logger: zap.NewNop(), MaxCallRecvMsgSize: 256 << 20}
	if caPath != "" || certPath != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if caPath != "" {
			pem, err := os.ReadFile(caPath)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s holds no PEM certificates", caPath)
			}
		}
		if certPath != "" {
			cert, err := tls.LoadX509KeyPair(certPath, keyPath)
			if err != nil {
				return nil, fmt.Errorf("etcd client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return cli, nil
}

// haConfig is what a seed of a domain on etcd runs with.
type haConfig struct {
	seed         seed.Config // Store and Epoch are set per term
	store        *etcdstore.Store
	client       *clientv3.Client
	id           string
	advertise    string
	ttl          time.Duration
	serve        seed.ServeConfig
	peerID       *seed.PeerIdentity
	requireCerts bool
	node         *p2p.Node // nil without p2p
	log          *slog.Logger
}

// runHA campaigns for the domain's leadership until ctx ends. While it follows, the admin
// addresses redirect to the leader and serve the leadership stream; each won term runs a
// seed whose epoch is the term and whose every commit is fenced on it, until the term ends.
func (a *app) runHA(ctx context.Context, h haConfig) error {
	el, err := election.New(election.Config{
		Client: h.client, Prefix: etcdstore.ElectionPrefix(h.seed.Domain), Scope: h.seed.Domain,
		Self: election.Info{ID: h.id, Admin: h.advertise, HTTP: h.serve.HTTPAddr}, TTL: h.ttl, Logger: h.log,
	})
	if err != nil {
		return err
	}
	defer el.Close()
	h.seed.Leadership = func() *adminv1.Leadership { return leadershipOf(el, h.id) }
	services := func(stop <-chan struct{}) func(*grpc.Server) {
		return (&election.Service{E: el, Stop: stop}).Register
	}
	fmt.Fprintf(a.stdout, "seed %q of domain %q on etcd: campaigning for leadership; admin gRPC on %s and HTTP on %s\n", h.id, h.seed.Domain, h.serve.GRPCAddr, h.serve.HTTPAddr)
	var view atomic.Pointer[seed.Seed]
	for {
		stop := make(chan struct{})
		fol, err := seed.ServeFollower(seed.FollowerConfig{
			View:     view.Load,
			GRPCAddr: h.serve.GRPCAddr, HTTPAddr: h.serve.HTTPAddr, Policy: h.serve.Policy, TLS: h.serve.TLS, Logger: h.log,
			Leader: func() (string, string, bool) {
				tok, ok, _ := el.Leader()
				return tok.LeaderID, tok.Admin, ok
			},
			Services: services(stop), Registry: roleRegistry(false, 0), OCI: h.serve.Registry,
		})
		if err != nil {
			return err
		}
		mctx, stopMirror := context.WithCancel(ctx)
		mirrored := make(chan struct{})
		go func() { defer close(mirrored); follow(mctx, h, &view) }()
		var term *election.Term
		select {
		case term = <-el.Terms():
		case <-ctx.Done():
		}
		stopMirror()
		<-mirrored
		close(stop)
		fol.Close()
		if term == nil {
			return nil
		}
		if err := a.leadTerm(ctx, h, term, services); err != nil {
			h.log.Error("the term ended in error; stepping down", "term", term.Rev, "err", err)
			rctx, cancel := context.WithTimeout(context.Background(), h.ttl)
			_ = term.Resign(rctx)
			cancel()
			// Another seed may lead meanwhile; if this one is elected again at once and
			// fails the same way, it does so once a second, not in a tight loop.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// leadTerm runs the seed for one term: loaded from etcd, publishing at epoch term.Rev,
// every commit fenced on the leader key, until the term or ctx ends.
func (a *app) leadTerm(ctx context.Context, h haConfig, term *election.Term, services func(<-chan struct{}) func(*grpc.Server)) error {
	cfg := h.seed
	cfg.Epoch = uint64(term.Rev)
	cfg.Store = h.store.Fenced(term.Key, term.Rev)
	cfg.Registry = roleRegistry(true, term.Rev)
	termCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-term.Done():
			cancel()
		case <-termCtx.Done():
		}
	}()
	diverged := make(chan error, 1)
	cfg.OnDiverged = func(err error) { // another seed wrote, or this term ended: step down
		select {
		case diverged <- err:
		default:
		}
		cancel()
	}
	started := time.Now()
	s, err := seed.New(termCtx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	h.peerID.Attach(s)
	defer h.peerID.Attach(nil) // after the term, identity calls are told to retry (at the leader)
	if h.requireCerts && h.node != nil {
		done := make(chan struct{})
		go func() { defer close(done); h.peerID.Run(termCtx, h.node) }()
		defer func() { cancel(); <-done }()
	}
	sc := h.serve
	if sc.TLS != nil && sc.TLS.ClientCAs != nil {
		sc.TLS = sc.TLS.Clone()
		sc.TLS.VerifyPeerCertificate = s.VerifyClientCertificate // the domain may have revoked a client
	}
	stop := make(chan struct{})
	sc.Services = services(stop)
	srv, err := s.Serve(sc)
	if err != nil {
		return err
	}
	h.log.Info("leading the domain", "term", term.Rev, "loaded_in", time.Since(started).String())
	fmt.Fprintf(a.stdout, "leading domain %q at epoch %d\n", cfg.Domain, term.Rev)
	<-termCtx.Done()
	close(stop)
	fmt.Fprintf(a.stdout, "no longer leading domain %q (epoch %d)\n", cfg.Domain, term.Rev)
	err = srv.Close()
	select {
	case d := <-diverged:
		return fmt.Errorf("a commit was refused, so this seed's view is stale: %w", d)
	default:
	}
	return err
}

// follow keeps a follower's read-only view of the domain (view) and its publisher in step
// with etcd: whenever the audit log's head moves (a write or a publish), the view is
// loaded again, verified as a seed verifies its store, and its newest publication, rebuilt
// from the stored deltas, is handed to the publisher to serve over sync (without
// gossiping it: the leader did). It runs until ctx ends and closes the last view.
func follow(ctx context.Context, h haConfig, view *atomic.Pointer[seed.Seed]) {
	defer func() {
		if v := view.Swap(nil); v != nil {
			v.Close()
		}
	}()
	var served string
	load := func() {
		cfg := h.seed
		cfg.ReadOnly, cfg.Store, cfg.Epoch = true, h.store, 1
		cfg.Registry, cfg.Artifacts, cfg.OnDiverged = prometheus.NewRegistry(), nil, nil
		head, err := h.client.Get(ctx, etcdstore.Prefix(h.seed.Domain)+"audithead")
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("follower: reading the store failed", "err", err)
			}
			return
		}
		at := ""
		if len(head.Kvs) > 0 {
			at = string(head.Kvs[0].Value)
		}
		if at == served && view.Load() != nil {
			return
		}
		v, err := seed.New(ctx, cfg)
		if err != nil {
			h.log.Warn("follower: loading the store failed", "err", err)
			return
		}
		if old := view.Swap(v); old != nil {
			old.Close()
		}
		served = at
	}
	for ctx.Err() == nil {
		load()
		w := h.client.Watch(clientv3.WithRequireLeader(ctx), etcdstore.Prefix(h.seed.Domain)+"audithead")
		for range w {
			// Coalesce a burst of writes into one reload.
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			load()
		}
		t := time.NewTimer(time.Second) // the watch ended (etcd unreachable): read again
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// roleRegistry is a metrics registry carrying the seed's role: meshkit_seed_leader is 1
// while it leads, meshkit_seed_term its term (0 when following).
func roleRegistry(leader bool, term int64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	l := prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshkit_seed_leader", Help: "1 while this seed leads its domain"})
	t := prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshkit_seed_term", Help: "the term (epoch) this seed leads at; 0 while it follows"})
	if leader {
		l.Set(1)
	}
	t.Set(float64(term))
	reg.MustRegister(l, t)
	return reg
}

// leadershipOf is the Status view of the election.
func leadershipOf(el *election.Elector, self string) *adminv1.Leadership {
	tok, ok, followers := el.Leader()
	out := &adminv1.Leadership{ThisSeed: self}
	if ok {
		out.LeaderId, out.LeaderAdmin, out.Term, out.ExpiresAt = tok.LeaderID, tok.Admin, tok.Term, timestamppb.New(tok.ExpiresAt)
	}
	for _, f := range followers {
		out.Followers = append(out.Followers, &adminv1.SeedPeer{Id: f.ID, Admin: f.Admin})
	}
	return out
}
