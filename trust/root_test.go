package trust_test

import (
	"errors"
	"testing"
	"time"

	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

func rootSpec(version uint64, rootKeys []*trust.PrivateKey, threshold int, seeds ...*trust.PrivateKey) trust.RootSpec {
	spec := trust.RootSpec{Domain: "prod", Version: version, IssuedAt: t0, ExpiresAt: t0.Add(90 * 24 * time.Hour), RootThreshold: threshold, SeedThreshold: 1}
	for _, k := range rootKeys {
		spec.RootKeys = append(spec.RootKeys, k.Public())
	}
	for _, k := range seeds {
		spec.SeedKeys = append(spec.SeedKeys, k.Public())
	}
	return spec
}

func signers(ks ...*trust.PrivateKey) []trust.Signer {
	out := make([]trust.Signer, len(ks))
	for i, k := range ks {
		out[i] = k
	}
	return out
}

func TestRootRotationNeedsOldAndNewThresholds(t *testing.T) {
	a, b, c, d, seed := mustKey(t), mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	v1 := signedRoot(t, rootSpec(1, []*trust.PrivateKey{a, b}, 2, seed), a, b)
	root1, err := trust.VerifyRoot(v1)
	if err != nil {
		t.Fatal(err)
	}
	next := rootSpec(2, []*trust.PrivateKey{c, d}, 2, seed)

	cases := []struct {
		name    string
		signers []*trust.PrivateKey
		spec    trust.RootSpec
		want    error
	}{
		{"old and new thresholds", []*trust.PrivateKey{a, b, c, d}, next, nil},
		{"only one old key", []*trust.PrivateKey{a, c, d}, next, trust.ErrThreshold},
		{"only new keys", []*trust.PrivateKey{c, d}, next, trust.ErrUnknownKey},
		{"only one new key", []*trust.PrivateKey{a, b, c}, next, trust.ErrThreshold},
		{"skips a version", []*trust.PrivateKey{a, b, c, d}, func() trust.RootSpec { s := next; s.Version = 3; return s }(), trust.ErrRootVersion},
		{"same version again", []*trust.PrivateKey{a, b, c, d}, func() trust.RootSpec { s := next; s.Version = 1; return s }(), trust.ErrRootVersion},
		{"other domain", []*trust.PrivateKey{a, b, c, d}, func() trust.RootSpec { s := next; s.Domain = "staging"; return s }(), trust.ErrWrongDomain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root2, err := root1.VerifyNext(signedRoot(t, tc.spec, signers(tc.signers...)...))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && root2.Version() != 2 {
				t.Fatalf("version = %d", root2.Version())
			}
		})
	}
}

func TestVerifyRootSelfSignature(t *testing.T) {
	a, b, seed, stranger := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	spec := rootSpec(1, []*trust.PrivateKey{a, b}, 2, seed)
	if _, err := trust.VerifyRoot(signedRoot(t, spec, a)); !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("one of two root signatures: err = %v, want ErrThreshold", err)
	}
	if _, err := trust.VerifyRoot(signedRoot(t, spec, seed)); !errors.Is(err, trust.ErrKeyRole) {
		t.Fatalf("signed by the seed key: err = %v, want ErrKeyRole", err)
	}
	if _, err := trust.VerifyRoot(signedRoot(t, spec, stranger)); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("signed by a stranger: err = %v, want ErrUnknownKey", err)
	}
	root, err := trust.VerifyRoot(signedRoot(t, spec, a, b))
	if err != nil {
		t.Fatal(err)
	}
	if root.Domain() != "prod" || root.Version() != 1 || !root.ExpiresAt().Equal(t0.Add(90*24*time.Hour)) {
		t.Fatalf("root = %s v%d expires %s", root.Domain(), root.Version(), root.ExpiresAt())
	}
}

func TestBuildRootRefusesInvalidSpecs(t *testing.T) {
	a, seed := mustKey(t), mustKey(t)
	base := rootSpec(1, []*trust.PrivateKey{a}, 1, seed)
	cases := map[string]func(s *trust.RootSpec){
		"threshold above key count": func(s *trust.RootSpec) { s.RootThreshold = 2 },
		"zero threshold":            func(s *trust.RootSpec) { s.SeedThreshold = 0 },
		"no seed keys":              func(s *trust.RootSpec) { s.SeedKeys = nil },
		"bad domain":                func(s *trust.RootSpec) { s.Domain = "Prod_1" },
		"version 0":                 func(s *trust.RootSpec) { s.Version = 0 },
		"expires before issued":     func(s *trust.RootSpec) { s.ExpiresAt = s.IssuedAt.Add(-time.Second) },
		"bridge without namespaces": func(s *trust.RootSpec) {
			s.Bridges = []trust.BridgeSpec{{Name: "eu", Keys: []trust.PublicKey{seed.Public()}, Threshold: 1}}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			s := base
			mutate(&s)
			if _, err := trust.BuildRoot(s); !errors.Is(err, trust.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := trust.BuildRoot(base); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
}

// TestFastForwardRecovery follows TUF: a compromised seed key signs an absurd version;
// rotating that key out resets the marks so the new key's bundles are accepted again,
// while the old key's bundles become unknown-key failures.
func TestFastForwardRecovery(t *testing.T) {
	rootKey, oldSeed, newSeed := mustKey(t), mustKey(t), mustKey(t)
	v1 := signedRoot(t, rootSpec(1, []*trust.PrivateKey{rootKey}, 1, oldSeed), rootKey)
	root1, _ := trust.VerifyRoot(v1)
	v, err := trust.NewVerifier(trust.Config{Root: root1, Clock: &clock{now: t0}})
	if err != nil {
		t.Fatal(err)
	}
	attack, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 1<<40, "shop")), oldSeed))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(attack); err != nil {
		t.Fatal(err)
	}

	// Adding a key keeps the marks: version 5 is still a rollback.
	added := signedRoot(t, rootSpec(2, []*trust.PrivateKey{rootKey}, 1, oldSeed, newSeed), rootKey)
	if err := v.RotateRoot(added); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 5, "shop")), newSeed)); !errors.Is(err, trust.ErrRollback) {
		t.Fatalf("after adding a key: err = %v, want ErrRollback", err)
	}

	// Removing the compromised key resets them.
	removed := signedRoot(t, rootSpec(3, []*trust.PrivateKey{rootKey}, 1, newSeed), rootKey)
	if err := v.RotateRoot(removed); err != nil {
		t.Fatal(err)
	}
	if v.Root().Version() != 3 || v.State().RootVersion != 3 {
		t.Fatalf("root in force v%d", v.Root().Version())
	}
	if _, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 5, "shop")), newSeed)); err != nil {
		t.Fatalf("new key's bundle after rotation: %v", err)
	}
	if _, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 1<<41, "shop")), oldSeed)); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("revoked key's bundle: err = %v, want ErrUnknownKey", err)
	}
	// A rotation replayed is refused.
	if err := v.RotateRoot(removed); !errors.Is(err, trust.ErrRootVersion) {
		t.Fatalf("replayed rotation: err = %v, want ErrRootVersion", err)
	}
}

func TestRootRolesAreCanonical(t *testing.T) {
	f := newFixture(t)
	var types []trustv1.RoleType
	for _, r := range f.root.Proto().GetRoles() {
		types = append(types, r.GetType())
	}
	want := []trustv1.RoleType{trustv1.RoleType_ROLE_TYPE_ROOT, trustv1.RoleType_ROLE_TYPE_SEED, trustv1.RoleType_ROLE_TYPE_BRIDGE, trustv1.RoleType_ROLE_TYPE_CA}
	if len(types) != len(want) {
		t.Fatalf("roles %v", types)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("roles %v, want sorted %v", types, want)
		}
	}
}
