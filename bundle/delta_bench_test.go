package bundle

import (
	"testing"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// benchDelta is a 50-cluster, 50-route base, encoded, and the encoded delta that changes
// every route (what the simulator publishes).
func benchDelta(b *testing.B) (base *bundlev1.Bundle, basePayload, delta []byte) {
	base = genBundle(1, 50)
	target := proto.Clone(base).(*bundlev1.Bundle)
	target.Header.Version = 2
	for _, r := range target.Routes {
		r.Spec.PrefixRewrite = "/g2"
	}
	bp, err := Encode(base)
	if err != nil {
		b.Fatal(err)
	}
	tp, err := Encode(target)
	if err != nil {
		b.Fatal(err)
	}
	d, err := NewDelta(bp, tp)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := EncodeDelta(d)
	if err != nil {
		b.Fatal(err)
	}
	return base, bp, enc
}

// BenchmarkApplyDeltaDecoded is what an agent did with each gossiped delta before
// ApplyDeltaView: decode it, apply it to its decoded held bundle and encode the result to
// check its hash.
func BenchmarkApplyDeltaDecoded(b *testing.B) {
	base, bp, enc := benchDelta(b)
	bh := Hash(bp)
	b.ReportAllocs()
	for b.Loop() {
		d, err := DecodeDelta(enc)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := ApplyDeltaDecoded(base, bh, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyDeltaView is the same delta as agents apply it now: decoded as a view and
// applied to the base's bytes, resources copied as bytes.
func BenchmarkApplyDeltaView(b *testing.B) {
	_, bp, enc := benchDelta(b)
	bh := Hash(bp)
	b.ReportAllocs()
	for b.Loop() {
		v, err := DecodeDeltaView(enc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ApplyDeltaView(bp, bh, v); err != nil {
			b.Fatal(err)
		}
	}
}
