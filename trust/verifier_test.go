package trust_test

import (
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

// TestVerifyRejections covers every rejection reason with an input that would be
// accepted but for that one defect. The held mark is (epoch 1, version 1).
func TestVerifyRejections(t *testing.T) {
	f := newFixture(t)
	held := map[string]trust.Mark{"core/v1": {Epoch: 1, Version: 1, Hash: "sha256:00"}}
	good := func() *bundlev1.Bundle { return bundleMsg(1, 2, "shop") }

	cases := []struct {
		name    string
		input   func(t *testing.T) []byte
		cfg     func(c *trust.Config)
		at      time.Time
		want    error // nil: accepted
		wantMsg string
	}{
		{name: "accepted", input: func(t *testing.T) []byte { return seal(t, trust.PayloadBundle, encode(t, good()), f.seed) }},
		{name: "bad signature", want: trust.ErrBadSignature, input: func(t *testing.T) []byte {
			env := decodeEnv(t, seal(t, trust.PayloadBundle, encode(t, good()), f.seed))
			env.Payload[len(env.Payload)-1] ^= 1
			b, _ := trust.MarshalEnvelope(env)
			return b
		}},
		{name: "truncated signature", want: trust.ErrBadSignature, input: func(t *testing.T) []byte {
			env := decodeEnv(t, seal(t, trust.PayloadBundle, encode(t, good()), f.seed))
			env.Signatures[0].Sig = env.Signatures[0].Sig[:10]
			b, _ := trust.MarshalEnvelope(env)
			return b
		}},
		{name: "unsigned", want: trust.ErrThreshold, input: func(t *testing.T) []byte { return seal(t, trust.PayloadBundle, encode(t, good())) }},
		{name: "unknown key", want: trust.ErrUnknownKey, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, good()), f.stranger)
		}},
		{name: "CA key signs a bundle", want: trust.ErrKeyRole, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, good()), f.ca)
		}},
		{name: "root key signs a bundle", want: trust.ErrKeyRole, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, good()), f.rootKey)
		}},
		{name: "bridge inside its namespace", input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, good()), f.bridge)
		}},
		{name: "bridge outside its namespace", want: trust.ErrNamespace, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 2, "billing")), f.bridge)
		}},
		{name: "wrong domain", want: trust.ErrWrongDomain, input: func(t *testing.T) []byte {
			b := good()
			b.Header.Domain = "staging"
			return seal(t, trust.PayloadBundle, encode(t, b), f.seed)
		}},
		{name: "replay of held version", want: trust.ErrReplay, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 1, "shop")), f.seed)
		}},
		{name: "rollback to an older epoch", want: trust.ErrRollback, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, bundleMsg(0, 9, "shop")), f.seed)
		}},
		{name: "newer epoch wins over lower version", input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, bundleMsg(2, 1, "shop")), f.seed)
		}},
		{name: "expired bundle", want: trust.ErrExpired, at: t0.Add(2 * time.Hour), input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, good()), f.seed)
		}},
		{name: "issued in the future", want: trust.ErrNotYetValid, input: func(t *testing.T) []byte {
			b := good()
			b.Header.IssuedAt = timestamppb.New(t0.Add(time.Hour))
			b.Header.ExpiresAt = timestamppb.New(t0.Add(2 * time.Hour))
			return seal(t, trust.PayloadBundle, encode(t, b), f.seed)
		}},
		{name: "expired root freezes the domain", want: trust.ErrRootExpired, at: t0.Add(366 * 24 * time.Hour), input: func(t *testing.T) []byte {
			b := good()
			b.Header.ExpiresAt = timestamppb.New(t0.Add(400 * 24 * time.Hour))
			return seal(t, trust.PayloadBundle, encode(t, b), f.seed)
		}},
		{name: "oversized", want: trust.ErrOversized, cfg: func(c *trust.Config) { c.MaxEnvelopeBytes = 64 }, input: func(t *testing.T) []byte {
			return seal(t, trust.PayloadBundle, encode(t, good()), f.seed)
		}},
		{name: "unknown payload type", want: trust.ErrPayloadType, input: func(t *testing.T) []byte {
			return seal(t, "application/x-other", encode(t, good()), f.seed)
		}},
		{name: "root envelope offered as a bundle", want: trust.ErrPayloadType, input: func(t *testing.T) []byte { return f.rootBytes }},
		{name: "garbage", want: trust.ErrMalformed, input: func(t *testing.T) []byte { return []byte("\xff\xff\xff not an envelope") }},
		{name: "unsorted capabilities", want: trust.ErrMalformed, input: func(t *testing.T) []byte {
			b := good()
			b.Header.RequiredCapabilities = []string{"feature:ext-wasm", "core/v1"}
			return seal(t, trust.PayloadBundle, encode(t, b), f.seed)
		}},
		{name: "missing expiry", want: trust.ErrMalformed, input: func(t *testing.T) []byte {
			b := good()
			b.Header.ExpiresAt = nil
			return seal(t, trust.PayloadBundle, encode(t, b), f.seed)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := trust.Config{Root: f.root, Clock: &clock{now: t0}, State: trust.State{Marks: held}}
			if !tc.at.IsZero() {
				cfg.Clock = &clock{now: tc.at}
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			v, err := trust.NewVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			vb, err := v.Verify(tc.input(t))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if err := v.Commit(vb); err != nil {
					t.Fatalf("commit: %v", err)
				}
				if got := v.State().Marks[vb.Variant]; got.Version != vb.Header.GetVersion() || got.Hash != vb.Digest.String() {
					t.Fatalf("mark after commit = %+v", got)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var ve *trust.VerifyError
			if !errors.As(err, &ve) || ve.Detail == "" {
				t.Fatalf("err %v is not a *VerifyError with a detail", err)
			}
			if trust.Reason(err) == "other" {
				t.Fatalf("no reason label for %v", err)
			}
			if vb != nil {
				t.Fatal("refused input returned a Verified")
			}
		})
	}
}

func TestThresholdCountsDistinctKeys(t *testing.T) {
	rootKey, s1, s2 := mustKey(t), mustKey(t), mustKey(t)
	rootBytes := signedRoot(t, trust.RootSpec{
		Domain: "prod", Version: 1, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour * 24),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1,
		SeedKeys: []trust.PublicKey{s1.Public(), s2.Public()}, SeedThreshold: 2,
	}, rootKey)
	root, err := trust.VerifyRoot(rootBytes)
	if err != nil {
		t.Fatal(err)
	}
	v, err := trust.NewVerifier(trust.Config{Root: root, Clock: &clock{now: t0}})
	if err != nil {
		t.Fatal(err)
	}
	payload := encode(t, bundleMsg(1, 1, "shop"))

	// One key's signature repeated does not count twice.
	env := decodeEnv(t, seal(t, trust.PayloadBundle, payload, s1))
	env.Signatures = append(env.Signatures, env.Signatures[0])
	dup, _ := trust.MarshalEnvelope(env)
	if _, err := v.Verify(dup); !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("duplicate signature: err = %v, want ErrThreshold", err)
	}
	if _, err := v.Verify(seal(t, trust.PayloadBundle, payload, s1)); !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("one of two: err = %v, want ErrThreshold", err)
	}
	if _, err := v.Verify(seal(t, trust.PayloadBundle, payload, s1, s2)); err != nil {
		t.Fatalf("two of two: %v", err)
	}
}

func TestTooManySignaturesRefusedBeforeVerifying(t *testing.T) {
	f := newFixture(t)
	env := decodeEnv(t, seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 1, "shop")), f.seed))
	for len(env.Signatures) <= trust.MaxSignatures {
		env.Signatures = append(env.Signatures, env.Signatures[0])
	}
	b, _ := trust.MarshalEnvelope(env)
	if _, err := f.verifier(t, nil).Verify(b); !errors.Is(err, trust.ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestDeltaMustStartFromHeldBundle(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	basePayload := encode(t, bundleMsg(1, 1, "shop"))
	vb, err := v.Verify(seal(t, trust.PayloadBundle, basePayload, f.seed))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(vb); err != nil {
		t.Fatal(err)
	}
	target := bundleMsg(1, 2, "shop")
	baseHash := sha256.Sum256(basePayload)
	delta := func(base []byte, ns string) *bundlev1.BundleDelta {
		return &bundlev1.BundleDelta{
			Header: target.Header, BaseEpoch: 1, BaseVersion: 1, BaseHash: base, TargetHash: make([]byte, 32),
			Removals: []*bundlev1.ResourceKey{{Kind: "Route", Namespace: ns, Name: "api"}},
		}
	}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, delta(baseHash[:], "shop")), f.seed)); err != nil {
		t.Fatalf("delta from the held bundle refused: %v", err)
	}
	other := sha256.Sum256([]byte("another bundle at the same version"))
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, delta(other[:], "shop")), f.seed)); !errors.Is(err, trust.ErrBaseMismatch) {
		t.Fatalf("mix-and-match delta: err = %v, want ErrBaseMismatch", err)
	}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, delta(baseHash[:], "billing")), f.bridge)); !errors.Is(err, trust.ErrNamespace) {
		t.Fatalf("bridge delta removing outside its namespace: err = %v, want ErrNamespace", err)
	}
	// Upserts stay encoded in what Verify returns; a bridge's are still decoded and checked.
	upsert := delta(baseHash[:], "shop")
	upsert.Removals = nil
	upsert.Upserts = []*bundlev1.Resource{{Kind: &bundlev1.Resource_Route{Route: &bundlev1.Route{Metadata: &bundlev1.Metadata{Name: "api", Namespace: "billing"}}}}}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, upsert), f.bridge)); !errors.Is(err, trust.ErrNamespace) {
		t.Fatalf("bridge delta upserting outside its namespace: err = %v, want ErrNamespace", err)
	}
	garbled := &bundlev1.BundleDeltaView{Header: encode(t, target.Header), BaseEpoch: 1, BaseVersion: 1, BaseHash: baseHash[:], TargetHash: make([]byte, 32), Upserts: [][]byte{{0x12, 0x05, 0x0a}}}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, garbled), f.bridge)); !errors.Is(err, trust.ErrMalformed) || !strings.Contains(err.Error(), "upsert 0") {
		t.Fatalf("bridge delta with a garbled upsert: err = %v, want ErrMalformed naming upsert 0", err)
	}
	fresh := f.verifier(t, nil)
	if _, err := fresh.Verify(seal(t, trust.PayloadDelta, encode(t, delta(baseHash[:], "shop")), f.seed)); !errors.Is(err, trust.ErrBaseMismatch) {
		t.Fatalf("delta with nothing held: err = %v, want ErrBaseMismatch", err)
	}
}

// TestCommittedDeltaHoldsItsTarget: after a delta is committed the mark holds the target
// bundle's hash, so the next delta (based on that target) is accepted.
func TestCommittedDeltaHoldsItsTarget(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	p1 := encode(t, bundleMsg(1, 1, "shop"))
	vb, _ := v.Verify(seal(t, trust.PayloadBundle, p1, f.seed))
	if err := v.Commit(vb); err != nil {
		t.Fatal(err)
	}
	h1, h2 := sha256.Sum256(p1), sha256.Sum256(encode(t, bundleMsg(1, 2, "shop")))
	d2 := &bundlev1.BundleDelta{Header: bundleMsg(1, 2, "shop").Header, BaseEpoch: 1, BaseVersion: 1, BaseHash: h1[:], TargetHash: h2[:]}
	vd, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, d2), f.seed))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(vd); err != nil {
		t.Fatal(err)
	}
	if got := v.State().Marks["core/v1"].Hash; got != trust.Digest(h2).String() {
		t.Fatalf("mark hash %s, want the target %s", got, trust.Digest(h2))
	}
	d3 := &bundlev1.BundleDelta{Header: bundleMsg(1, 3, "shop").Header, BaseEpoch: 1, BaseVersion: 2, BaseHash: h2[:], TargetHash: make([]byte, 32)}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, d3), f.seed)); err != nil {
		t.Fatalf("delta from the committed delta's target: %v", err)
	}
}

func TestCommitRefusesWhenOvertaken(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	a, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 2, "shop")), f.seed))
	if err != nil {
		t.Fatal(err)
	}
	b, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 3, "shop")), f.seed))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(b); err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(a); !errors.Is(err, trust.ErrRollback) {
		t.Fatalf("commit of an overtaken bundle: err = %v, want ErrRollback", err)
	}
	if got := v.State().Marks["core/v1"].Version; got != 3 {
		t.Fatalf("mark = v%d, want v3", got)
	}
}

func TestVariantsKeepSeparateMarks(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	for _, caps := range [][]string{{"core/v1"}, {"core/v1", "feature:ext-wasm"}} {
		b := bundleMsg(1, 5, "shop")
		b.Header.RequiredCapabilities = caps
		vb, err := v.Verify(seal(t, trust.PayloadBundle, encode(t, b), f.seed))
		if err != nil {
			t.Fatalf("variant %v: %v", caps, err)
		}
		if err := v.Commit(vb); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.State().Marks); n != 2 {
		t.Fatalf("%d marks, want 2", n)
	}
}

func TestConcurrentVerifyAndCommit(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	var envs [][]byte
	for i := 1; i <= 20; i++ {
		envs = append(envs, seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, uint64(i), "shop")), f.seed))
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, e := range envs {
				if vb, err := v.Verify(e); err == nil {
					_ = v.Commit(vb) // losing a race is expected; the mark only moves forward
				}
			}
		}()
	}
	wg.Wait()
	if got := v.State().Marks["core/v1"].Version; got != 20 {
		t.Fatalf("final mark v%d, want v20", got)
	}
}

func TestNewVerifierRefusesStateFromANewerRoot(t *testing.T) {
	f := newFixture(t)
	_, err := trust.NewVerifier(trust.Config{Root: f.root, State: trust.State{Domain: "prod", RootVersion: 2}})
	if !errors.Is(err, trust.ErrRootVersion) {
		t.Fatalf("err = %v, want ErrRootVersion", err)
	}
	if _, err := trust.NewVerifier(trust.Config{Root: f.root, State: trust.State{Domain: "staging"}}); err == nil {
		t.Fatal("state of another domain accepted")
	}
}

func TestReasonLabelsAreDistinct(t *testing.T) {
	seen := map[string]error{}
	for _, e := range []error{trust.ErrOversized, trust.ErrMalformed, trust.ErrPayloadType, trust.ErrBadSignature, trust.ErrThreshold,
		trust.ErrUnknownKey, trust.ErrKeyRole, trust.ErrNamespace, trust.ErrWrongDomain, trust.ErrRollback, trust.ErrReplay,
		trust.ErrExpired, trust.ErrNotYetValid, trust.ErrRootExpired, trust.ErrRootVersion, trust.ErrBaseMismatch} {
		l := trust.Reason(e)
		if l == "" || l == "other" {
			t.Errorf("%v has no label", e)
		}
		if prev, dup := seen[l]; dup {
			t.Errorf("%v and %v share label %q", e, prev, l)
		}
		seen[l] = e
	}
	if trust.Reason(errors.New("x")) != "other" || trust.Reason(nil) != "" {
		t.Error("Reason of a foreign error or nil is wrong")
	}
}

// TestBridgeHasAStreamOfItsOwn: a bridge delegated one namespace signs a snapshot at a far
// higher (epoch, version) than the seed's. It verifies as the bridge's own stream, never
// advances or replaces the seed's mark, and the seed's next bundle is still accepted; each
// stream keeps its own replay and rollback order.
func TestBridgeHasAStreamOfItsOwn(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	accept := func(env []byte) *trust.Verified {
		t.Helper()
		vb, err := v.Verify(env)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Commit(vb); err != nil {
			t.Fatal(err)
		}
		return vb
	}
	seedV5 := accept(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 5, "shop")), f.seed))
	if seedV5.Source != "" || seedV5.Variant != "core/v1" {
		t.Fatalf("seed bundle: source %q variant %q", seedV5.Source, seedV5.Variant)
	}
	bridge := accept(seal(t, trust.PayloadBundle, encode(t, bundleMsg(900, 999_999, "shop")), f.bridge))
	if bridge.Source != "bridge/eu" || bridge.Variant != "bridge/eu|core/v1" {
		t.Fatalf("bridge bundle: source %q variant %q", bridge.Source, bridge.Variant)
	}
	accept(seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 6, "shop")), f.seed))
	marks := v.State().Marks
	if m := marks["core/v1"]; m.Epoch != 1 || m.Version != 6 {
		t.Fatalf("seed mark %+v, want (1, 6)", m)
	}
	if m := marks["bridge/eu|core/v1"]; m.Epoch != 900 || m.Version != 999_999 {
		t.Fatalf("bridge mark %+v, want (900, 999999)", m)
	}
	for _, tc := range []struct {
		name string
		env  []byte
		want error
	}{
		{"seed replay", seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 6, "shop")), f.seed), trust.ErrReplay},
		{"seed rollback", seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 4, "shop")), f.seed), trust.ErrRollback},
		{"bridge replay", seal(t, trust.PayloadBundle, encode(t, bundleMsg(900, 999_999, "shop")), f.bridge), trust.ErrReplay},
		{"bridge rollback", seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 7, "shop")), f.bridge), trust.ErrRollback},
		{"bridge snapshot outside its namespace", seal(t, trust.PayloadBundle, encode(t, bundleMsg(901, 1, "billing")), f.bridge), trust.ErrNamespace},
	} {
		if _, err := v.Verify(tc.env); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A bridge delta cannot build on the seed's bundle: its base must be the bridge's own.
	seedPayload := encode(t, bundleMsg(1, 6, "shop"))
	seedHash := sha256.Sum256(seedPayload)
	target := bundleMsg(901, 1, "shop")
	d := &bundlev1.BundleDelta{Header: target.Header, BaseEpoch: 1, BaseVersion: 6, BaseHash: seedHash[:], TargetHash: make([]byte, 32)}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, d), f.bridge)); !errors.Is(err, trust.ErrBaseMismatch) {
		t.Errorf("bridge delta on the seed's bundle: %v, want ErrBaseMismatch", err)
	}
}

func TestRoleKeys(t *testing.T) {
	f := newFixture(t)
	got := f.root.RoleKeys(trustv1.RoleType_ROLE_TYPE_SEED)
	if len(got) != 1 || got[0].ID != f.seed.KeyID() || !got[0].Key.Equal(f.seed.Public().Key) {
		t.Fatalf("seed role keys %v, want the seed key %s", got, f.seed.KeyID())
	}
	if got := f.root.RoleKeys(trustv1.RoleType_ROLE_TYPE_BRIDGE); len(got) != 1 || got[0].ID != f.bridge.KeyID() {
		t.Fatalf("bridge role keys %v", got)
	}
}
