package trust_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

// t0 is the fixture's "now".
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

// fixture is a domain "prod" whose root delegates bundles to seed, CA material to ca,
// and namespace "shop" to the bridge "eu".
type fixture struct {
	rootKey, seed, ca, bridge, stranger *trust.PrivateKey
	root                                *trust.Root
	rootBytes                           []byte
	clock                               *clock
}

func mustKey(t testing.TB) *trust.PrivateKey {
	t.Helper()
	k, err := trust.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{rootKey: mustKey(t), seed: mustKey(t), ca: mustKey(t), bridge: mustKey(t), stranger: mustKey(t), clock: &clock{now: t0}}
	f.rootBytes = signedRoot(t, trust.RootSpec{
		Domain: "prod", Version: 1, IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(365 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{f.rootKey.Public()}, RootThreshold: 1,
		SeedKeys: []trust.PublicKey{f.seed.Public()}, SeedThreshold: 1,
		CAKeys: []trust.PublicKey{f.ca.Public()}, CAThreshold: 1,
		Bridges: []trust.BridgeSpec{{Name: "eu", Keys: []trust.PublicKey{f.bridge.Public()}, Threshold: 1, Namespaces: []string{"shop"}}},
	}, f.rootKey)
	var err error
	if f.root, err = trust.VerifyRoot(f.rootBytes); err != nil {
		t.Fatal(err)
	}
	return f
}

func signedRoot(t testing.TB, spec trust.RootSpec, signers ...trust.Signer) []byte {
	t.Helper()
	msg, err := trust.BuildRoot(spec)
	if err != nil {
		t.Fatal(err)
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Sign(env, signers...); err != nil {
		t.Fatal(err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) verifier(t testing.TB, marks map[string]trust.Mark) *trust.Verifier {
	t.Helper()
	v, err := trust.NewVerifier(trust.Config{Root: f.root, Clock: f.clock, State: trust.State{Marks: marks}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// bundleMsg is a valid bundle of prod at (epoch, version) with one route in namespace ns.
func bundleMsg(epoch, version uint64, ns string) *bundlev1.Bundle {
	return &bundlev1.Bundle{
		Header: &bundlev1.BundleHeader{
			SchemaVersion: 1, Domain: "prod", Epoch: epoch, Version: version,
			IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(time.Hour)),
			RequiredCapabilities: []string{"core/v1"},
		},
		Clusters: []*bundlev1.Cluster{{Metadata: &bundlev1.Metadata{Name: "api", Namespace: ns}, Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 80}}}}},
		Routes:   []*bundlev1.Route{{Metadata: &bundlev1.Metadata{Name: "api", Namespace: ns}, Spec: &bundlev1.RouteSpec{Cluster: "api"}}},
	}
}

func encode(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seal(t testing.TB, payloadType string, payload []byte, signers ...trust.Signer) []byte {
	t.Helper()
	env := trust.NewEnvelope(payloadType, payload)
	if err := trust.Sign(env, signers...); err != nil {
		t.Fatal(err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeEnv(t testing.TB, b []byte) *trustv1.Envelope {
	t.Helper()
	env, err := trust.DecodeEnvelope(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
