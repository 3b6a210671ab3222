package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// genBundle builds a bundle with n clusters and n routes.
func genBundle(version uint64, n int) *bundlev1.Bundle {
	b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{SchemaVersion: 1, Domain: "prod", Epoch: 1, Version: version, RequiredCapabilities: []string{CapCore}}}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%04d", i)
		b.Clusters = append(b.Clusters, &bundlev1.Cluster{Metadata: &bundlev1.Metadata{Name: name, Namespace: "shop"}, Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: uint32(1000 + i)}}}})
		b.Routes = append(b.Routes, &bundlev1.Route{Metadata: &bundlev1.Metadata{Name: name, Namespace: "shop"}, Spec: &bundlev1.RouteSpec{Cluster: name, Match: &bundlev1.RouteMatch{Hosts: []string{name + ".example.com"}}}})
	}
	return b
}

// mutate changes b at random: edits, removals and additions across kinds.
func mutate(rng *rand.Rand, b *bundlev1.Bundle) {
	b.Header.Version++
	for i := 0; i < 1+rng.IntN(8); i++ {
		switch rng.IntN(5) {
		case 0:
			if len(b.Routes) > 0 {
				r := b.Routes[rng.IntN(len(b.Routes))]
				r.Spec.Timeout = durationpb.New(time.Duration(1+rng.Int64N(30)) * time.Second)
			}
		case 1:
			if len(b.Routes) > 0 {
				j := rng.IntN(len(b.Routes))
				b.Routes = append(b.Routes[:j], b.Routes[j+1:]...)
			}
		case 2:
			if len(b.Clusters) > 0 {
				j := rng.IntN(len(b.Clusters))
				b.Clusters = append(b.Clusters[:j], b.Clusters[j+1:]...)
			}
		case 3:
			b.RetryPolicies = append(b.RetryPolicies, &bundlev1.RetryPolicy{Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("rp-%d", rng.IntN(1e6)), Namespace: "shop"}, Spec: &bundlev1.RetryPolicySpec{Attempts: 2}})
		case 4:
			b.KillSwitches = append(b.KillSwitches, &bundlev1.KillSwitch{Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("ks-%d", rng.IntN(1e6)), Namespace: "ops"}, Spec: &bundlev1.KillSwitchSpec{Name: "x"}})
		}
	}
}

// TestDeltaReproducesTarget: for random chains of edits, applying each delta to its base
// yields exactly the target's bytes and hash, decoded (ApplyDelta) and as bytes
// (ApplyDeltaView, on its wire path itself, not by falling back to decoding).
func TestDeltaReproducesTarget(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	cur := genBundle(1, 50)
	curPayload, err := Encode(cur)
	if err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 200; step++ {
		next := proto.Clone(cur).(*bundlev1.Bundle)
		mutate(rng, next)
		nextPayload, err := Encode(next)
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDelta(curPayload, nextPayload)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := EncodeDelta(d)
		if err != nil {
			t.Fatal(err)
		}
		d, err = DecodeDelta(enc) // what a peer would receive
		if err != nil {
			t.Fatal(err)
		}
		got, gotBundle, err := ApplyDelta(curPayload, d)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if Hash(got) != Hash(nextPayload) || !proto.Equal(gotBundle, next) {
			t.Fatalf("step %d: delta produced %s, target is %s", step, Hash(got), Hash(nextPayload))
		}
		v, err := DecodeDeltaView(enc)
		if err != nil {
			t.Fatal(err)
		}
		if wire, ok := applyWire(curPayload, v); !ok || !bytes.Equal(wire, nextPayload) {
			t.Fatalf("step %d: the wire path did not reproduce the target (ok %v)", step, ok)
		}
		if got, err := ApplyDeltaView(curPayload, Hash(curPayload), v); err != nil || !bytes.Equal(got, nextPayload) {
			t.Fatalf("step %d: ApplyDeltaView = %s, %v; target is %s", step, Hash(got), err, Hash(nextPayload))
		}
		cur, curPayload = next, nextPayload
	}
}

// TestDeltaRefusesWrongBaseAndTampering: a delta that does not fit its base, or does not
// produce its target, fails with ErrDeltaMismatch and a message that says which, applied
// decoded or as bytes.
func TestDeltaRefusesWrongBaseAndTampering(t *testing.T) {
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
	if len(d.GetRemovals()) != 1 || len(d.GetUpserts()) != 0 {
		t.Fatalf("delta = %d upserts, %d removals; want 0, 1", len(d.GetUpserts()), len(d.GetRemovals()))
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
		enc, _ := EncodeDelta(tc.d)
		dec, _ := DecodeDelta(enc)
		_, _, err := ApplyDelta(tc.base, dec)
		if !errors.Is(err, ErrDeltaMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, decoded: err = %v; want ErrDeltaMismatch saying %q", tc.name, err, tc.want)
		}
		v, _ := DecodeDeltaView(enc)
		_, err = ApplyDeltaView(tc.base, Hash(tc.base), v)
		if !errors.Is(err, ErrDeltaMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, as bytes: err = %v; want ErrDeltaMismatch saying %q", tc.name, err, tc.want)
		}
	}
}

func TestDiff(t *testing.T) {
	a := genBundle(1, 3)
	b := proto.Clone(a).(*bundlev1.Bundle)
	b.Header.Version = 2
	b.Routes[0].Spec.Cluster = "svc-0002"
	b.Clusters = b.Clusters[:2]
	b.RetryPolicies = []*bundlev1.RetryPolicy{{Metadata: &bundlev1.Metadata{Name: "rp", Namespace: "shop"}, Spec: &bundlev1.RetryPolicySpec{}}}
	header, changes := Diff(a, b)
	if !strings.Contains(header, "version") {
		t.Errorf("header diff %q does not mention version", header)
	}
	var got []string
	for _, c := range changes {
		got = append(got, c.Op+" "+c.Key.String())
	}
	want := "- Cluster shop/svc-0002|+ RetryPolicy shop/rp|~ Route shop/svc-0000"
	if strings.Join(got, "|") != want {
		t.Fatalf("changes = %v\nwant %v", got, want)
	}
	if !strings.Contains(changes[2].Diff, "svc-0002") {
		t.Errorf("field diff %q does not show the new cluster", changes[2].Diff)
	}
	if h, c := Diff(a, a); h != "" || len(c) != 0 {
		t.Error("a bundle differs from itself")
	}
}

func TestHasExtensionBindings(t *testing.T) {
	b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{Domain: "d", Version: 1}, Routes: []*bundlev1.Route{{Metadata: &bundlev1.Metadata{Name: "r"}}}}
	without, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	b.ExtensionBindings = []*bundlev1.ExtensionBinding{{Metadata: &bundlev1.Metadata{Name: "e"}}}
	with, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	if HasExtensionBindings(without) || !HasExtensionBindings(with) || !HasExtensionBindings([]byte{0xff}) {
		t.Fatalf("without %v, with %v, garbage %v", HasExtensionBindings(without), HasExtensionBindings(with), HasExtensionBindings([]byte{0xff}))
	}
}
