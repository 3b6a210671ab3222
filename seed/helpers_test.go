package seed_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/trust"
)

var admin = &seed.Principal{Name: "test-admin", Scope: seed.ScopeAdmin, Tenants: []string{"*"}}

func adminCtx() context.Context { return seed.WithPrincipal(context.Background(), admin) }

// keys derives deterministic root and seed keys.
func keys(t testing.TB) (rootKey, seedKey *trust.PrivateKey) {
	mk := func(label string) *trust.PrivateKey {
		s := sha256.Sum256([]byte(label))
		k, err := trust.GenerateKey(bytes.NewReader(s[:]))
		if err != nil {
			panic(err) // reading 32 bytes from a bytes.Reader cannot fail
		}
		return k
	}
	return mk("root"), mk("seed")
}

// verifierFor returns a verifier trusting a root that delegates bundles to the seed key.
func verifierFor(t testing.TB, domain string) *trust.Verifier {
	rootKey, seedKey := keys(t)
	msg, err := trust.BuildRoot(trust.RootSpec{Domain: domain, Version: 1, IssuedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(time.Hour * 24),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1, SeedKeys: []trust.PublicKey{seedKey.Public()}, SeedThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	env, _ := trust.RootEnvelope(msg)
	if err := trust.Sign(env, rootKey); err != nil {
		t.Fatal(err)
	}
	b, _ := trust.MarshalEnvelope(env)
	root, err := trust.VerifyRoot(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := trust.NewVerifier(trust.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type testSeed struct {
	*seed.Seed
	store *boltstore.Store
	dir   string
	api   adminv1.AdminServiceServer
	root  []byte // Config.Root
}

// open starts a seed on dir (a fresh one when dir is "") with a fast debounce.
func open(t testing.TB, dir string, tweak ...func(*seed.Config)) *testSeed {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := boltstore.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, seedKey := keys(t)
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store = "prod", 1, seedKey, st
	cfg.Debounce, cfg.MaxDelay = 5*time.Millisecond, 50*time.Millisecond
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := seed.New(context.Background(), cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	ts := &testSeed{Seed: s, store: st, dir: dir, api: s.AdminServer(), root: cfg.Root}
	t.Cleanup(func() { ts.close() })
	return ts
}

func (ts *testSeed) close() {
	if ts.Seed != nil {
		ts.Seed.Close()
		ts.store.Close()
		ts.Seed = nil
	}
}

// resources decodes YAML (or a path) into admin resources.
func resources(t testing.TB, yamlOrPath string) []*adminv1.Resource {
	t.Helper()
	var objs []bundle.Object
	var err error
	if bytes.HasPrefix([]byte(yamlOrPath), []byte("apiVersion")) {
		objs, err = bundle.Decode("test.yaml", []byte(yamlOrPath))
	} else {
		objs, err = bundle.LoadPath(yamlOrPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*adminv1.Resource, len(objs))
	for i, o := range objs {
		if out[i], err = seed.ResourceFromObject(o); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (ts *testSeed) apply(t testing.TB, rs []*adminv1.Resource) *adminv1.ApplyResponse {
	t.Helper()
	resp, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: rs})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp
}

// waitPublished waits for version >= v.
func (ts *testSeed) waitPublished(t testing.TB, v uint64) *seed.Publication {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := ts.MemPublisher().WaitVersion(ctx, v)
	if err != nil {
		t.Fatalf("version %d was not published: %v (status %v)", v, err, ts.Status())
	}
	return p
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

type bundleMeta = bundlev1.Metadata

func clusterSpec() *bundlev1.ClusterSpec {
	return &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 80}}}
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 20 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startErr starts a seed on the store in dir, with tweak applied to its configuration,
// closes it again, and returns what seed.New said: for tests of what a seed refuses to
// start on.
func startErr(t testing.TB, dir string, tweak ...func(*seed.Config)) error {
	t.Helper()
	st, err := boltstore.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, seedKey := keys(t)
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store = "prod", 1, seedKey, st
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := seed.New(context.Background(), cfg)
	if s != nil {
		s.Close()
	}
	return err
}
