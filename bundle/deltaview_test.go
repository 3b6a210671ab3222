package bundle

import (
	"bytes"
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
