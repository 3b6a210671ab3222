package seed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
)

// MaxRequestBytes bounds an admin request (gRPC message or REST body).
const MaxRequestBytes = 64 << 20

// ErrAnonymousNotLoopback refuses to serve anonymous admins (Policy.AllowAnonymous, the
// embedded dev mode) on an address other machines can reach.
var ErrAnonymousNotLoopback = errors.New("seed: anonymous admin access is served on loopback addresses only")

// ServeConfig says where and how to serve the admin API.
type ServeConfig struct {
	// GRPCAddr and HTTPAddr are listen addresses ("127.0.0.1:17400", "127.0.0.1:17480").
	GRPCAddr, HTTPAddr string
	// Policy authenticates callers. Required.
	Policy *Policy
	// TLS, when set, serves both listeners over TLS; set ClientCAs and
	// ClientAuth = tls.VerifyClientCertIfGiven (or RequireAndVerifyClientCert) for mTLS.
	TLS *tls.Config
	// Services, when set, registers further gRPC services (the leadership service) on the
	// admin server, behind the same authentication; they need mesh.read.
	Services func(*grpc.Server)
	// Registry, when set, is served on /v2/ (the OCI distribution API): pulls need
	// mesh.read, pushes mesh.operate, with the same credentials as the admin API.
	Registry http.Handler
	// Timeouts of the HTTP listener, so that a client holding connections open without
	// finishing its requests cannot exhaust the seed. Zero means the default: 10 s to send
	// the headers, 5 minutes for a whole request (a registry upload included) and its
	// response, 2 minutes idle between requests.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

func cmpOrDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// registryAuth guards the OCI registry. OCI clients (oras, docker, crane, helm) follow a
// Basic challenge with the credentials they were given (`oras login`, `-u/-p`, a docker
// config): any user name, and an admin API token as the password. A raw
// "Authorization: Bearer TOKEN" header and a client certificate work too, as on the admin
// API. Reads need mesh.read, writes mesh.operate, and a principal reaches only its
// tenants' repositories. Errors are answered in the distribution API's JSON error format.
func registryAuth(pol *Policy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var cert *x509.Certificate
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			cert = r.TLS.VerifiedChains[0][0]
		}
		deny := func(code int, oci, msg string) {
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="MeshKit registry", charset="UTF-8"`)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": oci, "message": msg}}})
		}
		token := ""
		if h := r.Header.Get("Authorization"); h != "" {
			if _, password, ok := r.BasicAuth(); ok {
				token = password
			} else if token = bearer(h); token == "" {
				deny(http.StatusUnauthorized, "UNAUTHORIZED", "send Basic credentials (any user, an admin token as the password) or 'Bearer TOKEN'")
				return
			}
			if token == "" {
				deny(http.StatusUnauthorized, "UNAUTHORIZED", "the password must be an admin API token")
				return
			}
		}
		p, err := pol.Authenticate(token, cert)
		if err != nil {
			deny(http.StatusUnauthorized, "UNAUTHORIZED", status.Convert(err).Message())
			return
		}
		need := ScopeRead
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			need = ScopeOperate
		}
		if p.Scope < need {
			deny(http.StatusForbidden, "DENIED", fmt.Sprintf("%s has %s; this needs %s", p.Name, p.Scope, need))
			return
		}
		repos, all := registryRepos(r)
		if all && !p.allTenants() {
			deny(http.StatusForbidden, "DENIED", fmt.Sprintf("%s may reach tenants %v only, and the catalog lists every tenant's repositories", p.Name, p.Tenants))
			return
		}
		for _, repo := range repos {
			if t := RepositoryTenant(repo); !p.allows(t) {
				deny(http.StatusForbidden, "DENIED", fmt.Sprintf("repository %q belongs to tenant %q; %s may reach tenants %v only", repo, t, p.Name, p.Tenants))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// NoTenantRepository is the first component of the OCI repositories of resources without
// a tenant. An underscore is valid in a repository name but not in a tenant's
// (bundle.ValidateMetadata), so no tenant can own it.
const NoTenantRepository = "no_tenant"

// RepositoryTenant is the tenant an OCI repository belongs to: its first path component
// ("acme/shop/auth" is acme's, "no_tenant/shop/auth" nobody's).
func RepositoryTenant(repo string) string {
	t, _, _ := strings.Cut(repo, "/")
	if t == NoTenantRepository {
		return ""
	}
	return t
}

// registryRepos returns the repositories a distribution API request touches: the one in
// its path, and the source of a cross-repository blob mount; all is set for the catalog,
// which lists every repository.
func registryRepos(r *http.Request) (repos []string, all bool) {
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	if rest == "" {
		return nil, false
	}
	if rest == "_catalog" || strings.HasPrefix(rest, "_catalog/") {
		return nil, true
	}
	for _, marker := range []string{"/blobs/", "/manifests/", "/tags/", "/referrers/"} {
		if i := strings.Index(rest, marker); i > 0 {
			repos = append(repos, rest[:i])
			break
		}
	}
	if repos == nil {
		repos = append(repos, strings.TrimSuffix(rest, "/")) // unknown route: its whole path
	}
	if from := r.URL.Query().Get("from"); from != "" {
		repos = append(repos, from)
	}
	return repos, false
}

// Servers are the running admin listeners.
type Servers struct {
	GRPCAddr, HTTPAddr net.Addr
	grpc               *grpc.Server
	http               *http.Server
	wg                 sync.WaitGroup
}

// Serve starts the gRPC and HTTP listeners. Close stops them.
func (s *Seed) Serve(cfg ServeConfig) (*Servers, error) {
	if cfg.Policy == nil {
		return nil, errors.New("seed: ServeConfig.Policy is required")
	}
	gl, hl, err := listen(cfg.GRPCAddr, cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	if cfg.Policy.AllowAnonymous {
		// Anonymous callers are admins: only this machine may reach them. Checked on the
		// bound addresses, so a wildcard or a name that resolves elsewhere is caught too.
		for _, l := range []net.Listener{gl, hl} {
			if tcp, ok := l.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
				gl.Close()
				hl.Close()
				return nil, fmt.Errorf("%w: %s is not a loopback address", ErrAnonymousNotLoopback, l.Addr())
			}
		}
	}
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.UnaryInterceptor(authInterceptor(cfg.Policy)), grpc.StreamInterceptor(StreamAuth(cfg.Policy))}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
		hl = tls.NewListener(hl, cfg.TLS)
	}
	srv := &Servers{GRPCAddr: gl.Addr(), HTTPAddr: hl.Addr(), grpc: grpc.NewServer(opts...)}
	adminv1.RegisterAdminServiceServer(srv.grpc, s.AdminServer())
	if cfg.Services != nil {
		cfg.Services(srv.grpc)
	}
	srv.http = &http.Server{
		Handler:           s.httpHandler(cfg.Policy, cfg.Registry),
		ReadHeaderTimeout: cmpOrDuration(cfg.ReadHeaderTimeout, 10*time.Second),
		ReadTimeout:       cmpOrDuration(cfg.ReadTimeout, 5*time.Minute),
		WriteTimeout:      cmpOrDuration(cfg.WriteTimeout, 5*time.Minute),
		IdleTimeout:       cmpOrDuration(cfg.IdleTimeout, 2*time.Minute),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	srv.wg.Add(2)
	go func() { defer srv.wg.Done(); _ = srv.grpc.Serve(gl) }()
	go func() { defer srv.wg.Done(); _ = srv.http.Serve(hl) }()
	s.log.Info("admin API listening", "grpc", gl.Addr().String(), "http", hl.Addr().String(), "tls", cfg.TLS != nil)
	return srv, nil
}

// listen opens the admin API's gRPC and HTTP listeners.
func listen(grpcAddr, httpAddr string) (gl, hl net.Listener, err error) {
	if gl, err = net.Listen("tcp", grpcAddr); err != nil {
		return nil, nil, fmt.Errorf("seed: gRPC listener: %w", err)
	}
	if hl, err = net.Listen("tcp", httpAddr); err != nil {
		gl.Close()
		return nil, nil, fmt.Errorf("seed: HTTP listener: %w", err)
	}
	return gl, hl, nil
}

// Close stops both listeners, letting in-flight requests finish for up to 5 seconds.
func (srv *Servers) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { srv.grpc.GracefulStop(); close(stopped) }()
	err := srv.http.Shutdown(ctx)
	select {
	case <-stopped:
	case <-ctx.Done():
		srv.grpc.Stop()
	}
	srv.wg.Wait()
	return err
}

func bearer(v string) string {
	if t, ok := strings.CutPrefix(v, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// authInterceptor authenticates every gRPC call; the methods authorize by scope.
func authInterceptor(pol *Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		principal, err := AuthenticateGRPC(ctx, pol)
		if err != nil {
			return nil, err
		}
		return handler(WithPrincipal(ctx, principal), req)
	}
}

// AuthenticateGRPC authenticates a gRPC caller by its bearer token or client certificate.
func AuthenticateGRPC(ctx context.Context, pol *Policy) (*Principal, error) {
	var token string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			if token = bearer(v[0]); token == "" {
				return nil, status.Error(codes.Unauthenticated, "authorization metadata must be 'Bearer TOKEN'")
			}
		}
	}
	var cert *x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			cert = ti.State.VerifiedChains[0][0]
		}
	}
	return pol.Authenticate(token, cert)
}

// StreamAuth authenticates every streaming call and requires mesh.read: the streams a
// seed serves (leadership) carry no tenant's data.
func StreamAuth(pol *Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		p, err := AuthenticateGRPC(ss.Context(), pol)
		if err != nil {
			return err
		}
		if p.Scope < ScopeRead {
			return status.Errorf(codes.PermissionDenied, "%s has %s; %s needs %s", p.Name, p.Scope, info.FullMethod, ScopeRead)
		}
		return handler(srv, ss)
	}
}

// httpHandler serves /healthz, /readyz, /metrics and the REST mapping of the admin API:
//
//	POST   /v1/apply                          ApplyRequest → ApplyResponse
//	POST   /v1/diff                           DiffRequest → DiffResponse
//	GET    /v1/resources?kind=&namespace=&tenant=
//	GET    /v1/resources/{kind}/{namespace}/{name}
//	DELETE /v1/resources/{kind}/{namespace}/{name}[?dryRun=true]
//	GET    /v1/history[?limit=N]
//	GET    /v1/status
//	GET    /v1/audit[?afterSeq=N&limit=N]
//	POST   /v1/audit/verify
//	GET    /v1/bundle[?capabilities=a,b&delta=true]   (binary envelope)
func (s *Seed) httpHandler(pol *Policy, reg http.Handler) http.Handler {
	a := &admin{s: s}
	mux := http.NewServeMux()
	if reg != nil {
		mux.Handle("/v2/", registryAuth(pol, reg))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := s.Status()
		ready := st.GetLastError() == "" && (st.GetVersion() > 0 || st.GetResources() == 0)
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		// Anyone may probe readiness: the publisher's error text (paths, store and key
		// details) is for authenticated callers of /v1/status only.
		out := map[string]any{"ready": ready, "version": st.GetVersion(), "pending": st.GetPending()}
		if st.GetLastError() != "" {
			out["reason"] = "the last publish failed; `meshkit status` shows why"
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	rpc := func(call func(ctx context.Context, r *http.Request) (proto.Message, error)) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var cert *x509.Certificate
			if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
				cert = r.TLS.VerifiedChains[0][0]
			}
			token := ""
			if h := r.Header.Get("Authorization"); h != "" {
				if token = bearer(h); token == "" {
					writeError(w, status.Error(codes.Unauthenticated, "Authorization header must be 'Bearer TOKEN'"))
					return
				}
			}
			p, err := pol.Authenticate(token, cert)
			if err != nil {
				writeError(w, err)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBytes)
			resp, err := call(WithPrincipal(r.Context(), p), r)
			if err != nil {
				writeError(w, err)
				return
			}
			if gb, ok := resp.(*adminv1.GetBundleResponse); ok {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("MeshKit-Version", strconv.FormatUint(gb.GetVersion(), 10))
				_, _ = w.Write(gb.GetEnvelope())
				return
			}
			out, err := protojson.MarshalOptions{EmitUnpopulated: false}.Marshal(resp)
			if err != nil {
				writeError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(append(out, '\n'))
		})
	}
	body := func(r *http.Request, m proto.Message) error {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "request body: %v", err)
		}
		if err := protojson.Unmarshal(data, m); err != nil {
			return status.Errorf(codes.InvalidArgument, "request body: %v", err)
		}
		return nil
	}
	q := func(r *http.Request, k string) string { return r.URL.Query().Get(k) }
	u64 := func(r *http.Request, k string) uint64 { v, _ := strconv.ParseUint(q(r, k), 10, 32); return v }
	mux.Handle("POST /v1/apply", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		req := &adminv1.ApplyRequest{}
		if err := body(r, req); err != nil {
			return nil, err
		}
		return a.Apply(ctx, req)
	}))
	mux.Handle("POST /v1/diff", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		req := &adminv1.DiffRequest{}
		if err := body(r, req); err != nil {
			return nil, err
		}
		return a.Diff(ctx, req)
	}))
	mux.Handle("GET /v1/resources", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.List(ctx, &adminv1.ListRequest{Kind: q(r, "kind"), Namespace: q(r, "namespace"), Tenant: q(r, "tenant")})
	}))
	mux.Handle("GET /v1/resources/{kind}/{namespace}/{name}", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.Get(ctx, &adminv1.GetRequest{Kind: r.PathValue("kind"), Namespace: r.PathValue("namespace"), Name: r.PathValue("name")})
	}))
	mux.Handle("DELETE /v1/resources/{kind}/{namespace}/{name}", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.Delete(ctx, &adminv1.DeleteRequest{Kind: r.PathValue("kind"), Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), DryRun: q(r, "dryRun") == "true"})
	}))
	mux.Handle("GET /v1/history", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.History(ctx, &adminv1.HistoryRequest{Limit: uint32(u64(r, "limit"))})
	}))
	mux.Handle("GET /v1/status", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.Status(ctx, &adminv1.StatusRequest{})
	}))
	mux.Handle("GET /v1/audit", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.Audit(ctx, &adminv1.AuditRequest{AfterSeq: u64(r, "afterSeq"), Limit: uint32(u64(r, "limit"))})
	}))
	mux.Handle("POST /v1/audit/verify", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		return a.VerifyAudit(ctx, &adminv1.VerifyAuditRequest{})
	}))
	mux.Handle("GET /v1/bundle", rpc(func(ctx context.Context, r *http.Request) (proto.Message, error) {
		var caps []string
		if c := q(r, "capabilities"); c != "" {
			caps = strings.Split(c, ",")
		}
		return a.GetBundle(ctx, &adminv1.GetBundleRequest{Capabilities: caps, Delta: q(r, "delta") == "true"})
	}))
	return mux
}

var httpStatus = map[codes.Code]int{
	codes.InvalidArgument: http.StatusBadRequest, codes.Unauthenticated: http.StatusUnauthorized,
	codes.PermissionDenied: http.StatusForbidden, codes.NotFound: http.StatusNotFound,
	codes.FailedPrecondition: http.StatusPreconditionFailed, codes.Unavailable: http.StatusServiceUnavailable,
	codes.DataLoss: http.StatusInternalServerError,
}

func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code, ok := httpStatus[st.Code()]
	if !ok {
		code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": st.Code().String(), "message": st.Message()})
}
