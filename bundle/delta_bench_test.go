package bundle

import (
	"testing"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// BenchmarkApplyDeltaDecoded is what an agent does with each gossiped delta: apply it to
// its decoded held bundle (50 clusters, 50 routes, every route changed) and check the
// result's hash.
func BenchmarkApplyDeltaDecoded(b *testing.B) {
	base := genBundle(1, 50)
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
	d, err := DeltaBetween(base, Hash(bp), target, Hash(tp))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ApplyDeltaDecoded(base, Hash(bp), d); err != nil {
			b.Fatal(err)
		}
	}
}
