package seed_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	libp2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/ca"
	"meshkit.dev/meshkit/internal/testcsr"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
	"meshkit.dev/meshkit/seed"
)

func peerID(t testing.TB) peer.ID {
	k, _, err := libp2pcrypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func withCA(t testing.TB, dir string, fc clockwork.Clock) func(*seed.Config) {
	auth, err := ca.LoadOrCreate(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("prod"), fc.Now())
	if err != nil {
		t.Fatal(err)
	}
	return func(c *seed.Config) { c.CA, c.Clock = auth, fc }
}

func enrol(ts *testSeed, from peer.ID, token, node string) *identityv1.IdentityResponse {
	return ts.HandleIdentity(context.Background(), from, &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_Enrol{Enrol: &identityv1.Enrol{Token: token, Node: node}}})
}

func csr(ts *testSeed, from peer.ID, node string, der []byte) *identityv1.IdentityResponse {
	return ts.HandleIdentity(context.Background(), from, &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_Csr{Csr: &capb.CsrRequest{NodeId: node, Csr: der}}})
}

func wantError(t *testing.T, what string, r *identityv1.IdentityResponse, code codes.Code, says string) {
	t.Helper()
	e := r.GetError()
	if e == nil || codes.Code(e.GetCode()) != code || !strings.Contains(e.GetMessage(), says) {
		t.Fatalf("%s: %v, want %v saying %q", what, r, code, says)
	}
}

// TestEnrolmentAndIssuance: a join token enrols one peer as its node, once; the enrolled
// peer gets certificates for its own node only, which openssl verifies against the trust
// bundle it is given; replayed, unknown and expired tokens are refused; enrolments survive
// a restart; each issuance and refusal is in the audit log, which still verifies.
func TestEnrolmentAndIssuance(t *testing.T) {
	dir := t.TempDir()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	ts := open(t, dir, withCA(t, dir, fc))
	a, b := peerID(t), peerID(t)

	tok, err := ts.CreateJoinToken(context.Background(), "ops", "n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok.GetSpiffeId() != "spiffe://prod/node/n1" || !strings.HasPrefix(tok.GetToken(), "mkjt_") {
		t.Fatalf("token %v", tok)
	}
	wantError(t, "an unknown token", enrol(ts, a, "mkjt_nope", "n1"), codes.Unauthenticated, "not known")
	wantError(t, "the token for another node", enrol(ts, a, tok.GetToken(), "n2"), codes.PermissionDenied, "enrols node \"n1\"")
	en := enrol(ts, a, tok.GetToken(), "n1").GetEnrolled()
	if en.GetNode() != "n1" || !strings.Contains(string(en.GetTrustBundle()), "BEGIN CERTIFICATE") {
		t.Fatalf("enrolled %v", en)
	}
	if again := enrol(ts, a, tok.GetToken(), "n1").GetEnrolled(); again.GetNode() != "n1" {
		t.Fatalf("the same peer presenting its token again (a lost answer): %v", again)
	}
	wantError(t, "the token replayed by another peer", enrol(ts, b, tok.GetToken(), "n1"), codes.PermissionDenied, "already used")

	late, err := ts.CreateJoinToken(context.Background(), "ops", "n2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fc.Advance(2 * time.Minute)
	wantError(t, "an expired token", enrol(ts, b, late.GetToken(), "n2"), codes.Unauthenticated, "expired")

	der := testcsr.Make(t, testcsr.RSA2048, "/CN=n1", "DNS:n1.shop.svc")
	wantError(t, "a CSR from a peer that is not enrolled", csr(ts, b, "n1", der), codes.PermissionDenied, "not enrolled")
	wantError(t, "a CSR for another node", csr(ts, a, "n2", testcsr.Make(t, testcsr.P256, "/CN=n2", "")), codes.InvalidArgument, "not the caller's node")
	cert := csr(ts, a, "n1", der).GetCertificate()
	if cert == nil {
		t.Fatalf("no certificate: %v", csr(ts, a, "n1", der))
	}
	if len(cert.GetSanUri()) != 1 || cert.GetSanUri()[0] != "spiffe://prod/node/n1" {
		t.Fatalf("SAN URIs %v", cert.GetSanUri())
	}
	checkWithOpenSSL(t, cert, fc.Now())

	// The agent's own leaf names its peer ID; only an enrolled peer gets one.
	own := func(from peer.ID) *identityv1.IdentityResponse {
		return ts.HandleIdentity(context.Background(), from, &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_AgentCertificate{
			AgentCertificate: &identityv1.AgentCertificate{Csr: testcsr.Make(t, testcsr.P256, "/CN=n1", "")}}})
	}
	agentLeaf, err := x509.ParseCertificate(own(a).GetCertificate().GetCertificate())
	if err != nil {
		t.Fatal(err)
	}
	if agentLeaf.Subject.SerialNumber != a.String() {
		t.Fatalf("the agent's own leaf names %q, want its peer ID %s", agentLeaf.Subject.SerialNumber, a)
	}
	wantError(t, "an own certificate for a peer that is not enrolled", own(b), codes.PermissionDenied, "not enrolled")

	// Enrolments and used tokens survive a restart.
	ts.close()
	ts = open(t, dir, withCA(t, dir, fc))
	if csr(ts, a, "n1", der).GetCertificate() == nil {
		t.Fatal("the enrolment did not survive a restart")
	}
	wantError(t, "the used token after a restart", enrol(ts, b, tok.GetToken(), "n1"), codes.PermissionDenied, "already used")

	entries, err := ts.store.Audit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		seen[e.GetAction()]++
	}
	if seen["token-create"] != 2 || seen["enrol"] != 1 || seen["issue"] != 3 || seen["refuse-csr"] != 1 {
		t.Fatalf("audit actions %v", seen)
	}
	if _, err := seed.VerifyStore(context.Background(), ts.store); err != nil {
		t.Fatalf("the audit log with identity entries does not verify: %v", err)
	}
}

// checkWithOpenSSL: `openssl verify` accepts the leaf against the trust bundle returned
// with it, through the chain returned with it, at the seed's time.
func checkWithOpenSSL(t *testing.T, cert *capb.CertResponse, at time.Time) {
	t.Helper()
	dir := t.TempDir()
	chain, err := x509.ParseCertificates(cert.GetCertificateChain())
	if err != nil || len(chain) == 0 {
		t.Fatalf("chain: %v (%d certificates)", err, len(chain))
	}
	var untrusted []byte
	for _, c := range chain {
		untrusted = append(untrusted, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for name, b := range map[string][]byte{
		"bundle.pem": cert.GetTrustBundle(), "chain.pem": untrusted,
		"leaf.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.GetCertificate()}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testcsr.Run(t, dir, "verify", "-attime", strconv.FormatInt(at.Unix(), 10), "-CAfile", "bundle.pem", "-untrusted", "chain.pem", "-purpose", "sslclient", "leaf.pem")
}

// TestJoinTokensNeedAnAdminOfEveryTenant: a join token enrols a node of the whole domain.
func TestJoinTokensNeedAnAdminOfEveryTenant(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir, withCA(t, dir, clockwork.NewRealClock()))
	for _, p := range []*seed.Principal{
		{Name: "ci", Scope: seed.ScopeOperate, Tenants: []string{"*"}},
		{Name: "acme-admin", Scope: seed.ScopeAdmin, Tenants: []string{"acme"}},
	} {
		_, err := ts.api.CreateJoinToken(seed.WithPrincipal(context.Background(), p), &adminv1.CreateJoinTokenRequest{Node: "n1"})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s made a join token: %v", p.Name, err)
		}
	}
	if _, err := ts.api.CreateJoinToken(adminCtx(), &adminv1.CreateJoinTokenRequest{Node: "N1!"}); err == nil {
		t.Fatal("a join token for an invalid node name")
	}
	if _, err := ts.api.CreateJoinToken(adminCtx(), &adminv1.CreateJoinTokenRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSeedIssue: certificates per second through the seed, one caller at a time:
// the CSR checked and signed, its serial and audit entry committed (bbolt, fsynced)
// before it is handed out (`go test ./seed -bench SeedIssue`).
func BenchmarkSeedIssue(b *testing.B) {
	dir := b.TempDir()
	ts := open(b, dir, withCA(b, dir, clockwork.NewRealClock()), func(c *seed.Config) { c.IdentityRate = 1e6 })
	p := peerID(b)
	tok, err := ts.CreateJoinToken(context.Background(), "bench", "n1", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if enrol(ts, p, tok.GetToken(), "n1").GetEnrolled() == nil {
		b.Fatal("not enrolled")
	}
	der := testcsr.Make(b, testcsr.P256, "/CN=n1", "")
	b.ResetTimer()
	for b.Loop() {
		if csr(ts, p, "n1", der).GetCertificate() == nil {
			b.Fatal("not issued")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leaves/s")
}

// TestIdentityCallsAreRateLimited: an enrolled peer flooding the CA with bad CSRs (each
// an audited refusal) is told to back off after its burst, without an audit entry, and
// gets calls again as its allowance refills; another peer is not affected.
func TestIdentityCallsAreRateLimited(t *testing.T) {
	dir := t.TempDir()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	ts := open(t, dir, withCA(t, dir, fc))
	a, b := peerID(t), peerID(t)
	tok, err := ts.CreateJoinToken(context.Background(), "ops", "n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	enrol(ts, a, tok.GetToken(), "n1") // one call of the burst
	before, err := ts.store.Audit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 19 {
		wantError(t, fmt.Sprintf("bad CSR %d", i), csr(ts, a, "n1", []byte("garbage")), codes.InvalidArgument, "not a PKCS#10")
	}
	limited := csr(ts, a, "n1", []byte("garbage"))
	wantError(t, "the call after the burst", limited, codes.ResourceExhausted, "too many identity calls")
	if limited.GetError().GetRetryAfterMillis() == 0 {
		t.Fatal("no retry hint")
	}
	after, err := ts.store.Audit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(after) - len(before); n != 19 {
		t.Fatalf("%d audit entries for 19 refusals and one rate-limited call", n)
	}
	wantError(t, "another peer", csr(ts, b, "n1", []byte("garbage")), codes.PermissionDenied, "not enrolled")
	fc.Advance(time.Second)
	wantError(t, "a call once the allowance refilled", csr(ts, a, "n1", []byte("garbage")), codes.InvalidArgument, "not a PKCS#10")
}
