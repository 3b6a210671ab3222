package seed

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
)

// LeaderHeader is the gRPC trailer (and HTTP header) in which a follower names the
// leader's admin address; `meshkit` clients retry there.
const LeaderHeader = "meshkit-leader"

// FollowerConfig says how a seed that does not lead serves its admin addresses.
type FollowerConfig struct {
	GRPCAddr, HTTPAddr string
	Policy             *Policy
	TLS                *tls.Config
	// Leader returns the leader's id and admin address; ok is false while there is none.
	Leader func() (id, admin string, ok bool)
	// Services registers further gRPC services (leadership), as ServeConfig.Services.
	Services func(*grpc.Server)
	// Registry is served on /metrics.
	Registry *prometheus.Registry
	// View, when set, returns the follower's ReadOnly view of the store (nil while there
	// is none): the admin API's reads are served from it; every write is refused naming
	// the leader.
	View func() *Seed
	// OCI, when set, is this seed's own OCI registry, served on /v2/ as a leader serves it
	// (ServeConfig.Registry): what was pushed to this seed.
	OCI    http.Handler
	Logger *slog.Logger
}

// Follower is the admin endpoint of a seed that does not lead.
type Follower struct {
	GRPCAddr, HTTPAddr net.Addr
	grpc               *grpc.Server
	http               *http.Server
	wg                 sync.WaitGroup
}

// notLeader is the refusal a follower gives every admin call.
func notLeader(cfg FollowerConfig) *status.Status {
	id, admin, ok := cfg.Leader()
	if !ok {
		return status.New(codes.Unavailable, "this seed does not lead its domain, and no seed leads it now (an election is under way); retry shortly")
	}
	return status.New(codes.Unavailable, fmt.Sprintf("this seed does not lead its domain; the leader is %s at %s (meshkit clients retry there)", id, admin))
}

// ServeFollower serves the admin addresses while this seed follows: every admin call is
// authenticated and then refused with Unavailable naming the leader (in the message and in
// the meshkit-leader trailer); the registered services (leadership) are served;
// /healthz, /readyz and /metrics answer on HTTP, and every other path is refused with 503
// and the leader's address. Close stops it.
func ServeFollower(cfg FollowerConfig) (*Follower, error) {
	if cfg.Policy == nil || cfg.Leader == nil {
		return nil, errors.New("seed: FollowerConfig.Policy and Leader are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	gl, hl, err := listen(cfg.GRPCAddr, cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	unknown := func(_ any, ss grpc.ServerStream) error {
		if _, err := AuthenticateGRPC(ss.Context(), cfg.Policy); err != nil {
			return err
		}
		if _, admin, ok := cfg.Leader(); ok {
			ss.SetTrailer(metadata.Pairs(LeaderHeader, admin))
		}
		return notLeader(cfg).Err()
	}
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.UnaryInterceptor(authInterceptor(cfg.Policy)),
		grpc.StreamInterceptor(StreamAuth(cfg.Policy)), grpc.UnknownServiceHandler(unknown)}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
		hl = tls.NewListener(hl, cfg.TLS)
	}
	f := &Follower{GRPCAddr: gl.Addr(), HTTPAddr: hl.Addr(), grpc: grpc.NewServer(opts...)}
	if cfg.Services != nil {
		cfg.Services(f.grpc)
	}
	if cfg.View != nil {
		desc := followerAdmin(cfg)
		f.grpc.RegisterService(&desc, nil)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		// A follower is ready for what followers do (leadership, redirects, the mesh).
		id, _, ok := cfg.Leader()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": true, "role": "follower", "leader": id, "has_leader": ok})
	})
	if cfg.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	}
	if cfg.OCI != nil {
		mux.Handle("/v2/", registryAuth(cfg.Policy, cfg.OCI))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		if _, admin, ok := cfg.Leader(); ok {
			w.Header().Set(LeaderHeader, admin)
		}
		http.Error(w, notLeader(cfg).Message(), http.StatusServiceUnavailable)
	})
	f.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	f.wg.Add(2)
	go func() { defer f.wg.Done(); _ = f.grpc.Serve(gl) }()
	go func() { defer f.wg.Done(); _ = f.http.Serve(hl) }()
	return f, nil
}

// followerReads are the admin methods a follower answers from its view.
var followerReads = map[string]bool{
	"Get": true, "List": true, "Diff": true, "History": true, "Status": true, "Audit": true,
	"VerifyAudit": true, "GetBundle": true, "ControlStatus": true,
}

// followerAdmin is the admin service of a follower: each read method runs the view's own
// handler (behind the server's authentication and the method's authorization); every
// other method, once the caller is authenticated, is refused naming the leader.
func followerAdmin(cfg FollowerConfig) grpc.ServiceDesc {
	desc := adminv1.AdminService_ServiceDesc
	desc.HandlerType = (*any)(nil)
	desc.Methods = make([]grpc.MethodDesc, len(adminv1.AdminService_ServiceDesc.Methods))
	for i, m := range adminv1.AdminService_ServiceDesc.Methods {
		desc.Methods[i] = grpc.MethodDesc{MethodName: m.MethodName, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			if v := cfg.View(); v != nil && followerReads[m.MethodName] {
				return m.Handler(v.AdminServer(), ctx, dec, ic)
			}
			if _, err := AuthenticateGRPC(ctx, cfg.Policy); err != nil {
				return nil, err
			}
			if _, admin, ok := cfg.Leader(); ok {
				_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderHeader, admin))
			}
			return nil, notLeader(cfg).Err()
		}}
	}
	return desc
}

// Close stops both listeners at once: a follower holds no request worth waiting for.
func (f *Follower) Close() error {
	f.grpc.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := f.http.Shutdown(ctx)
	f.wg.Wait()
	return err
}
