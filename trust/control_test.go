package trust_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	"meshkit.dev/meshkit/trust"
)

func controlMsg(version uint64, roots ...[]byte) *identityv1.Control {
	return &identityv1.Control{
		Header: &bundlev1.BundleHeader{
			SchemaVersion: 1, Domain: "prod", Epoch: 1, Version: version,
			IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(time.Hour)),
		},
		Roots:       roots,
		TrustBundle: []byte("-----BEGIN CERTIFICATE-----\n"),
		Revocations: []*identityv1.Revocation{{PeerId: "12D3KooWrevoked", Until: timestamppb.New(t0.Add(time.Hour))}},
	}
}

// rotation is root version v of prod with the given seed and CA keys, signed by the
// previous and the new root keys.
func (f *fixture) rotation(t *testing.T, v uint64, rootKey *trust.PrivateKey, prevRootKey *trust.PrivateKey, seed, ca *trust.PrivateKey) []byte {
	t.Helper()
	return signedRoot(t, trust.RootSpec{
		Domain: "prod", Version: v, IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(365 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1,
		SeedKeys: []trust.PublicKey{seed.Public()}, SeedThreshold: 1,
		CAKeys: []trust.PublicKey{ca.Public()}, CAThreshold: 1,
	}, prevRootKey, rootKey)
}

func TestControlIsSignedByTheCARoleOnly(t *testing.T) {
	f := newFixture(t)
	payload := encode(t, controlMsg(1))
	for _, tc := range []struct {
		name   string
		signer *trust.PrivateKey
		want   error
	}{
		{"ca", f.ca, nil},
		{"seed", f.seed, trust.ErrKeyRole},
		{"bridge", f.bridge, trust.ErrKeyRole},
		{"root", f.rootKey, trust.ErrKeyRole},
		{"stranger", f.stranger, trust.ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vb, err := f.verifier(t, nil).Verify(seal(t, trust.PayloadControl, payload, tc.signer))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil && (vb.Source != trust.ControlSource || vb.Variant != trust.ControlVariant || len(vb.Control.GetRevocations()) != 1) {
				t.Fatalf("verified control: source %q, variant %q, %d revocations", vb.Source, vb.Variant, len(vb.Control.GetRevocations()))
			}
		})
	}
}

// TestControlCarriesRootRotations: a verifier that slept through three rotations, each
// replacing the seed and CA keys, walks them from one control message signed by the
// newest CA key, then verifies the newest seed's bundles and refuses the old seed's.
func TestControlCarriesRootRotations(t *testing.T) {
	f := newFixture(t)
	r1 := f.rootKey
	keys := []struct{ root, seed, ca *trust.PrivateKey }{{r1, f.seed, f.ca}}
	var chain [][]byte
	for v := uint64(2); v <= 4; v++ {
		prev := keys[len(keys)-1]
		next := struct{ root, seed, ca *trust.PrivateKey }{mustKey(t), mustKey(t), mustKey(t)}
		chain = append(chain, f.rotation(t, v, next.root, prev.root, next.seed, next.ca))
		keys = append(keys, next)
	}
	newest := keys[len(keys)-1]
	v := f.verifier(t, map[string]trust.Mark{"core/v1": {Epoch: 1, Version: 9}})
	old := seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 10, "shop")), f.seed)
	if _, err := v.Verify(old); err != nil {
		t.Fatalf("before the rotation the first seed signs: %v", err)
	}

	// Signed by the old CA key, the message does not verify under the root it leads to.
	if _, err := v.Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(1, chain...)), f.ca)); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("control signed by a retired CA key: err = %v, want unknown key", err)
	}
	vb, err := v.Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(1, chain...)), newest.ca))
	if err != nil {
		t.Fatal(err)
	}
	if v.Root().Version() != 1 {
		t.Fatal("Verify adopted the root before Commit")
	}
	if err := v.Commit(vb); err != nil {
		t.Fatal(err)
	}
	if got := v.Root().Version(); got != 4 {
		t.Fatalf("root v%d after the control message, want v4", got)
	}
	if _, err := v.Verify(old); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("a bundle of the retired seed key: err = %v, want unknown key", err)
	}
	// The seed keys changed: the marks were reset (TUF), so the new seed starts afresh.
	if _, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 1, "shop")), newest.seed)); err != nil {
		t.Fatalf("the newest seed's bundle: %v", err)
	}
	// Replaying the chain changes nothing, and a rollback of the control stream is refused.
	if _, err := v.Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(1, chain...)), newest.ca)); !errors.Is(err, trust.ErrReplay) {
		t.Fatalf("replayed control: err = %v, want replay", err)
	}
	vb2, err := v.Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(2, chain...)), newest.ca))
	if err != nil || v.Commit(vb2) != nil || vb2.NextRoot != nil {
		t.Fatalf("control v2 over the same chain: %v (next root %v)", err, vb2.NextRoot)
	}
}

func TestControlRefusesBadRootChains(t *testing.T) {
	f := newFixture(t)
	seed2, ca2, root2 := mustKey(t), mustKey(t), mustKey(t)
	good2 := f.rotation(t, 2, root2, f.rootKey, seed2, ca2)
	for _, tc := range []struct {
		name  string
		roots [][]byte
		want  error
	}{
		// Signed only by the new root key: the old root role never approved it.
		{"forged", [][]byte{f.rotation(t, 2, root2, root2, seed2, ca2)}, trust.ErrUnknownKey},
		{"gap", [][]byte{f.rotation(t, 3, root2, f.rootKey, seed2, ca2)}, trust.ErrRootVersion},
		{"garbage", [][]byte{[]byte("not a root")}, trust.ErrMalformed},
		{"good then forged", [][]byte{good2, f.rotation(t, 3, mustKey(t), mustKey(t), seed2, ca2)}, trust.ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := f.verifier(t, nil)
			_, err := v.Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(1, tc.roots...)), ca2, f.ca))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if v.Root().Version() != 1 {
				t.Fatal("a refused chain moved the root")
			}
		})
	}
	t.Run("too many roots", func(t *testing.T) {
		roots := make([][]byte, trust.MaxControlRoots+1)
		for i := range roots {
			roots[i] = good2
		}
		if _, err := f.verifier(t, nil).Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(1, roots...)), f.ca)); !errors.Is(err, trust.ErrOversized) {
			t.Fatalf("err = %v, want oversized", err)
		}
	})
	t.Run("capabilities", func(t *testing.T) {
		m := controlMsg(1)
		m.Header.RequiredCapabilities = []string{"core/v1"}
		if _, err := f.verifier(t, nil).Verify(seal(t, trust.PayloadControl, encode(t, m), f.ca)); !errors.Is(err, trust.ErrMalformed) {
			t.Fatalf("err = %v, want malformed", err)
		}
	})
	t.Run("committed after another rotation", func(t *testing.T) {
		v := f.verifier(t, nil)
		vb, err := v.Verify(seal(t, trust.PayloadControl, encode(t, controlMsg(1, good2)), ca2))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.RotateRoot(good2); err != nil {
			t.Fatal(err)
		}
		// The root it walked to is in force already: only the mark moves.
		if err := v.Commit(vb); err != nil || v.Root().Version() != 2 {
			t.Fatalf("commit: %v, root v%d", err, v.Root().Version())
		}
	})
}
