package trust_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// routesBundle returns a bundle with n routes and n/5 clusters, and resource objects for Build.
func routeObjects(n int) []bundle.Object {
	var objs []bundle.Object
	clusters := max(n/5, 1)
	for i := 0; i < clusters; i++ {
		objs = append(objs, bundle.Object{Kind: bundle.KindCluster, Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("svc-%05d", i), Namespace: "shop", Tenant: "acme"},
			Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 8080}, {Address: "10.0.0.2", Port: 8080}}}})
	}
	for i := 0; i < n; i++ {
		objs = append(objs, bundle.Object{Kind: bundle.KindRoute, Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("route-%05d", i), Namespace: "shop", Tenant: "acme"},
			Spec: &bundlev1.RouteSpec{Match: &bundlev1.RouteMatch{Hosts: []string{fmt.Sprintf("svc-%05d.shop.example.com", i%clusters)}, PathPrefix: fmt.Sprintf("/api/v1/r%05d", i)}, Cluster: fmt.Sprintf("svc-%05d", i%clusters)}})
	}
	return objs
}

func benchHeader(version uint64) bundle.Header {
	return bundle.Header{Domain: "prod", Epoch: 1, Version: version, IssuedAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(time.Hour)}
}

// BenchmarkVerify64KiB measures what every agent does per bundle: size check, decode,
// SHA-256 of the payload, one Ed25519 verification, header decode and policy checks.
func BenchmarkVerify64KiB(b *testing.B) {
	f := newFixture(b)
	// ~450 routes make a 64 KiB payload; grow until we pass it.
	n := 400
	var payload []byte
	for {
		bd, err := bundle.Build(benchHeader(2), routeObjects(n))
		if err != nil {
			b.Fatal(err)
		}
		if payload, err = bundle.Encode(bd); err != nil {
			b.Fatal(err)
		}
		if len(payload) >= 64<<10 {
			break
		}
		n += 10
	}
	env := seal(b, trust.PayloadBundle, payload, f.seed)
	v := f.verifier(b, map[string]trust.Mark{"core/v1": {Epoch: 1, Version: 1}})
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(env); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(payload)), "payload-bytes")
}

// BenchmarkBuildSign10kRoutes measures a seed's full publish of 10,000 routes and 2,000
// clusters: validate, assemble, canonicalise, encode, hash, sign, encode the envelope.
func BenchmarkBuildSign10kRoutes(b *testing.B) {
	f := newFixture(b)
	objs := routeObjects(10_000)
	var size int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		bd, err := bundle.Build(benchHeader(2), objs)
		if err != nil {
			b.Fatal(err)
		}
		payload, err := bundle.Encode(bd)
		if err != nil {
			b.Fatal(err)
		}
		env := trust.NewEnvelope(trust.PayloadBundle, payload)
		if err := trust.Sign(env, f.seed); err != nil {
			b.Fatal(err)
		}
		out, err := trust.MarshalEnvelope(env)
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "envelope-bytes")
}

// TestBuild10kIsDeterministic: two builds of the 10,000-route state give the same bytes
// even when the resources arrive in another order.
func TestBuild10kIsDeterministic(t *testing.T) {
	objs := routeObjects(10_000)
	first, err := bundle.Build(benchHeader(2), objs)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := bundle.Encode(first)
	for i, j := 0, len(objs)-1; i < j; i, j = i+1, j-1 {
		objs[i], objs[j] = objs[j], objs[i]
	}
	for _, o := range objs {
		o.Spec = proto.Clone(o.Spec)
	}
	second, err := bundle.Build(benchHeader(2), objs)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := bundle.Encode(second)
	if bundle.Hash(a) != bundle.Hash(b) {
		t.Fatalf("hashes differ: %s vs %s", bundle.Hash(a), bundle.Hash(b))
	}
}
