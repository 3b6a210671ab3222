package trust_test

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/internal/fuzzcorpus"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

// fixedKey derives a key from a label so that corpus entries stay valid across runs.
func fixedKey(t testing.TB, label string) *trust.PrivateKey {
	seed := sha256.Sum256([]byte(label))
	k, err := trust.GenerateKey(bytes.NewReader(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type fuzzFixture struct {
	root      *trust.Root
	rootBytes []byte
	seed, ca  *trust.PrivateKey
	// control is a control message signed by the CA role carrying root v2 (which
	// replaces the seed key), and control2 the next one, carrying v2 and v3.
	control, control2 []byte
}

func newFuzzFixture(t testing.TB) fuzzFixture {
	rootKey, seed, bridge, caKey := fixedKey(t, "root"), fixedKey(t, "seed"), fixedKey(t, "bridge"), fixedKey(t, "ca")
	spec := func(v uint64, seed *trust.PrivateKey) trust.RootSpec {
		return trust.RootSpec{
			Domain: "prod", Version: v, IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(365 * 24 * time.Hour),
			RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1,
			SeedKeys: []trust.PublicKey{seed.Public()}, SeedThreshold: 1,
			CAKeys: []trust.PublicKey{caKey.Public()}, CAThreshold: 1,
			Bridges: []trust.BridgeSpec{{Name: "eu", Keys: []trust.PublicKey{bridge.Public()}, Threshold: 1, Namespaces: []string{"shop"}}},
		}
	}
	rb := signedRoot(t, spec(1, seed), rootKey)
	root, err := trust.VerifyRoot(rb)
	if err != nil {
		t.Fatal(err)
	}
	v2, v3 := signedRoot(t, spec(2, fixedKey(t, "seed2")), rootKey), signedRoot(t, spec(3, fixedKey(t, "seed3")), rootKey)
	return fuzzFixture{root: root, rootBytes: rb, seed: seed, ca: caKey,
		control:  seal(t, trust.PayloadControl, encode(t, controlMsg(1, v2)), caKey),
		control2: seal(t, trust.PayloadControl, encode(t, controlMsg(2, v2, v3)), caKey)}
}

// corpus returns the seed inputs of each fuzz target.
func corpus(t testing.TB) map[string][][]byte {
	f := newFuzzFixture(t)
	bundle := seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 2, "shop")), f.seed)
	bridged := seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 3, "billing")), fixedKey(t, "bridge"))
	pubPEM, _ := f.seed.Public().MarshalPEM()
	jsonEnv, _ := trust.EnvelopeJSON(decodeEnv(t, bundle))
	p1, p2 := encode(t, bundleMsg(1, 1, "shop")), encode(t, bundleMsg(1, 2, "shop"))
	h1, h2 := sha256.Sum256(p1), sha256.Sum256(p2)
	delta := seal(t, trust.PayloadDelta, encode(t, &bundlev1.BundleDelta{Header: bundleMsg(1, 2, "shop").Header, BaseEpoch: 1, BaseVersion: 1, BaseHash: h1[:], TargetHash: h2[:]}), f.seed)
	announce := seal(t, trust.PayloadAnnounce, encode(t, &bundlev1.Announce{Header: bundleMsg(1, 2, "shop").Header, SnapshotHash: h2[:], SnapshotSize: uint64(len(p2))}), f.seed)
	return map[string][][]byte{
		"FuzzVerifyHeld": {
			encode(t, &syncv1.HeldBundle{Proof: delta, Payload: p2}),
			encode(t, &syncv1.HeldBundle{Proof: bundle}),
			encode(t, &syncv1.HeldBundle{Proof: announce}),
			encode(t, &syncv1.HeldBundle{Proof: f.control2}),
		},
		"FuzzDecodeEnvelope": {bundle, jsonEnv, f.rootBytes, {}},
		"FuzzVerify":         {bundle, bridged, f.rootBytes, []byte("{}"), f.control, f.control2},
		"FuzzVerifyRoot":     {f.rootBytes, bundle},
		// No private key is committed, not even a test one: FuzzParseKeyPEM adds it at run time.
		"FuzzParseKeyPEM": {pubPEM, []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")},
	}
}

// TestFuzzCorpus keeps testdata/fuzz in step with the fixtures (-update-corpus rewrites it).
func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, corpus(t), *updateCorpus)
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := trust.DecodeEnvelope(data, 1<<20)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same envelope.
		b, err := trust.MarshalEnvelope(env)
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		again, err := trust.DecodeEnvelope(b, 1<<21)
		if err != nil || again.GetPayloadType() != env.GetPayloadType() || !bytes.Equal(again.GetPayload(), env.GetPayload()) {
			t.Fatalf("round trip changed the envelope: %v", err)
		}
	})
}

func FuzzVerify(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := trust.NewVerifier(trust.Config{Root: fx.root, Clock: &clock{now: t0}, MaxEnvelopeBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		vb, err := v.Verify(data)
		if err != nil {
			if trust.Reason(err) == "other" {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		if sha256.Sum256(vb.Payload) != vb.Digest || vb.Header.GetDomain() != "prod" {
			t.Fatalf("accepted inconsistent input: domain %q", vb.Header.GetDomain())
		}
		// Only the CA role signs control messages, and the fuzzer holds none of its keys:
		// an accepted one is one of the fixture's, with the rotations they carry.
		if vb.PayloadType == trust.PayloadControl {
			known := false
			for _, c := range [][]byte{fx.control, fx.control2} {
				env, err := trust.DecodeEnvelope(c, 0)
				if err != nil {
					t.Fatal(err)
				}
				known = known || bytes.Equal(env.GetPayload(), vb.Payload)
			}
			if !known || (vb.NextRoot != nil && vb.NextRoot.Version() > 3) {
				t.Fatalf("accepted a control message the CA role never signed (next root %v)", vb.NextRoot)
			}
		}
	})
}

// FuzzVerifyHeld decodes the input as the sync protocol's HeldBundle and verifies it, and
// verifies the proof as an announce: whatever is accepted must match its signed hash.
func FuzzVerifyHeld(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		held := &syncv1.HeldBundle{}
		if err := proto.Unmarshal(data, held); err != nil {
			return
		}
		proof, payload := held.GetProof(), held.GetPayload()
		v, err := trust.NewVerifier(trust.Config{Root: fx.root, Clock: &clock{now: t0}, MaxEnvelopeBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if vb, err := v.VerifyHeld(proof, payload); err == nil {
			if sha256.Sum256(vb.Payload) != vb.Held || (vb.PayloadType != trust.PayloadBundle && vb.PayloadType != trust.PayloadControl) {
				t.Fatalf("held bundle accepted with payload hash %x, held %s", sha256.Sum256(vb.Payload), vb.Held)
			}
		} else if trust.Reason(err) == "other" {
			t.Fatalf("refusal without a reason: %v", err)
		}
		if vb, err := v.VerifyAnnounce(proof); err == nil && vb.Announce == nil {
			t.Fatal("announce accepted without its body")
		} else if err != nil && trust.Reason(err) == "other" {
			t.Fatalf("refusal without a reason: %v", err)
		}
	})
}

func FuzzVerifyRoot(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := trust.VerifyRoot(data)
		if err == nil && r.Domain() == "" {
			t.Fatal("accepted a root without a domain")
		}
		if _, err := fx.root.VerifyNext(data); err == nil && !bytes.Equal(data, fx.rootBytes) {
			// A successor must be version 2 signed by our fixed root key: the fuzzer cannot forge that.
			t.Fatal("accepted a forged rotation")
		}
	})
}

func FuzzParseKeyPEM(f *testing.F) {
	privPEM, err := fixedKey(f, "seed").MarshalPrivatePEM()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(privPEM)
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := trust.ParseKeyPEM(data)
		if err != nil {
			return
		}
		if id, err := trust.KeyID(kf.Public.Key); err != nil || id != kf.Public.ID {
			t.Fatalf("key id %s does not match the key", kf.Public.ID)
		}
	})
}
