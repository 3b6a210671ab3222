package bundle

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"

	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// ErrDeltaMismatch is wrapped when a delta does not fit its base or does not produce its target.
var ErrDeltaMismatch = errors.New("bundle: delta does not fit")

var resourceOneof = (&bundlev1.Resource{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")

// wrap puts a resource message into the Resource oneof.
func wrap(m protoreflect.Message) (*bundlev1.Resource, error) {
	r := &bundlev1.Resource{}
	fields := resourceOneof.Fields()
	for i := 0; i < fields.Len(); i++ {
		if fd := fields.Get(i); fd.Message().FullName() == m.Descriptor().FullName() {
			r.ProtoReflect().Set(fd, protoreflect.ValueOfMessage(m))
			return r, nil
		}
	}
	return nil, fmt.Errorf("bundle: %s has no case in Resource", m.Descriptor().FullName())
}

// unwrap returns the kind and message inside r.
func unwrap(r *bundlev1.Resource) (string, protoreflect.Message, error) {
	fd := r.ProtoReflect().WhichOneof(resourceOneof)
	if fd == nil {
		return "", nil, fmt.Errorf("%w: empty resource in delta", ErrDeltaMismatch)
	}
	return string(fd.Message().Name()), r.ProtoReflect().Get(fd).Message(), nil
}

// index maps every resource of b to its message.
func index(b *bundlev1.Bundle) map[Key]protoreflect.Message {
	lists := resourceLists(b, false)
	n := 0
	for _, l := range lists {
		n += l.list.Len()
	}
	out := make(map[Key]protoreflect.Message, n) // sized once: growing it was most of what applying a delta allocated
	for _, l := range lists {
		for i := 0; i < l.list.Len(); i++ {
			m := l.list.Get(i).Message()
			md := metadataOf(m)
			out[Key{Kind: l.kind, Namespace: md.GetNamespace(), Name: md.GetName()}] = m
		}
	}
	return out
}

func compareKeys(a, b Key) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// NewDelta computes the delta from the encoded bundle base to the encoded bundle target.
func NewDelta(basePayload, targetPayload []byte) (*bundlev1.BundleDelta, error) {
	base, err := DecodeBundle(basePayload)
	if err != nil {
		return nil, err
	}
	target, err := DecodeBundle(targetPayload)
	if err != nil {
		return nil, err
	}
	return DeltaBetween(base, Hash(basePayload), target, Hash(targetPayload))
}

// DeltaBetween computes the delta between two canonical bundles whose encodings hash to
// bh and th, without decoding anything again (a seed keeps its last published bundles).
// It merge-joins the sorted resource lists, kind by kind in name order, so upserts and
// removals come out sorted by (kind, namespace, name) with no maps and no re-sorting.
func DeltaBetween(base *bundlev1.Bundle, bh Digest, target *bundlev1.Bundle, th Digest) (*bundlev1.BundleDelta, error) {
	d := &bundlev1.BundleDelta{
		Header:      target.GetHeader(),
		BaseEpoch:   base.GetHeader().GetEpoch(),
		BaseVersion: base.GetHeader().GetVersion(),
		BaseHash:    bh[:],
		TargetHash:  th[:],
	}
	bl, tl := sortedKinds(base), sortedKinds(target)
	for k := range bl {
		old, cur := bl[k].list, tl[k].list
		i, j := 0, 0
		for i < old.Len() || j < cur.Len() {
			var c int
			switch {
			case i == old.Len():
				c = 1
			case j == cur.Len():
				c = -1
			default:
				c = compareMeta(metadataOf(old.Get(i).Message()), metadataOf(cur.Get(j).Message()))
			}
			switch {
			case c < 0: // only in base
				md := metadataOf(old.Get(i).Message())
				d.Removals = append(d.Removals, &bundlev1.ResourceKey{Kind: bl[k].kind, Namespace: md.GetNamespace(), Name: md.GetName()})
				i++
			case c > 0: // only in target
				r, err := wrap(cur.Get(j).Message())
				if err != nil {
					return nil, err
				}
				d.Upserts = append(d.Upserts, r)
				j++
			default:
				if !sameResource(old.Get(i).Message(), cur.Get(j).Message()) {
					r, err := wrap(cur.Get(j).Message())
					if err != nil {
						return nil, err
					}
					d.Upserts = append(d.Upserts, r)
				}
				i, j = i+1, j+1
			}
		}
	}
	return d, nil
}

// sortedKinds returns b's resource lists ordered by kind name.
func sortedKinds(b *bundlev1.Bundle) []kindList {
	ls := resourceLists(b, false)
	slices.SortFunc(ls, func(x, y kindList) int { return cmp.Compare(x.kind, y.kind) })
	return ls
}

// sameResource reports whether two resources are equal. Bundles compiled from the same
// stored objects share their metadata and spec messages, so comparing those pointers
// settles most pairs without walking them; anything else falls back to proto.Equal.
func sameResource(a, b protoreflect.Message) bool {
	fields := a.Descriptor().Fields()
	shared := true
	for i := 0; i < fields.Len() && shared; i++ {
		fd := fields.Get(i)
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			shared = false
			break
		}
		if a.Has(fd) != b.Has(fd) {
			return false
		}
		if a.Has(fd) && a.Get(fd).Message().Interface() != b.Get(fd).Message().Interface() {
			shared = false
		}
	}
	return shared || proto.Equal(a.Interface(), b.Interface())
}

// EncodeDelta encodes d deterministically.
func EncodeDelta(d *bundlev1.BundleDelta) ([]byte, error) {
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode delta: %w", err)
	}
	return out, nil
}

// DecodeDelta parses an encoded delta.
func DecodeDelta(payload []byte) (*bundlev1.BundleDelta, error) {
	d := &bundlev1.BundleDelta{}
	if err := proto.Unmarshal(payload, d); err != nil {
		return nil, fmt.Errorf("bundle: decode delta: %w", err)
	}
	return d, nil
}

// ApplyDelta applies d to the encoded bundle basePayload and returns the encoded target
// and the target bundle. It fails with ErrDeltaMismatch when basePayload is not d's base,
// when a removal names a resource the base lacks, or when the result's hash is not d's
// target hash: a delta yields exactly its target or nothing. The target bundle shares
// resource messages with d (they are not copied: copying was a third of the cost of
// applying a small delta); neither may be modified afterwards.
func ApplyDelta(basePayload []byte, d *bundlev1.BundleDelta) ([]byte, *bundlev1.Bundle, error) {
	h := Hash(basePayload)
	if !slices.Equal(h[:], d.GetBaseHash()) {
		return nil, nil, fmt.Errorf("%w: base is %s, the delta expects %x", ErrDeltaMismatch, h, d.GetBaseHash())
	}
	base, err := DecodeBundle(basePayload)
	if err != nil {
		return nil, nil, err
	}
	return ApplyDeltaDecoded(base, h, d)
}

// ApplyDeltaDecoded is ApplyDelta on a base already decoded, whose payload hashes to
// baseHash: an agent keeps its held bundle decoded, and decoding it again for every delta
// was a tenth of everything it allocated. base is not modified; the target shares its
// unchanged resource messages.
func ApplyDeltaDecoded(base *bundlev1.Bundle, baseHash Digest, d *bundlev1.BundleDelta) ([]byte, *bundlev1.Bundle, error) {
	if !slices.Equal(baseHash[:], d.GetBaseHash()) {
		return nil, nil, fmt.Errorf("%w: base is %s, the delta expects %x", ErrDeltaMismatch, baseHash, d.GetBaseHash())
	}
	set := index(base)
	for _, k := range d.GetRemovals() {
		key := Key{Kind: k.GetKind(), Namespace: k.GetNamespace(), Name: k.GetName()}
		if _, ok := set[key]; !ok {
			return nil, nil, fmt.Errorf("%w: removal of %s, which the base does not hold", ErrDeltaMismatch, key)
		}
		delete(set, key)
	}
	for _, r := range d.GetUpserts() {
		kind, m, err := unwrap(r)
		if err != nil {
			return nil, nil, err
		}
		md := metadataOf(m)
		if md == nil {
			return nil, nil, fmt.Errorf("%w: %s upsert without metadata", ErrDeltaMismatch, kind)
		}
		set[Key{Kind: kind, Namespace: md.GetNamespace(), Name: md.GetName()}] = m
	}
	target := &bundlev1.Bundle{Header: proto.Clone(d.GetHeader()).(*bundlev1.BundleHeader)}
	lists := map[string]protoreflect.List{}
	for _, l := range resourceLists(target, true) {
		lists[l.kind] = l.list
	}
	for k, m := range set {
		list, ok := lists[k.Kind]
		if !ok {
			return nil, nil, fmt.Errorf("%w: unknown kind %q", ErrDeltaMismatch, k.Kind)
		}
		list.Append(protoreflect.ValueOfMessage(m))
	}
	payload, err := Encode(target)
	if err != nil {
		return nil, nil, err
	}
	if h := Hash(payload); !slices.Equal(h[:], d.GetTargetHash()) {
		return nil, nil, fmt.Errorf("%w: result is %s, the delta promises %x", ErrDeltaMismatch, h, d.GetTargetHash())
	}
	return payload, target, nil
}

// Change is one difference between two bundles.
type Change struct {
	// Op is "+" (added), "-" (removed) or "~" (changed).
	Op  string
	Key Key
	// Diff shows what changed, for "~".
	Diff string
}

// Diff lists the resource changes from a to b, sorted by key, and a description of
// header changes ("" when the headers are equal).
func Diff(a, b *bundlev1.Bundle) (header string, changes []Change) {
	header = gocmp.Diff(a.GetHeader(), b.GetHeader(), protocmp.Transform())
	ai, bi := index(a), index(b)
	for _, k := range slices.SortedFunc(maps.Keys(bi), compareKeys) {
		old, ok := ai[k]
		switch {
		case !ok:
			changes = append(changes, Change{Op: "+", Key: k})
		case !proto.Equal(old.Interface(), bi[k].Interface()):
			changes = append(changes, Change{Op: "~", Key: k, Diff: gocmp.Diff(old.Interface(), bi[k].Interface(), protocmp.Transform())})
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(ai), compareKeys) {
		if _, ok := bi[k]; !ok {
			changes = append(changes, Change{Op: "-", Key: k})
		}
	}
	slices.SortStableFunc(changes, func(x, y Change) int { return compareKeys(x.Key, y.Key) })
	return header, changes
}

// ResourceKey returns the key of a wrapped resource.
func ResourceKey(r *bundlev1.Resource) (Key, error) {
	kind, m, err := unwrap(r)
	if err != nil {
		return Key{}, err
	}
	md := metadataOf(m)
	return Key{Kind: kind, Namespace: md.GetNamespace(), Name: md.GetName()}, nil
}
