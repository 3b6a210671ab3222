package seed_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/ca"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/trust"
)

// withControl gives the seed its root (seed key in the seed role, caRole in the CA
// role), the CA role's key and a CA directory of generations.
func withControl(t testing.TB, dir string, fc clockwork.Clock, caRole *trust.PrivateKey) func(*seed.Config) {
	rootKey, seedKey := keys(t)
	msg, err := trust.BuildRoot(trust.RootSpec{Domain: "prod", Version: 1, IssuedAt: fc.Now().Add(-time.Hour), ExpiresAt: fc.Now().Add(365 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1, SeedKeys: []trust.PublicKey{seedKey.Public()}, SeedThreshold: 1,
		CAKeys: []trust.PublicKey{caRole.Public()}, CAThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Sign(env, rootKey); err != nil {
		t.Fatal(err)
	}
	rb, err := trust.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	withCAFn := withCA(t, dir, fc)
	return func(c *seed.Config) {
		withCAFn(c)
		c.Root, c.CASigner = rb, caRole
		c.CAGenerations = ca.Dir{Path: filepath.Join(dir, "ca"), TrustDomain: spiffeid.RequireTrustDomainFromString("prod")}
	}
}

// TestRevocationIsSignedStoredAndEnforced: revoking an enrolled node publishes a control
// message signed by the CA role that names its node and peer; the seed refuses the node's
// CSRs and a new join token for it, and all of it survives a restart.
func TestRevocationIsSignedStoredAndEnforced(t *testing.T) {
	dir := t.TempDir()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	caRole, err := trust.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := open(t, dir, withControl(t, dir, fc, caRole))
	a := peerID(t)
	tok, err := ts.CreateJoinToken(context.Background(), "ops", "n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if en := enrol(ts, a, tok.GetToken(), "n1").GetEnrolled(); en == nil {
		t.Fatal("not enrolled")
	}
	for _, bad := range []*adminv1.RevokeRequest{{}, {Node: "n1", PeerId: a.String()}, {Serial: "xyz"}, {PeerId: "not-a-peer"}, {Node: "N1!"}} {
		if _, err := ts.api.Revoke(adminCtx(), bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("revoke %v: %v, want INVALID_ARGUMENT", bad, err)
		}
	}
	resp, err := ts.api.Revoke(adminCtx(), &adminv1.RevokeRequest{Node: "n1", Reason: "stolen"})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetRevocation(); r.GetNode() != "n1" || r.GetPeerId() != a.String() || resp.GetControlVersion() == 0 {
		t.Fatalf("revocation %v", resp)
	}
	check := func(ts *testSeed) {
		t.Helper()
		wantError(t, "a CSR of the revoked node", csr(ts, a, "prod:n1", nil), codes.PermissionDenied, "revoked")
		if _, err := ts.CreateJoinToken(context.Background(), "ops", "n1", time.Hour); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("a join token for the revoked node: %v", err)
		}
		v, err := trust.NewVerifier(trust.Config{Root: mustRoot(t, ts), Clock: fc})
		if err != nil {
			t.Fatal(err)
		}
		vb, err := v.Verify(ts.MemPublisher().Control())
		if err != nil {
			t.Fatalf("the control message: %v", err)
		}
		revs := vb.Control.GetRevocations()
		if len(revs) != 1 || revs[0].GetNode() != "n1" || revs[0].GetPeerId() != a.String() || len(vb.Control.GetTrustBundle()) == 0 {
			t.Fatalf("control carries %v", vb.Control)
		}
	}
	check(ts)
	ts.close()
	ts = open(t, dir, withControl(t, dir, fc, caRole))
	waitControl(t, ts)
	check(ts)
}

func mustRoot(t *testing.T, ts *testSeed) *trust.Root {
	t.Helper()
	st := ts.ControlStatus()
	if st.GetRootVersion() != 1 {
		t.Fatalf("root v%d", st.GetRootVersion())
	}
	r, err := trust.VerifyRoot(ts.root)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitControl(t *testing.T, ts *testSeed) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ts.MemPublisher().Control() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no control message published")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestControlRoutesNeedAnAdminOfEveryTenant: each control route changes the whole domain.
func TestControlRoutesNeedAnAdminOfEveryTenant(t *testing.T) {
	dir := t.TempDir()
	caRole, err := trust.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := open(t, dir, withControl(t, dir, clockwork.NewRealClock(), caRole))
	calls := map[string]func(ctx context.Context) error{
		"Revoke": func(ctx context.Context) error {
			_, err := ts.api.Revoke(ctx, &adminv1.RevokeRequest{Node: "n9"})
			return err
		},
		"PrepareSeedKey": func(ctx context.Context) error {
			_, err := ts.api.PrepareSeedKey(ctx, &adminv1.PrepareSeedKeyRequest{})
			return err
		},
		"RotateRoot": func(ctx context.Context) error {
			_, err := ts.api.RotateRoot(ctx, &adminv1.RotateRootRequest{Root: []byte("x")})
			return err
		},
		"IssueClientCertificate": func(ctx context.Context) error {
			_, err := ts.api.IssueClientCertificate(ctx, &adminv1.IssueClientCertificateRequest{Name: "alice", Csr: []byte("x")})
			return err
		},
		"RotateCA": func(ctx context.Context) error {
			_, err := ts.api.RotateCA(ctx, &adminv1.RotateCARequest{Step: "prepare"})
			return err
		},
	}
	for name, call := range calls {
		for _, p := range []*seed.Principal{
			{Name: "ci", Scope: seed.ScopeOperate, Tenants: []string{"*"}},
			{Name: "acme-admin", Scope: seed.ScopeAdmin, Tenants: []string{"acme"}},
		} {
			if err := call(seed.WithPrincipal(context.Background(), p)); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("%s by %s: %v, want PERMISSION_DENIED", name, p.Name, err)
			}
		}
		if err := call(adminCtx()); status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated {
			t.Fatalf("%s by an admin of every tenant: %v", name, err)
		}
	}
	if _, err := ts.api.ControlStatus(seed.WithPrincipal(context.Background(), &seed.Principal{Name: "acme", Scope: seed.ScopeRead, Tenants: []string{"acme"}}), &adminv1.ControlStatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("control status by a reader of one tenant: %v", err)
	}
	if _, err := ts.api.ControlStatus(seed.WithPrincipal(context.Background(), &seed.Principal{Name: "ro", Scope: seed.ScopeRead, Tenants: []string{"*"}}), &adminv1.ControlStatusRequest{}); err != nil {
		t.Fatalf("control status by a reader of every tenant: %v", err)
	}
}
