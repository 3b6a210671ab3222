package bundle

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// TestPatchIsEncodeAndDeltaBetween: through chains of random changes, Patch gives the
// bytes, layout and delta that encoding the whole bundle and diffing it give.
func TestPatchIsEncodeAndDeltaBetween(t *testing.T) {
	patched := 0
	for seed := range uint64(400) {
		g := gen{rand.New(rand.NewPCG(seed, 11))}
		state := map[Key]Object{}
		for range 5 + g.r.IntN(30) {
			o := g.object()
			state[o.Key()] = o
		}
		objs := func() []Object {
			var out []Object
			for _, o := range state {
				out = append(out, o)
			}
			return out
		}
		at := time.Unix(1_800_000_000, 0)
		hdr := func(v uint64) Header {
			return Header{Domain: "prod", Epoch: 3, Version: v, IssuedAt: at.Add(time.Duration(v) * time.Second), ExpiresAt: at.Add(time.Hour)}
		}
		prev := Assemble(hdr(1), objs())
		prevPayload, prevLayout, err := EncodeWithLayout(prev)
		if err != nil {
			t.Fatal(err)
		}
		if enc, _ := (&Encoder{}).Encode(proto.Clone(prev).(*bundlev1.Bundle)); !bytes.Equal(enc, prevPayload) {
			t.Fatalf("seed %d: EncodeWithLayout differs from Encode", seed)
		}
		for v := uint64(2); v < 8; v++ {
			changed := map[Key]bool{}
			for range 1 + g.r.IntN(4) {
				o := g.object()
				if g.r.IntN(2) == 0 { // a new content for an existing resource of o's kind
					for k := range state {
						if k.Kind == o.Kind {
							o.Metadata.Namespace, o.Metadata.Name = k.Namespace, k.Name
							break
						}
					}
				}
				state[o.Key()] = o
				changed[o.Key()] = true
			}
			for k := range state {
				if g.r.IntN(10) == 0 {
					delete(state, k)
					changed[k] = true
				}
			}
			next := Assemble(hdr(v), objs())
			wantPayload, wantLayout, err := EncodeWithLayout(proto.Clone(next).(*bundlev1.Bundle))
			if err != nil {
				t.Fatal(err)
			}
			wantDelta, err := DeltaBetween(prev, Hash(prevPayload), next, Hash(wantPayload))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Patch(prev, prevPayload, Hash(prevPayload), prevLayout, next, changed)
			if err != nil {
				t.Fatalf("seed %d v%d: %v", seed, v, err)
			}
			if !bytes.Equal(got.Payload, wantPayload) || got.Hash != Hash(wantPayload) || !reflect.DeepEqual(got.Layout, wantLayout) {
				t.Fatalf("seed %d v%d: the patched bundle differs from the encoded one", seed, v)
			}
			a, _ := EncodeDelta(got.Delta)
			b, _ := EncodeDelta(wantDelta)
			if !bytes.Equal(a, b) {
				t.Fatalf("seed %d v%d: delta %v, DeltaBetween %v", seed, v, got.Delta, wantDelta)
			}
			prev, prevPayload, prevLayout = next, got.Payload, got.Layout
			patched++
		}
	}
	if patched < 2000 {
		t.Fatalf("only %d patches", patched)
	}
}

// TestPatchRefusesAnUnnamedAddition: a resource added at a key the caller did not name is
// caught, not silently left out.
func TestPatchRefusesAnUnnamedAddition(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	var objs []Object
	for range 10 {
		objs = append(objs, g.object())
	}
	objs = dedup(objs)
	h := Header{Domain: "prod", Epoch: 1, Version: 1}
	prev := Assemble(h, objs)
	payload, lay, err := EncodeWithLayout(prev)
	if err != nil {
		t.Fatal(err)
	}
	h.Version = 2
	extra := Object{Kind: KindCluster, Metadata: g.meta("zz-unnamed"), Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "a", Port: 1}}}}
	next := Assemble(h, append(objs, extra))
	if _, err := Patch(prev, payload, Hash(payload), lay, next, map[Key]bool{}); !errors.Is(err, ErrPatchMismatch) {
		t.Fatalf("an unnamed addition: %v", err)
	}
}
