package seed

import (
	"bytes"
	"encoding/binary"
	"flag"
	"testing"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/fuzzcorpus"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/publish"
	"meshkit.dev/meshkit/trust"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

func applyCorpus() [][]byte {
	objs, _ := bundle.LoadPath("../examples/shop")
	req := &adminv1.ApplyRequest{}
	for _, o := range objs {
		r, _ := ResourceFromObject(o)
		req.Resources = append(req.Resources, r)
	}
	full, _ := proto.Marshal(req)
	one, _ := proto.Marshal(&adminv1.ApplyRequest{Resources: req.Resources[:1]})
	noSpec, _ := proto.Marshal(&adminv1.ApplyRequest{Resources: []*adminv1.Resource{{Metadata: &bundlev1.Metadata{Name: "x"}}}})
	return [][]byte{full, one, noSpec, {}}
}

func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzApplyRequest": applyCorpus(), "FuzzRebuild": chainCorpus()}, *updateCorpus)
}

// FuzzApplyRequest feeds arbitrary ApplyRequest bytes, as the gRPC server would decode
// them, through the seed's resource decoding, tenant check and whole-state validation:
// no panic, and whatever validates also compiles into variants that encode.
func FuzzApplyRequest(f *testing.F) {
	p := &Principal{Name: "fuzz", Scope: ScopeAdmin, Tenants: []string{"*"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &adminv1.ApplyRequest{}
		if err := proto.Unmarshal(data, req); err != nil {
			return
		}
		recs, err := decodeResources(p, req.GetResources())
		if err != nil {
			return
		}
		if err := bundle.Validate(objects(recs)); err != nil {
			return
		}
		for _, v := range Compile(bundle.Header{Domain: "fuzz", Version: 1}, objects(recs)) {
			if _, err := bundle.Encode(v); err != nil {
				t.Fatalf("a validated state does not encode: %v", err)
			}
		}
	})
}

// chainCorpus is a stored snapshot and a delta after it, each framed as 4-byte length
// + bytes: what FuzzRebuild splits its input into.
func chainCorpus() [][]byte {
	key, err := trust.GenerateKey(bytes.NewReader(make([]byte, 64)))
	if err != nil {
		panic(err)
	}
	objs, _ := bundle.LoadPath("../examples/shop")
	sealer := publish.NewSealer(key)
	v1 := Compile(bundle.Header{Domain: "fuzz", Epoch: 1, Version: 1}, objs)[0]
	_, c1, err := sealer.Seal(v1, nil, nil)
	if err != nil {
		panic(err)
	}
	snap, _ := sealer.SealBundle(c1.Payload)
	objs = objs[1:]
	v2 := Compile(bundle.Header{Domain: "fuzz", Epoch: 1, Version: 2}, objs)[0]
	pv, _, err := sealer.Seal(v2, c1, nil)
	if err != nil {
		panic(err)
	}
	frame := func(a, b []byte) []byte {
		return append(append(binary.BigEndian.AppendUint32(nil, uint32(len(a))), a...), b...)
	}
	return [][]byte{frame(snap, pv.Delta), frame(snap, nil), frame(pv.Delta, snap), {}}
}

// FuzzRebuild feeds arbitrary stored snapshots and deltas (what another seed or a damaged
// store left) through the rebuild a restarted seed or a follower does: no panic, and a
// rebuilt snapshot is exactly what the stored delta promised.
func FuzzRebuild(f *testing.F) {
	key, err := trust.GenerateKey(bytes.NewReader(make([]byte, 64)))
	if err != nil {
		f.Fatal(err)
	}
	sealer := publish.NewSealer(key)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		n := int(binary.BigEndian.Uint32(data))
		if n > len(data)-4 {
			return
		}
		snap, delta := data[4:4+n], data[4+n:]
		latest, _, err := rebuild(sealer, map[string]Stored{"core": {Snapshot: snap, Chain: [][]byte{delta}}})
		if err != nil {
			return
		}
		env, err := trust.DecodeEnvelope(latest["core"].Snapshot, 0)
		if err != nil {
			t.Fatalf("a rebuilt snapshot does not decode: %v", err)
		}
		denv, _ := trust.DecodeEnvelope(delta, 0)
		d, err := bundle.DecodeDeltaView(denv.GetPayload())
		if err != nil {
			t.Fatalf("an applied delta does not decode: %v", err)
		}
		if h := bundle.Hash(env.GetPayload()); !bytes.Equal(h[:], d.GetTargetHash()) {
			t.Fatal("the rebuilt snapshot is not the one the delta promised")
		}
	})
}
