package bundle

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// viewOf encodes d and decodes it as a peer does.
func viewOf(t testing.TB, d *bundlev1.BundleDelta) *bundlev1.BundleDeltaView {
	t.Helper()
	enc, err := EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	v, err := DecodeDeltaView(enc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDeltaViewReproducesTarget: along random chains of edits across kinds (changes,
// removals, additions), applying each delta to the base's bytes yields exactly the
// target's bytes, on the wire path itself and not by falling back to decoding.
func TestDeltaViewReproducesTarget(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 3))
	cur := genBundle(1, 50)
	curPayload, err := Encode(cur)
	if err != nil {
		t.Fatal(err)
	}
	for step := range 200 {
		next := proto.Clone(cur).(*bundlev1.Bundle)
		mutate(rng, next)
		if step%7 == 0 && len(next.Routes) > 0 { // a changed route, besides what mutate did
			next.Routes[0] = proto.Clone(next.Routes[0]).(*bundlev1.Route)
			next.Routes[0].Spec.Cluster = "moved"
		}
		nextPayload, err := Encode(next)
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDelta(curPayload, nextPayload)
		if err != nil {
			t.Fatal(err)
		}
		v := viewOf(t, d)
		wire, ok := applyWire(curPayload, v)
		if !ok {
			t.Fatalf("step %d: the wire path did not apply a canonical delta", step)
		}
		if !bytes.Equal(wire, nextPayload) {
			t.Fatalf("step %d: wire path produced %s, target is %s", step, Hash(wire), Hash(nextPayload))
		}
		got, err := ApplyDeltaView(curPayload, Hash(curPayload), v)
		if err != nil || !bytes.Equal(got, nextPayload) {
			t.Fatalf("step %d: ApplyDeltaView = %s, %v; target is %s", step, Hash(got), err, Hash(nextPayload))
		}
		cur, curPayload = next, nextPayload
	}
}

// reorderFields re-encodes a message with its top-level fields in reverse order: the same
// message, in a non-canonical encoding.
func reorderFields(t *testing.T, msg []byte) []byte {
	t.Helper()
	var fields [][]byte
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if n < 0 || m < 0 {
			t.Fatal("bad encoding")
		}
		fields = append(fields, msg[:n+m])
		msg = msg[n+m:]
	}
	var out []byte
	for i := len(fields) - 1; i >= 0; i-- {
		out = append(out, fields[i]...)
	}
	return out
}

// TestDeltaViewFallsBackToDecoding: an upsert encoded in another (valid) field order is
// copied as is by the wire path, whose result then misses the target hash; the decoding
// path re-encodes it canonically and reaches the target.
func TestDeltaViewFallsBackToDecoding(t *testing.T) {
	base := genBundle(1, 5)
	basePayload, _ := Encode(base)
	target := proto.Clone(base).(*bundlev1.Bundle)
	target.Header.Version = 2
	target.Routes[2].Spec.Cluster = "svc-0000"
	targetPayload, _ := Encode(target)
	d, err := NewDelta(basePayload, targetPayload)
	if err != nil {
		t.Fatal(err)
	}
	v := viewOf(t, d)
	if len(v.GetUpserts()) != 1 {
		t.Fatalf("delta has %d upserts, want 1", len(v.GetUpserts()))
	}
	up := v.GetUpserts()[0]
	num, _, n := protowire.ConsumeTag(up)
	inner, _ := protowire.ConsumeBytes(up[n:])
	odd := protowire.AppendTag(nil, num, protowire.BytesType)
	v.Upserts[0] = protowire.AppendBytes(odd, reorderFields(t, inner))

	wire, ok := applyWire(basePayload, v)
	if !ok || bytes.Equal(wire, targetPayload) {
		t.Fatalf("wire path: ok %v, equal to target %v; want a result that misses the target", ok, bytes.Equal(wire, targetPayload))
	}
	got, err := ApplyDeltaView(basePayload, Hash(basePayload), v)
	if err != nil || !bytes.Equal(got, targetPayload) {
		t.Fatalf("ApplyDeltaView = %s, %v; target is %s", Hash(got), err, Hash(targetPayload))
	}
}

// TestDeltaViewRefuses: a delta that does not fit its base, or does not produce its
// target, fails with ErrDeltaMismatch and a message that says which.
func TestDeltaViewRefuses(t *testing.T) {
	base := genBundle(1, 5)
	basePayload, _ := Encode(base)
	target := proto.Clone(base).(*bundlev1.Bundle)
	target.Header.Version = 2
	target.Routes = target.Routes[1:]
	targetPayload, _ := Encode(target)
	d, err := NewDelta(basePayload, targetPayload)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Encode(genBundle(1, 6))
	extra := proto.Clone(d).(*bundlev1.BundleDelta)
	r, _ := wrap((&bundlev1.RetryPolicy{Metadata: &bundlev1.Metadata{Name: "sneaky", Namespace: "shop"}}).ProtoReflect())
	extra.Upserts = append(extra.Upserts, r)
	ghost := proto.Clone(d).(*bundlev1.BundleDelta)
	ghost.Removals = append(ghost.Removals, &bundlev1.ResourceKey{Kind: "Route", Namespace: "shop", Name: "ghost"})
	noMeta := proto.Clone(d).(*bundlev1.BundleDelta)
	noMeta.Upserts = append(noMeta.Upserts, &bundlev1.Resource{Kind: &bundlev1.Resource_Route{Route: &bundlev1.Route{}}})
	empty := proto.Clone(d).(*bundlev1.BundleDelta)
	empty.Upserts = append(empty.Upserts, &bundlev1.Resource{})

	for _, tc := range []struct {
		name string
		base []byte
		d    *bundlev1.BundleDelta
		want string
	}{
		{"wrong base", other, d, "the delta expects"},
		{"tampered", basePayload, extra, "promises"},
		{"removal of a missing resource", basePayload, ghost, "removal of Route shop/ghost, which the base does not hold"},
		{"upsert without metadata", basePayload, noMeta, "without metadata"},
		{"empty upsert", basePayload, empty, "empty resource"},
	} {
		_, err := ApplyDeltaView(tc.base, Hash(tc.base), viewOf(t, tc.d))
		if !errors.Is(err, ErrDeltaMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want ErrDeltaMismatch saying %q", tc.name, err, tc.want)
		}
	}
}
