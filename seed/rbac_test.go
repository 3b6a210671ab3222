package seed_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/dynamicpb"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/trust"
)

func TestScopesAndTenants(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	reader := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "viewer", Scope: seed.ScopeRead, Tenants: []string{"*"}})
	other := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "globex-ci", Scope: seed.ScopeOperate, Tenants: []string{"globex"}})
	acme := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "acme-ci", Scope: seed.ScopeOperate, Tenants: []string{"acme"}})
	route := resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Route\nmetadata: {name: new, namespace: shop, tenant: acme}\nspec: {match: {hosts: [n.example.com]}, cluster: frontend}\n")

	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"no principal", func() error { _, err := ts.api.List(context.Background(), &adminv1.ListRequest{}); return err }, codes.Unauthenticated},
		{"reader applies", func() error { _, err := ts.api.Apply(reader, &adminv1.ApplyRequest{Resources: route}); return err }, codes.PermissionDenied},
		{"reader deletes", func() error {
			_, err := ts.api.Delete(reader, &adminv1.DeleteRequest{Kind: "Route", Namespace: "shop", Name: "storefront"})
			return err
		}, codes.PermissionDenied},
		{"reader reads the audit log", func() error { _, err := ts.api.Audit(reader, &adminv1.AuditRequest{}); return err }, codes.PermissionDenied},
		{"reader diffs", func() error { _, err := ts.api.Diff(reader, &adminv1.DiffRequest{Resources: route}); return err }, codes.OK},
		{"other tenant applies", func() error { _, err := ts.api.Apply(other, &adminv1.ApplyRequest{Resources: route}); return err }, codes.PermissionDenied},
		{"other tenant deletes", func() error {
			_, err := ts.api.Delete(other, &adminv1.DeleteRequest{Kind: "Route", Namespace: "shop", Name: "storefront"})
			return err
		}, codes.PermissionDenied},
		{"other tenant reads", func() error {
			_, err := ts.api.Get(other, &adminv1.GetRequest{Kind: "Route", Namespace: "shop", Name: "storefront"})
			return err
		}, codes.NotFound},
		{"own tenant applies", func() error { _, err := ts.api.Apply(acme, &adminv1.ApplyRequest{Resources: route}); return err }, codes.OK},
	}
	for _, tc := range cases {
		if got := status.Code(tc.call()); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	list, _ := ts.api.List(other, &adminv1.ListRequest{})
	if len(list.GetResources()) != 0 {
		t.Errorf("globex sees %d acme resources", len(list.GetResources()))
	}
	entries, _ := ts.api.Audit(adminCtx(), &adminv1.AuditRequest{})
	if last := entries.GetEntries()[len(entries.GetEntries())-1]; last.GetActor() != "acme-ci" {
		t.Errorf("audit actor %q, want acme-ci", last.GetActor())
	}
}

// TestNoTakeoverOfAnotherTenantsResource: globex names acme's route with tenant globex.
// The incoming tenant is globex's own, but the record it would replace is acme's, so the
// apply (and its dry run) is refused and acme's route is untouched; an operator holding
// both tenants may move a resource between them.
func TestNoTakeoverOfAnotherTenantsResource(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	globex := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "globex-ci", Scope: seed.ScopeOperate, Tenants: []string{"globex"}})
	both := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "platform", Scope: seed.ScopeOperate, Tenants: []string{"acme", "globex"}})
	route := func(name, tenant string) []*adminv1.Resource {
		return resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Route\nmetadata: {name: "+name+", namespace: shop, tenant: "+tenant+"}\n"+
			"spec: {match: {hosts: ["+name+".example.com]}, refuse: true}\n")
	}
	ts.apply(t, route("lonely", "acme"))
	for _, name := range []string{"storefront", "lonely"} {
		for _, dry := range []bool{true, false} {
			_, err := ts.api.Apply(globex, &adminv1.ApplyRequest{Resources: route(name, "globex"), DryRun: dry})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `belongs to tenant "acme"`) {
				t.Fatalf("%s, dry run %v: %v, want PermissionDenied naming acme", name, dry, err)
			}
		}
		got, err := ts.api.Get(adminCtx(), &adminv1.GetRequest{Kind: "Route", Namespace: "shop", Name: name})
		if err != nil || got.GetResource().GetMetadata().GetTenant() != "acme" {
			t.Fatalf("%s after the attempts: %v %v", name, got, err)
		}
	}
	if _, err := ts.api.Apply(both, &adminv1.ApplyRequest{Resources: route("lonely", "globex")}); err != nil {
		t.Fatalf("a principal of both tenants moves a route: %v", err)
	}
	if got, _ := ts.api.Get(globex, &adminv1.GetRequest{Kind: "Route", Namespace: "shop", Name: "lonely"}); got.GetResource().GetMetadata().GetTenant() != "globex" {
		t.Fatalf("lonely after the move: %v", got)
	}
}

// pki makes a CA and a client certificate with a SPIFFE URI SAN.
func pki(t *testing.T, uris ...string) (caPool *x509.CertPool, server tls.Certificate, clients []tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	caPool = x509.NewCertPool()
	caPool.AddCert(caCert)
	issue := func(tmpl *x509.Certificate) tls.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	server = issue(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "seed"}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	for i, uri := range uris {
		u, _ := url.Parse(uri)
		clients = append(clients, issue(&x509.Certificate{SerialNumber: big.NewInt(int64(3 + i)), Subject: pkix.Name{CommonName: "operator"}, URIs: []*url.URL{u},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}))
	}
	return caPool, server, clients
}

func TestGRPCAndRESTWithTokensAndMTLS(t *testing.T) {
	ts := open(t, "")
	const opToken, readToken = "op-secret-token", "read-secret-token"
	pol := &seed.Policy{Principals: []seed.PolicyEntry{
		{Name: "ci", TokenSHA256: seed.HashToken(opToken), Scopes: []string{"mesh.operate"}, Tenants: []string{"*"}},
		{Name: "viewer", TokenSHA256: seed.HashToken(readToken), Scopes: []string{"mesh.read"}, Tenants: []string{"*"}},
		{Name: "platform", Subject: "spiffe://prod.example/ops/admin", Scopes: []string{"mesh.admin"}, Tenants: []string{"*"}},
	}}
	caPool, serverCert, clientCerts := pki(t, "spiffe://prod.example/ops/admin", "spiffe://prod.example/ops/intruder")
	clientCert, strangerCert := clientCerts[0], clientCerts[1]
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: caPool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	srv, err := ts.Serve(seed.ServeConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Policy: pol, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	dial := func(cert *tls.Certificate) adminv1.AdminServiceClient {
		cfg := &tls.Config{RootCAs: caPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(srv.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return adminv1.NewAdminServiceClient(conn)
	}
	withToken := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	anon, admin, stranger := dial(nil), dial(&clientCert), dial(&strangerCert)
	shop := resources(t, "../examples/shop")

	if _, err := anon.Apply(context.Background(), &adminv1.ApplyRequest{Resources: shop}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("anonymous apply: %v", err)
	}
	if _, err := anon.Apply(withToken("wrong"), &adminv1.ApplyRequest{Resources: shop}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", err)
	}
	if _, err := anon.Apply(withToken(readToken), &adminv1.ApplyRequest{Resources: shop}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("read token applies: %v", err)
	}
	if _, err := anon.Apply(withToken(opToken), &adminv1.ApplyRequest{Resources: shop}); err != nil {
		t.Errorf("operate token applies: %v", err)
	}
	if _, err := anon.Audit(withToken(opToken), &adminv1.AuditRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("operate token reads audit: %v", err)
	}
	if v, err := admin.VerifyAudit(context.Background(), &adminv1.VerifyAuditRequest{}); err != nil || v.GetEntries() == 0 {
		t.Errorf("mTLS admin verifies audit: %v %v", v, err)
	}
	if _, err := stranger.Status(context.Background(), &adminv1.StatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("certificate not in policy: %v", err)
	}
	// A plaintext client cannot talk to a TLS seed at all.
	plain, _ := grpc.NewClient(srv.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer plain.Close()
	if _, err := adminv1.NewAdminServiceClient(plain).Status(withToken(opToken), &adminv1.StatusRequest{}); err == nil {
		t.Error("plaintext call to a TLS seed succeeded")
	}

	// REST over the same TLS, same policy.
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	do := func(method, path, token string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, "https://"+srv.HTTPAddr.String()+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := do("GET", "/healthz", "", nil); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	ts.waitPublished(t, 1)
	if code, b := do("GET", "/readyz", "", nil); code != 200 || !strings.Contains(string(b), `"ready":true`) {
		t.Errorf("/readyz = %d %s", code, b)
	}
	if code, b := do("GET", "/metrics", "", nil); code != 200 || !strings.Contains(string(b), "meshkit_seed_version 1") || !strings.Contains(string(b), "meshkit_seed_publish_latency_seconds") {
		t.Errorf("/metrics = %d, missing seed metrics:\n%s", code, b)
	}
	if code, _ := do("GET", "/v1/resources?kind=Route", "", nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous REST list = %d", code)
	}
	code, b := do("GET", "/v1/resources/Route/shop/checkout", readToken, nil)
	var got adminv1.GetResponse
	if code != 200 || protojson.Unmarshal(b, &got) != nil || got.GetResource().GetRoute().GetRetryPolicy() != "idempotent-fast" {
		t.Errorf("REST get = %d %s", code, b)
	}
	bad, _ := protojson.Marshal(&adminv1.ApplyRequest{Resources: resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Route\nmetadata: {name: x, namespace: shop}\nspec: {match: {hosts: [x.example.com]}, cluster: nope}\n")})
	code, b = do("POST", "/v1/apply", opToken, bad)
	var e map[string]string
	json.Unmarshal(b, &e)
	if code != http.StatusBadRequest || e["code"] != "InvalidArgument" || !strings.Contains(e["message"], `Cluster "nope" does not exist`) {
		t.Errorf("REST invalid apply = %d %s", code, b)
	}
	if code, _ := do("DELETE", "/v1/resources/Route/shop/checkout", readToken, nil); code != http.StatusForbidden {
		t.Errorf("REST delete with read token = %d", code)
	}
	if code, b := do("GET", "/v1/bundle", readToken, nil); code != 200 {
		t.Errorf("REST bundle = %d %s", code, b)
	} else if _, err := verifierFor(t, "prod").Verify(b); err != nil {
		t.Errorf("bundle served over REST does not verify: %v", err)
	}
}

func TestPolicyFileValidation(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := dir + "/p.yaml"
		if err := writeFile(p, s); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := seed.LoadPolicy(write("principals:\n  - name: a\n    tokenSHA256: abc\n    scopes: [mesh.root]\n    tenants: ['*']\n")); err == nil ||
		!strings.Contains(err.Error(), "64 hex") || !strings.Contains(err.Error(), `unknown scope "mesh.root"`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := seed.LoadPolicy(write("principals:\n  - name: a\n    token: plaintext\n")); err == nil {
		t.Fatal("unknown field accepted")
	}
	p, err := seed.LoadPolicy(write("principals:\n  - name: ci\n    tokenSHA256: " + seed.HashToken("t") + "\n    scopes: [mesh.read, mesh.operate]\n    tenants: [acme]\n"))
	if err != nil {
		t.Fatal(err)
	}
	pr, err := p.Authenticate("t", nil)
	if err != nil || pr.Scope != seed.ScopeOperate || pr.Name != "ci" {
		t.Fatalf("principal %+v, %v", pr, err)
	}
	if _, err := p.Authenticate("", nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous without dev mode: %v", err)
	}
	p.AllowAnonymous = true
	if pr, err := p.Authenticate("", nil); err != nil || pr.Scope != seed.ScopeAdmin {
		t.Fatalf("dev mode anonymous: %+v %v", pr, err)
	}
	if _, err := p.Authenticate("wrong", nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a wrong token in dev mode must still be refused: %v", err)
	}
}

// TestAnonymousAdminOnlyOnLoopback: a policy that lets anonymous callers administer (the
// embedded dev mode) is refused on a wildcard address and served on loopback.
func TestAnonymousAdminOnlyOnLoopback(t *testing.T) {
	ts := open(t, "")
	anon := &seed.Policy{AllowAnonymous: true}
	for _, cfg := range []seed.ServeConfig{
		{GRPCAddr: "0.0.0.0:0", HTTPAddr: "127.0.0.1:0", Policy: anon},
		{GRPCAddr: "127.0.0.1:0", HTTPAddr: "[::]:0", Policy: anon},
	} {
		srv, err := ts.Serve(cfg)
		if !errors.Is(err, seed.ErrAnonymousNotLoopback) {
			if srv != nil {
				srv.Close()
			}
			t.Fatalf("%s / %s: %v, want ErrAnonymousNotLoopback", cfg.GRPCAddr, cfg.HTTPAddr, err)
		}
	}
	srv, err := ts.Serve(seed.ServeConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Policy: anon})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	// With real principals any address is allowed.
	srv, err = ts.Serve(seed.ServeConfig{GRPCAddr: "0.0.0.0:0", HTTPAddr: "0.0.0.0:0", Policy: &seed.Policy{}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
}

// TestCertificateSubjectsMatchByKind: a policy subject with a scheme is a URI and matches
// a URI SAN only; any other is a name and matches the CommonName only. A certificate whose
// CommonName spells an admin's SPIFFE ID is not that admin.
func TestCertificateSubjectsMatchByKind(t *testing.T) {
	pol := &seed.Policy{Principals: []seed.PolicyEntry{
		{Name: "platform", Subject: "spiffe://prod.example/ops/admin", Scopes: []string{"mesh.admin"}, Tenants: []string{"*"}},
		{Name: "legacy", Subject: "ops-console", Scopes: []string{"mesh.read"}, Tenants: []string{"acme"}},
	}}
	admin, _ := url.Parse("spiffe://prod.example/ops/admin")
	console, _ := url.Parse("ops-console")
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string // principal name, "" for refused
	}{
		{"URI SAN", &x509.Certificate{Subject: pkix.Name{CommonName: "anything"}, URIs: []*url.URL{admin}}, "platform"},
		{"CommonName spelled as the URI", &x509.Certificate{Subject: pkix.Name{CommonName: "spiffe://prod.example/ops/admin"}}, ""},
		{"CommonName", &x509.Certificate{Subject: pkix.Name{CommonName: "ops-console"}}, "legacy"},
		{"URI SAN spelled as the name", &x509.Certificate{Subject: pkix.Name{CommonName: "x"}, URIs: []*url.URL{console}}, ""},
	} {
		p, err := pol.Authenticate("", tc.cert)
		switch {
		case tc.want == "" && (err == nil || status.Code(err) != codes.PermissionDenied):
			t.Errorf("%s: %v %v, want PermissionDenied", tc.name, p, err)
		case tc.want != "" && (err != nil || p.Name != tc.want):
			t.Errorf("%s: %v %v, want %s", tc.name, p, err, tc.want)
		}
	}
}

// TestHTTPListenerDropsStalledClients: a client that keeps a connection idle after a
// request, or never finishes its headers or its body, is disconnected by the listener's
// timeouts instead of holding the connection (and a goroutine) for ever.
func TestHTTPListenerDropsStalledClients(t *testing.T) {
	ts := open(t, "")
	srv, err := ts.Serve(seed.ServeConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Policy: &seed.Policy{AllowAnonymous: true},
		ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, IdleTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct{ name, send string }{
		{"idle after a request", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"headers never finished", "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
		{"body never finished", "POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"resources\":"},
	} {
		conn, err := net.Dial("tcp", srv.HTTPAddr.String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(conn, tc.send)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(conn) // returns once the server closes the connection
		conn.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the server kept the connection for 10 s", tc.name)
		}
	}
}

// failingSigner fails every signature, so every publish fails.
type failingSigner struct{ trust.Signer }

func (failingSigner) SignMessage([]byte) ([]byte, error) {
	return nil, errors.New("hsm at /dev/secret-hsm0 rejected key slot 7")
}

// TestReadyzSaysWhyNotWithoutDetails: anonymous /readyz reports a failing publisher as not
// ready without the error's text; an authenticated /v1/status has it.
func TestReadyzSaysWhyNotWithoutDetails(t *testing.T) {
	ts := open(t, "", func(c *seed.Config) { c.Signer = failingSigner{c.Signer} })
	ts.apply(t, resources(t, "../examples/shop"))
	waitFor(t, "a failed publish", func() bool { return ts.Status().GetLastError() != "" })
	const token = "reader-token"
	srv, err := ts.Serve(seed.ServeConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Policy: &seed.Policy{Principals: []seed.PolicyEntry{
		{Name: "viewer", TokenSHA256: seed.HashToken(token), Scopes: []string{"mesh.read"}, Tenants: []string{"*"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+srv.HTTPAddr.String()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/readyz", "")
	if code != http.StatusServiceUnavailable || strings.Contains(body, "hsm") || !strings.Contains(body, "meshkit status") {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	if code, body := get("/v1/status", token); code != 200 || !strings.Contains(body, "hsm at /dev/secret-hsm0") {
		t.Fatalf("/v1/status = %d %s", code, body)
	}
}

// TestNoReferenceAcrossTenantsWithoutAGrant: globex attaches its AuthzPolicy, its Wasm
// (an ExtensionBinding) and a KillSwitch to acme's resources; each is refused, naming the
// grant that would allow it. acme grants its storefront route to globex's AuthzPolicies
// (an audited apply only acme can make); then that one reference, and no other, is
// allowed, and the grant cannot be withdrawn while it is used.
func TestNoReferenceAcrossTenantsWithoutAGrant(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	globex := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "globex-ci", Scope: seed.ScopeOperate, Tenants: []string{"globex"}})
	acme := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "acme-ci", Scope: seed.ScopeOperate, Tenants: []string{"acme"}})
	const hdr = "apiVersion: meshkit.dev/v1alpha1\n"
	policy := resources(t, hdr+"kind: AuthzPolicy\nmetadata: {name: spy, namespace: shop, tenant: globex}\nspec: {action: AUTHZ_ACTION_ALLOW, routes: [storefront]}\n")
	wasm := resources(t, hdr+"kind: Extension\nmetadata: {name: tap, namespace: shop, tenant: globex}\n"+
		"spec: {kind: EXTENSION_KIND_WASM, artifact: bafkreiaaaa, abi: proxy-wasm/0.2.1}\n---\n"+
		hdr+"kind: ExtensionBinding\nmetadata: {name: tap-storefront, namespace: shop, tenant: globex}\nspec: {extension: tap, routes: [storefront]}\n")
	kill := resources(t, hdr+"kind: KillSwitch\nmetadata: {name: off, namespace: shop, tenant: globex}\n"+
		"spec: {target: KILL_SWITCH_TARGET_AUTHZ_POLICY, name: deny-admin-paths, reason: x}\n")
	for name, rs := range map[string][]*adminv1.Resource{"AuthzPolicy": policy, "ExtensionBinding": wasm, "KillSwitch": kill} {
		_, err := ts.api.Apply(globex, &adminv1.ApplyRequest{Resources: rs})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `belongs to tenant "acme"`) || !strings.Contains(err.Error(), "ReferenceGrant") {
			t.Fatalf("globex's %s on acme's resources: %v", name, err)
		}
	}
	grant := resources(t, hdr+"kind: ReferenceGrant\nmetadata: {name: globex-policies, namespace: shop, tenant: acme}\n"+
		"spec: {from: [{tenant: globex, kind: AuthzPolicy}], to: [{kind: Route, name: storefront}]}\n")
	if _, err := ts.api.Apply(globex, &adminv1.ApplyRequest{Resources: grant}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("globex grants itself acme's route: %v", err)
	}
	if _, err := ts.api.Apply(acme, &adminv1.ApplyRequest{Resources: grant}); err != nil {
		t.Fatalf("acme's grant: %v", err)
	}
	if _, err := ts.api.Apply(globex, &adminv1.ApplyRequest{Resources: policy}); err != nil {
		t.Fatalf("the granted reference: %v", err)
	}
	if _, err := ts.api.Apply(globex, &adminv1.ApplyRequest{Resources: wasm}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an ExtensionBinding the grant does not name: %v", err)
	}
	if _, err := ts.api.Delete(acme, &adminv1.DeleteRequest{Kind: "ReferenceGrant", Namespace: "shop", Name: "globex-policies"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("withdrawing a grant in use: %v", err)
	}
	entries, _ := ts.api.Audit(adminCtx(), &adminv1.AuditRequest{})
	var audited bool
	for _, e := range entries.GetEntries() {
		audited = audited || (e.GetActor() == "acme-ci" && slices.Contains(e.GetSubjects(), "ReferenceGrant shop/globex-policies"))
	}
	if !audited {
		t.Fatal("the grant is not in the audit log under acme's principal")
	}
	// The grant is control-plane state: no bundle carries it.
	waitFor(t, "the grant's state published", func() bool { return !ts.Status().GetPending() })
	resp, err := ts.api.GetBundle(adminCtx(), &adminv1.GetBundleRequest{})
	if err != nil || !bytes.Contains(resp.GetEnvelope(), []byte("spy")) || bytes.Contains(resp.GetEnvelope(), []byte("globex-policies")) {
		t.Fatalf("the bundle published after the grant holds the granted policy but not the grant? (%v)", err)
	}
}

// TestReadsShowOnlyTheCallersTenants: a reader of globex, next to acme's shop, gets no
// signed bundle (it holds every tenant's resources), no variant details in history, only
// its own resources and extensions in status, and no audit log; a reader of every tenant
// gets all of it. (A dry run cannot show another tenant's fields: it would have to change
// that tenant's resources, which TestNoTakeoverOfAnotherTenantsResource refuses.)
func TestReadsShowOnlyTheCallersTenants(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	ts.waitPublished(t, 1)
	globex := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "globex-ci", Scope: seed.ScopeAdmin, Tenants: []string{"globex"}})
	everyone := seed.WithPrincipal(context.Background(), &seed.Principal{Name: "viewer", Scope: seed.ScopeAdmin, Tenants: []string{"*"}})

	if _, err := ts.api.GetBundle(globex, &adminv1.GetBundleRequest{}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "meshkit get") {
		t.Fatalf("globex fetches the signed bundle: %v", err)
	}
	if _, err := ts.api.GetBundle(everyone, &adminv1.GetBundleRequest{}); err != nil {
		t.Fatalf("a reader of every tenant fetches the bundle: %v", err)
	}
	h, err := ts.api.History(globex, &adminv1.HistoryRequest{})
	if err != nil || len(h.GetPublications()) == 0 || len(h.GetPublications()[0].GetVariants()) != 0 {
		t.Fatalf("globex's history: %v %v", h, err)
	}
	if h, _ := ts.api.History(everyone, &adminv1.HistoryRequest{}); len(h.GetPublications()[0].GetVariants()) == 0 {
		t.Fatal("a reader of every tenant gets no variants in history")
	}
	if st, _ := ts.api.Status(globex, &adminv1.StatusRequest{}); st.GetResources() != 0 {
		t.Fatalf("globex's status counts %d resources", st.GetResources())
	}
	if st, _ := ts.api.Status(everyone, &adminv1.StatusRequest{}); st.GetResources() != 13 {
		t.Fatalf("everyone's status counts %d resources", st.GetResources())
	}
	for _, call := range []func() error{
		func() error { _, err := ts.api.Audit(globex, &adminv1.AuditRequest{}); return err },
		func() error { _, err := ts.api.VerifyAudit(globex, &adminv1.VerifyAuditRequest{}); return err },
	} {
		if err := call(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("an admin of globex reads the audit log: %v", err)
		}
	}
}

// TestAdminAPIChecksNamesLikeFiles: a resource sent over the admin API is held to the
// same name rules as one read from a file, so no name, namespace or tenant can break a
// key, a path or a registry repository (a tenant named "no_tenant" would own untenanted
// repositories).
func TestAdminAPIChecksNamesLikeFiles(t *testing.T) {
	ts := open(t, "")
	for _, md := range []*bundlev1.Metadata{
		{Name: "a/b", Namespace: "shop"},
		{Name: "ok", Namespace: "Shop"},
		{Name: "ok", Namespace: "shop", Tenant: "no_tenant"},
	} {
		r := &adminv1.Resource{Metadata: md, Spec: &adminv1.Resource_Cluster{Cluster: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 80}}}}}
		_, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: []*adminv1.Resource{r}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "metadata.") {
			t.Errorf("%v: %v, want InvalidArgument naming the field", md, err)
		}
	}
}

// TestEveryKindHasOneAdminForm: the admin API's Resource and bundle's table of kinds
// agree both ways, through the schema, so a kind added to one and not the other fails here.
func TestEveryKindHasOneAdminForm(t *testing.T) {
	for _, kind := range bundle.Kinds() {
		spec, _ := bundle.NewSpec(kind)
		r, err := seed.ResourceFromObject(bundle.Object{Kind: kind, Metadata: &bundlev1.Metadata{Name: "a", Namespace: "b"}, Spec: spec})
		if err != nil {
			t.Errorf("%s: %v", kind, err)
			continue
		}
		o, err := seed.ObjectFromResource(r)
		if err != nil || o.Kind != kind {
			t.Errorf("%s comes back as %q: %v", kind, o.Kind, err)
		}
	}
	fields := (&adminv1.Resource{}).ProtoReflect().Descriptor().Oneofs().ByName("spec").Fields()
	for i := range fields.Len() {
		msg := dynamicpb.NewMessage(fields.Get(i).Message())
		if _, ok := bundle.KindOf(msg); !ok {
			t.Errorf("admin Resource.%s holds %s, which is no kind of bundle's", fields.Get(i).Name(), fields.Get(i).Message().FullName())
		}
	}
	if fields.Len() != len(bundle.Kinds()) {
		t.Errorf("the admin API has %d kinds, bundle %d", fields.Len(), len(bundle.Kinds()))
	}
}
