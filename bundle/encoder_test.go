package bundle

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// TestEncoderMatchesEncode: over a chain of random edits (sharing unchanged resources
// between steps, as the seed does), the caching Encoder writes exactly Encode's bytes.
func TestEncoderMatchesEncode(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var enc Encoder
	cur := genBundle(1, 40)
	cur.Routes[0].Metadata.Labels = []*bundlev1.Label{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}}
	hits := 0
	for step := 0; step < 100; step++ {
		// Shallow copy: the next bundle shares the resources it does not change.
		next := &bundlev1.Bundle{Header: proto.Clone(cur.Header).(*bundlev1.BundleHeader)}
		for _, c := range cur.Clusters {
			next.Clusters = append(next.Clusters, &bundlev1.Cluster{Metadata: c.Metadata, Spec: c.Spec})
		}
		for _, r := range cur.Routes {
			next.Routes = append(next.Routes, &bundlev1.Route{Metadata: r.Metadata, Spec: r.Spec})
		}
		next.RetryPolicies = append(next.RetryPolicies, cur.RetryPolicies...)
		next.KillSwitches = append(next.KillSwitches, cur.KillSwitches...)
		if len(next.Routes) > 0 { // copy-on-write edit of one route
			i := rng.IntN(len(next.Routes))
			r := next.Routes[i]
			next.Routes[i] = &bundlev1.Route{Metadata: r.Metadata, Spec: proto.Clone(r.Spec).(*bundlev1.RouteSpec)}
			next.Routes[i].Spec.PrefixRewrite = string(rune('a' + step%26))
		}
		// Adds and removals of several kinds; never an in-place edit (the Encoder's contract).
		switch rng.IntN(3) {
		case 0:
			if len(next.Clusters) > 0 {
				j := rng.IntN(len(next.Clusters))
				next.Clusters = append(next.Clusters[:j], next.Clusters[j+1:]...)
			}
		case 1:
			next.RetryPolicies = append(next.RetryPolicies, &bundlev1.RetryPolicy{Metadata: &bundlev1.Metadata{Name: "rp-" + string(rune('a'+rng.IntN(26))) + string(rune('a'+step%26)), Namespace: "shop"}, Spec: &bundlev1.RetryPolicySpec{Attempts: 2}})
		case 2:
			if len(next.Routes) > 1 {
				next.Routes = next.Routes[1:]
			}
		}
		next.Header.Version++
		got, err := enc.Encode(next)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Encode(proto.Clone(next).(*bundlev1.Bundle))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d: Encoder wrote %s, Encode %s", step, Hash(got), Hash(want))
		}
		hits += len(enc.prev)
		cur = next
	}
	if hits == 0 {
		t.Fatal("the encoder never cached anything")
	}
}
