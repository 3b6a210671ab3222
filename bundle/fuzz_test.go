package bundle

import (
	"bytes"
	"flag"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/internal/fuzzcorpus"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

func fuzzBase(t testing.TB) []byte {
	payload, err := Encode(genBundle(1, 4))
	if err != nil {
		t.Fatal(err)
	}
	return payload
}

func corpus(t testing.TB) map[string][][]byte {
	base := fuzzBase(t)
	target := genBundle(2, 4)
	target.Routes[0].Spec.Cluster = "svc-0003"
	target.Clusters = target.Clusters[1:]
	targetPayload, _ := Encode(target)
	d, err := NewDelta(base, targetPayload)
	if err != nil {
		t.Fatal(err)
	}
	delta, _ := EncodeDelta(d)
	examples, _ := os.ReadFile("../examples/shop/routes.yaml")
	return map[string][][]byte{
		"FuzzDecodeResources": {[]byte(validSet), examples, []byte("kind: [\n"), []byte("---\n")},
		"FuzzDecodeBundle":    {base, targetPayload, {}},
		"FuzzApplyDelta":      {delta, {}},
		"FuzzApplyDeltaView":  {delta, {}},
	}
}

func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, corpus(t), *updateCorpus)
}

// FuzzDecodeResources feeds YAML to the decoder and the validator: no panic, and what
// builds must encode deterministically.
func FuzzDecodeResources(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode("fuzz.yaml", data)
		if err != nil {
			return
		}
		b, err := Build(testHeader, objs)
		if err != nil {
			return
		}
		first, err := Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Build(testHeader, objs)
		if err != nil {
			t.Fatal(err)
		}
		second, _ := Encode(again)
		if !bytes.Equal(first, second) {
			t.Fatal("same resources encoded differently")
		}
	})
}

// FuzzDecodeBundle checks that canonical encoding is idempotent on any decodable bundle.
func FuzzDecodeBundle(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBundle(data)
		if err != nil {
			return
		}
		first, err := Encode(b)
		if err != nil {
			return
		}
		b2, err := DecodeBundle(first)
		if err != nil {
			t.Fatalf("canonical bytes do not decode: %v", err)
		}
		second, _ := Encode(b2)
		if !bytes.Equal(first, second) {
			t.Fatal("canonical encoding is not idempotent")
		}
	})
}

// FuzzApplyDelta applies arbitrary deltas to a fixed base: no panic, and a success always
// yields bytes that hash to the delta's promised target.
func FuzzApplyDelta(f *testing.F) {
	base := fuzzBase(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := &bundlev1.BundleDelta{}
		if err := proto.Unmarshal(data, d); err != nil {
			return
		}
		out, _, err := ApplyDelta(base, d)
		if err != nil {
			return
		}
		if h := Hash(out); !bytes.Equal(h[:], d.GetTargetHash()) {
			t.Fatal("applied delta does not hash to its target")
		}
	})
}

// FuzzApplyDeltaView applies arbitrary deltas to a fixed base the way agents do: no
// panic; a success always hashes to the promised target; and a delta in canonical
// encoding that the decoding path applies is applied by the view too, to the same bytes.
func FuzzApplyDeltaView(f *testing.F) {
	base := fuzzBase(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeDeltaView(data)
		if err != nil {
			return
		}
		out, err := ApplyDeltaView(base, Hash(base), v)
		if err == nil {
			if h := Hash(out); !bytes.Equal(h[:], v.GetTargetHash()) {
				t.Fatal("applied delta does not hash to its target")
			}
		}
		d, derr := DecodeDelta(data)
		if derr != nil {
			return
		}
		if canon, _ := EncodeDelta(d); !bytes.Equal(canon, data) {
			return
		}
		want, _, werr := ApplyDelta(base, d)
		if werr == nil && (err != nil || !bytes.Equal(out, want)) {
			t.Fatalf("the decoding path applies this delta, the view does not: %v", err)
		}
	})
}
