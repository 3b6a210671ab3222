package seed

import (
	"flag"
	"testing"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/fuzzcorpus"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
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
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzApplyRequest": applyCorpus()}, *updateCorpus)
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
