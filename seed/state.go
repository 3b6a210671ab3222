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
	Matches   []string // the matches a route claims (bundle.RouteMatches)
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
				"match":  {Name: "match", AllowMissing: true, Indexer: &memdb.StringSliceFieldIndex{Field: "Matches"}},
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
	rec := &record{
		ID: keyString(o.Key()), Kind: o.Kind, Namespace: o.Metadata.GetNamespace(), Tenant: o.Metadata.GetTenant(),
		Refs: references(o), Hash: hash, Encoded: enc, Res: r, Obj: o,
	}
	if rs, ok := o.Spec.(*bundlev1.RouteSpec); ok {
		rec.Matches = bundle.RouteMatches(rs)
	}
	return rec, nil
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

// claimants returns the records whose routes claim match.
func (s snapshot) claimants(match string) []*record { return s.where("match", match) }

// ofKind returns the records of kind.
func (s snapshot) ofKind(kind string) []*record { return s.where("kind", kind) }

// where returns the records an index maps value to.
func (s snapshot) where(index, value string) []*record {
	it, err := s.txn.Get(tableResources, index, value)
	if err != nil {
		return nil
	}
	var out []*record
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*record))
	}
	return out
}

// overlay is the state a write would make: the snapshot with puts replacing and deletes
// removing records. It is the bundle.World a small change is validated in.
type overlay struct {
	snap    snapshot
	puts    map[string]*record
	deleted map[string]bool
}

var _ bundle.World = overlay{}

func (o overlay) get(id string) *record {
	if r, ok := o.puts[id]; ok {
		return r
	}
	if o.deleted[id] {
		return nil
	}
	return o.snap.get(id)
}

func (o overlay) Object(k bundle.Key) (bundle.Object, bool) {
	if r := o.get(keyString(k)); r != nil {
		return r.Obj, true
	}
	return bundle.Object{}, false
}

func (o overlay) Grants(namespace, tenant string) []*bundlev1.ReferenceGrantSpec {
	var out []*bundlev1.ReferenceGrantSpec
	for _, r := range o.snap.ofKind(bundle.KindReferenceGrant) {
		if r := o.get(r.ID); r != nil && r.Namespace == namespace && r.Tenant == tenant {
			out = append(out, r.Obj.Spec.(*bundlev1.ReferenceGrantSpec))
		}
	}
	for _, r := range o.puts {
		if g, ok := r.Obj.Spec.(*bundlev1.ReferenceGrantSpec); ok && o.snap.get(r.ID) == nil && r.Namespace == namespace && r.Tenant == tenant {
			out = append(out, g)
		}
	}
	return out
}

func (o overlay) RouteByMatch(match string, self bundle.Key) (bundle.Object, bool) {
	selfID := keyString(self)
	for id, r := range o.puts {
		if id != selfID && slices.Contains(r.Matches, match) {
			return r.Obj, true
		}
	}
	for _, r := range o.snap.claimants(match) {
		if _, replaced := o.puts[r.ID]; r.ID != selfID && !replaced && !o.deleted[r.ID] {
			return r.Obj, true
		}
	}
	return bundle.Object{}, false
}

// apply returns the overlay's state as records in id order (order is the snapshot's,
// in id order) and its stateHash, without a pass over memdb: the snapshot's records
// merged with the new ids.
func (o overlay) apply(order []*record) (after []*record, hash string) {
	var added []*record
	for id, r := range o.puts {
		if o.snap.get(id) == nil {
			added = append(added, r)
		}
	}
	slices.SortFunc(added, func(a, b *record) int { return strings.Compare(a.ID, b.ID) })
	after = make([]*record, 0, len(order)+len(added))
	for _, r := range order {
		for len(added) > 0 && added[0].ID < r.ID {
			after = append(after, added[0])
			added = added[1:]
		}
		if o.deleted[r.ID] {
			continue
		}
		if p, ok := o.puts[r.ID]; ok {
			r = p
		}
		after = append(after, r)
	}
	after = append(after, added...)
	return after, stateHash(after)
}

// stateHash hashes the desired state: SHA-256 over "id hash\n" lines in id order.
func stateHash(recs []*record) string {
	h := sha256.New()
	buf := make([]byte, 0, 64<<10)
	for _, r := range recs {
		if len(buf)+len(r.ID)+len(r.Hash)+2 > cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
		buf = append(append(append(append(buf, r.ID...), ' '), r.Hash...), '\n')
	}
	h.Write(buf)
	return fmt.Sprintf("sha256:%x", h.Sum(nil))
}

func objects(recs []*record) []bundle.Object {
	out := make([]bundle.Object, len(recs))
	for i, r := range recs {
		out[i] = r.Obj
	}
	return out
}
