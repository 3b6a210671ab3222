package seed

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/hashicorp/go-memdb"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// record is one resource as the in-memory state indexes it.
type record struct {
	ID        string // "Kind/namespace/name"
	Kind      string
	Namespace string
	Tenant    string
	Refs      []string // ids of the resources it refers to
	Hash      string   // hex SHA-256 of Encoded
	Encoded   []byte   // deterministic encoding of Res, as stored
	Res       *adminv1.Resource
	Obj       bundle.Object
}

const tableResources = "resources"

// schema indexes resources by id, kind, tenant and by what they reference (which
// routes use a cluster, which bindings use an extension).
func schema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableResources: {
			Name: tableResources,
			Indexes: map[string]*memdb.IndexSchema{
				"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
				"kind":   {Name: "kind", Indexer: &memdb.StringFieldIndex{Field: "Kind"}},
				"tenant": {Name: "tenant", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Tenant"}},
				"refs":   {Name: "refs", AllowMissing: true, Indexer: &memdb.StringSliceFieldIndex{Field: "Refs"}},
			},
		},
	}}
}

// newRecord indexes a resource. Labels are put in canonical order here, once, so that
// compilation (which shares these messages) never has to modify them.
func newRecord(r *adminv1.Resource) (*record, error) {
	if labels := r.GetMetadata().GetLabels(); !slices.IsSortedFunc(labels, func(a, b *bundlev1.Label) int { return strings.Compare(a.GetKey(), b.GetKey()) }) {
		r = proto.Clone(r).(*adminv1.Resource)
		slices.SortFunc(r.Metadata.Labels, func(a, b *bundlev1.Label) int { return strings.Compare(a.GetKey(), b.GetKey()) })
	}
	o, err := ObjectFromResource(r)
	if err != nil {
		return nil, err
	}
	hash, enc, err := resourceHash(r)
	if err != nil {
		return nil, err
	}
	return &record{
		ID: keyString(o.Key()), Kind: o.Kind, Namespace: o.Metadata.GetNamespace(), Tenant: o.Metadata.GetTenant(),
		Refs: references(o), Hash: hash, Encoded: enc, Res: r, Obj: o,
	}, nil
}

// snapshot is a consistent read-only view of the desired state.
type snapshot struct{ txn *memdb.Txn }

// records returns every record in id order.
func (s snapshot) records() []*record {
	it, err := s.txn.Get(tableResources, "id")
	if err != nil {
		panic(fmt.Sprintf("seed: memdb schema: %v", err)) // the index exists by construction
	}
	var out []*record
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*record))
	}
	return out
}

func (s snapshot) get(id string) *record {
	obj, err := s.txn.First(tableResources, "id", id)
	if err != nil || obj == nil {
		return nil
	}
	return obj.(*record)
}

// referrers returns the ids of the records that refer to id.
func (s snapshot) referrers(id string) []string {
	it, err := s.txn.Get(tableResources, "refs", id)
	if err != nil {
		return nil
	}
	var out []string
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*record).ID)
	}
	return out
}

// stateHash hashes the desired state: SHA-256 over "id hash\n" lines in id order.
func stateHash(recs []*record) string {
	h := sha256.New()
	for _, r := range recs {
		h.Write([]byte(r.ID))
		h.Write([]byte{' '})
		h.Write([]byte(r.Hash))
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("sha256:%x", h.Sum(nil))
}

func objects(recs []*record) []bundle.Object {
	out := make([]bundle.Object, len(recs))
	for i, r := range recs {
		out[i] = r.Obj
	}
	return out
}
