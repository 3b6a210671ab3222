package trust_test

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// TestVerifyHeldAcceptsADeltaAsProofOfItsTarget: an agent that applied a delta holds the
// target payload and the delta envelope; a peer (or the agent itself after a restart) must
// accept that pair without holding the delta's base, and refuse any other payload.
func TestVerifyHeldAcceptsADeltaAsProofOfItsTarget(t *testing.T) {
	f := newFixture(t)
	p1, p2 := encode(t, bundleMsg(1, 1, "shop")), encode(t, bundleMsg(1, 2, "shop"))
	h1, h2 := sha256.Sum256(p1), sha256.Sum256(p2)
	d := &bundlev1.BundleDelta{Header: bundleMsg(1, 2, "shop").Header, BaseEpoch: 1, BaseVersion: 1, BaseHash: h1[:], TargetHash: h2[:]}
	proof := seal(t, trust.PayloadDelta, encode(t, d), f.seed)

	fresh := f.verifier(t, nil)
	vb, err := fresh.VerifyHeld(proof, p2)
	if err != nil {
		t.Fatalf("held target with its delta proof: %v", err)
	}
	if vb.PayloadType != trust.PayloadBundle || vb.Held != trust.Digest(h2) || vb.Header.GetVersion() != 2 {
		t.Fatalf("verified held bundle = %s v%d held %s, want a bundle v2 holding %s", vb.PayloadType, vb.Header.GetVersion(), vb.Held, trust.Digest(h2))
	}
	if err := fresh.Commit(vb); err != nil {
		t.Fatal(err)
	}
	if got := fresh.State().Marks["core/v1"]; got.Version != 2 || got.Hash != trust.Digest(h2).String() {
		t.Fatalf("mark after commit = %+v", got)
	}

	if _, err := f.verifier(t, nil).VerifyHeld(proof, p1); !errors.Is(err, trust.ErrHashMismatch) {
		t.Fatalf("other payload with the delta proof: err = %v, want ErrHashMismatch", err)
	}
	if _, err := f.verifier(t, nil).VerifyHeld(proof, nil); !errors.Is(err, trust.ErrHashMismatch) {
		t.Fatalf("delta proof without payload: err = %v, want ErrHashMismatch", err)
	}
	if _, err := fresh.VerifyHeld(proof, p2); !errors.Is(err, trust.ErrReplay) {
		t.Fatalf("held bundle already committed: err = %v, want ErrReplay", err)
	}
	snap := seal(t, trust.PayloadBundle, p1, f.seed)
	if _, err := f.verifier(t, nil).VerifyHeld(snap, nil); err != nil {
		t.Fatalf("signed snapshot as its own proof: %v", err)
	}
	if _, err := f.verifier(t, nil).VerifyHeld(snap, p2); !errors.Is(err, trust.ErrHashMismatch) {
		t.Fatalf("snapshot proof with a different payload: err = %v, want ErrHashMismatch", err)
	}
	if _, err := f.verifier(t, nil).VerifyHeld(seal(t, trust.PayloadDelta, encode(t, d), f.stranger), p2); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("delta proof signed by a stranger: err = %v, want ErrUnknownKey", err)
	}
}

// TestVerifyHeldChecksBridgeNamespacesOnTheTarget: a bridge's delta proof must not smuggle
// a target bundle with resources outside the bridge's namespaces.
func TestVerifyHeldChecksBridgeNamespacesOnTheTarget(t *testing.T) {
	f := newFixture(t)
	p2 := encode(t, bundleMsg(1, 2, "billing"))
	h2 := sha256.Sum256(p2)
	d := &bundlev1.BundleDelta{Header: bundleMsg(1, 2, "billing").Header, BaseEpoch: 1, BaseVersion: 1, BaseHash: make([]byte, 32), TargetHash: h2[:]}
	if _, err := f.verifier(t, nil).VerifyHeld(seal(t, trust.PayloadDelta, encode(t, d), f.bridge), p2); !errors.Is(err, trust.ErrNamespace) {
		t.Fatalf("err = %v, want ErrNamespace", err)
	}
}

func TestVerifyAnnounce(t *testing.T) {
	f := newFixture(t)
	p := encode(t, bundleMsg(1, 3, "shop"))
	h := sha256.Sum256(p)
	a := &bundlev1.Announce{Header: bundleMsg(1, 3, "shop").Header, SnapshotHash: h[:], SnapshotSize: uint64(len(p))}
	env := seal(t, trust.PayloadAnnounce, encode(t, a), f.seed)

	v := f.verifier(t, map[string]trust.Mark{"core/v1": {Epoch: 1, Version: 2, Hash: "sha256:00"}})
	vb, err := v.VerifyAnnounce(env)
	if err != nil {
		t.Fatal(err)
	}
	if vb.Held != trust.Digest(h) || vb.Announce.GetSnapshotSize() != uint64(len(p)) {
		t.Fatalf("announce names %s (%d bytes), want %s (%d)", vb.Held, vb.Announce.GetSnapshotSize(), trust.Digest(h), len(p))
	}
	if err := v.Commit(vb); err == nil {
		t.Fatal("an announce was committed")
	}
	if _, err := v.Verify(env); !errors.Is(err, trust.ErrPayloadType) {
		t.Fatalf("Verify of an announce: err = %v, want ErrPayloadType", err)
	}
	if _, err := v.VerifyAnnounce(seal(t, trust.PayloadBundle, p, f.seed)); !errors.Is(err, trust.ErrPayloadType) {
		t.Fatalf("VerifyAnnounce of a bundle: err = %v, want ErrPayloadType", err)
	}
	stale := f.verifier(t, map[string]trust.Mark{"core/v1": {Epoch: 1, Version: 3, Hash: trust.Digest(h).String()}})
	if _, err := stale.VerifyAnnounce(env); !errors.Is(err, trust.ErrReplay) {
		t.Fatalf("announce of the held version: err = %v, want ErrReplay", err)
	}
	if _, err := v.VerifyAnnounce(seal(t, trust.PayloadAnnounce, encode(t, a), f.stranger)); !errors.Is(err, trust.ErrUnknownKey) {
		t.Fatalf("announce by a stranger: err = %v, want ErrUnknownKey", err)
	}
	short := &bundlev1.Announce{Header: a.Header, SnapshotHash: h[:8]}
	if _, err := v.VerifyAnnounce(seal(t, trust.PayloadAnnounce, encode(t, short), f.seed)); !errors.Is(err, trust.ErrMalformed) {
		t.Fatalf("announce with a short hash: err = %v, want ErrMalformed", err)
	}
}

// TestAllowExpiredFlagsInsteadOfRefusing: the LKG loader re-verifies an expired bundle
// and serves it, flagged; the ordinary verifier refuses it.
func TestAllowExpiredFlagsInsteadOfRefusing(t *testing.T) {
	f := newFixture(t)
	env := seal(t, trust.PayloadBundle, encode(t, bundleMsg(1, 1, "shop")), f.seed)
	late := &clock{now: t0.Add(2 * time.Hour)}
	strict, err := trust.NewVerifier(trust.Config{Root: f.root, Clock: late})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.VerifyHeld(env, nil); !errors.Is(err, trust.ErrExpired) {
		t.Fatalf("strict: err = %v, want ErrExpired", err)
	}
	lenient, err := trust.NewVerifier(trust.Config{Root: f.root, Clock: late, AllowExpired: true})
	if err != nil {
		t.Fatal(err)
	}
	vb, err := lenient.VerifyHeld(env, nil)
	if err != nil || !vb.Expired {
		t.Fatalf("lenient: err = %v, expired = %v; want accepted and flagged", err, vb != nil && vb.Expired)
	}
	onTime, err := trust.NewVerifier(trust.Config{Root: f.root, Clock: f.clock, AllowExpired: true})
	if err != nil {
		t.Fatal(err)
	}
	if vb, err := onTime.VerifyHeld(env, nil); err != nil || vb.Expired {
		t.Fatalf("within validity: err = %v, flagged expired = %v", err, vb != nil && vb.Expired)
	}
}
