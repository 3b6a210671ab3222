package trust_test

import (
	"crypto/sha256"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// TestBridgeChecksEveryKindTheSchemaHas: the bridge namespace check finds resources
// through the schema, so every list of resources in Bundle, and every kind a delta's
// upsert can hold, is checked; a kind added to the schema is covered by this test with no
// change to it or to the verifier.
func TestBridgeChecksEveryKindTheSchemaHas(t *testing.T) {
	f := newFixture(t)
	fields := (&bundlev1.Bundle{}).ProtoReflect().Descriptor().Fields()
	kinds := 0
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Name() == "header" {
			continue
		}
		kinds++
		for _, tc := range []struct {
			ns   string
			want error
		}{{"shop", nil}, {"billing", trust.ErrNamespace}} {
			b := bundleMsg(1, 2, "shop")
			b.Clusters, b.Routes = nil, nil
			m := b.ProtoReflect()
			r := m.Mutable(fd).List().AppendMutable().Message()
			md := r.Mutable(r.Descriptor().Fields().ByName("metadata")).Message()
			md.Set(md.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString("x"))
			md.Set(md.Descriptor().Fields().ByName("namespace"), protoreflect.ValueOfString(tc.ns))
			if _, err := f.verifier(t, nil).Verify(seal(t, trust.PayloadBundle, encode(t, b), f.bridge)); !errors.Is(err, tc.want) {
				t.Errorf("a bridge's %s in %q: err = %v, want %v", fd.Name(), tc.ns, err, tc.want)
			}
		}
	}
	if kinds < 6 {
		t.Fatalf("found %d resource lists in Bundle", kinds)
	}
}

// TestBridgeBundleOfAnUnknownKindIsRefused: what this build's schema does not know (a
// kind added after it) cannot be checked against the bridge's namespaces, so a bridge's
// bundle or delta carrying it is refused; a seed's is accepted (the seeds are not limited
// to namespaces, and newer seeds must reach older agents).
func TestBridgeBundleOfAnUnknownKindIsRefused(t *testing.T) {
	f := newFixture(t)
	// A resource list at a field number Bundle does not have, holding one resource.
	inner := protowire.AppendTag(nil, 1, protowire.BytesType)
	inner = protowire.AppendBytes(inner, encode(t, &bundlev1.Metadata{Name: "x", Namespace: "billing"}))
	payload := protowire.AppendTag(encode(t, bundleMsg(1, 2, "shop")), 99, protowire.BytesType)
	payload = protowire.AppendBytes(payload, inner)
	if _, err := f.verifier(t, nil).Verify(seal(t, trust.PayloadBundle, payload, f.bridge)); !errors.Is(err, trust.ErrNamespace) {
		t.Fatalf("a bridge bundle with an unknown kind: err = %v, want ErrNamespace", err)
	}
	if _, err := f.verifier(t, nil).Verify(seal(t, trust.PayloadBundle, payload, f.seed)); err != nil {
		t.Fatalf("a seed bundle with an unknown kind: %v", err)
	}

	// A delta upsert of an unknown kind: a Resource whose oneof member is unknown.
	base := encode(t, bundleMsg(1, 1, "shop"))
	v := f.verifier(t, nil)
	vb, err := v.Verify(seal(t, trust.PayloadBundle, base, f.bridge))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(vb); err != nil {
		t.Fatal(err)
	}
	baseHash := sha256.Sum256(base)
	up := protowire.AppendTag(nil, 99, protowire.BytesType)
	up = protowire.AppendBytes(up, inner)
	d := &bundlev1.BundleDeltaView{Header: encode(t, bundleMsg(1, 2, "shop").Header), BaseEpoch: 1, BaseVersion: 1, BaseHash: baseHash[:],
		TargetHash: make([]byte, 32), Upserts: [][]byte{up}}
	if _, err := v.Verify(seal(t, trust.PayloadDelta, encode(t, d), f.bridge)); !errors.Is(err, trust.ErrNamespace) {
		t.Fatalf("a bridge delta upserting an unknown kind: err = %v, want ErrNamespace", err)
	}
}
