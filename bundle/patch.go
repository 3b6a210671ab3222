package bundle

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// Layout says where each resource of an encoded bundle lies, so that the next version can
// be made by copying the unchanged resources' bytes and encoding only the changed ones:
// a seed publishing one changed route of 10,000 encodes one route and diffs nothing.
type Layout struct {
	lists map[protowire.Number][]span // resource list field → its items in order
}

// span is one item of a list: its key and the bytes (tag, length, message) it occupies.
type span struct {
	namespace, name string
	start, end      int
}

// ErrPatchMismatch: the bundle is not the previous one changed only at the keys given; the
// caller encodes it whole (Encode with a Layout) instead.
var ErrPatchMismatch = errors.New("bundle: the bundle differs from the previous one beyond the changed keys")

// EncodeWithLayout canonicalises b (in place), encodes it exactly as Encode does, and
// returns the layout of the result.
func EncodeWithLayout(b *bundlev1.Bundle) ([]byte, *Layout, error) {
	return (&Encoder{}).EncodeLayout(b)
}

// Patched is a bundle encoded by Patch.
type Patched struct {
	Payload []byte
	Hash    Digest
	Layout  *Layout
	// Delta turns the previous bundle into this one: what DeltaBetween would compute.
	Delta *bundlev1.BundleDelta
}

// Patch encodes b, the previous bundle (prev, encoded as prevPayload with prevLayout)
// changed at most at the keys in changed, by copying every other resource's bytes from
// prevPayload, and derives the delta from the changed keys alone. Its output is byte for
// byte what EncodeWithLayout and DeltaBetween give (property-tested). b must be
// canonical (Compile's bundles are). A resource whose presence changed at a key not in
// changed is detected (ErrPatchMismatch); a content change at such a key is not: the
// caller must name every key whose compiled resource may differ.
func Patch(prev *bundlev1.Bundle, prevPayload []byte, prevHash Digest, prevLayout *Layout, b *bundlev1.Bundle, changed map[Key]bool) (*Patched, error) {
	det := proto.MarshalOptions{Deterministic: true}
	byKind := map[string][]Key{}
	for k := range changed {
		byKind[k.Kind] = append(byKind[k.Kind], k)
	}
	out := make([]byte, 0, len(prevPayload)+1024)
	lay := &Layout{lists: make(map[protowire.Number][]span, len(prevLayout.lists))}
	type kindDelta struct {
		kind     string
		upserts  []*bundlev1.Resource
		removals []*bundlev1.ResourceKey
	}
	var deltas []kindDelta
	m := b.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !fd.IsList() {
			if !m.Has(fd) {
				continue
			}
			enc, err := det.Marshal(m.Get(fd).Message().Interface())
			if err != nil {
				return nil, fmt.Errorf("bundle: encode %s: %w", fd.Name(), err)
			}
			out = protowire.AppendBytes(protowire.AppendTag(out, fd.Number(), protowire.BytesType), enc)
			continue
		}
		kind := string(fd.Message().Name())
		list := m.Get(fd).List()
		old := prevLayout.lists[fd.Number()]
		keys := byKind[kind]
		slices.SortFunc(keys, func(a, b Key) int { return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name)) })
		kd := kindDelta{kind: kind}
		spans := make([]span, 0, list.Len())
		copyOld := func(s span) {
			start := len(out)
			out = append(out, prevPayload[s.start:s.end]...)
			spans = append(spans, span{namespace: s.namespace, name: s.name, start: start, end: len(out)})
		}
		oi := 0
		for _, k := range keys {
			for oi < len(old) && compareKey(old[oi], k) < 0 {
				copyOld(old[oi])
				oi++
			}
			var before []byte // the key's bytes in the previous bundle, if it had it
			if oi < len(old) && compareKey(old[oi], k) == 0 {
				before = prevPayload[old[oi].start:old[oi].end]
				oi++
			}
			j := findItem(list, k)
			if j < 0 {
				if before != nil {
					kd.removals = append(kd.removals, &bundlev1.ResourceKey{Kind: kind, Namespace: k.Namespace, Name: k.Name})
				}
				continue
			}
			item := list.Get(j).Message()
			enc, err := det.Marshal(item.Interface())
			if err != nil {
				return nil, fmt.Errorf("bundle: encode %s: %w", fd.Name(), err)
			}
			start := len(out)
			out = protowire.AppendBytes(protowire.AppendTag(out, fd.Number(), protowire.BytesType), enc)
			spans = append(spans, span{namespace: k.Namespace, name: k.Name, start: start, end: len(out)})
			if string(before) != string(out[start:]) {
				r, err := wrap(item)
				if err != nil {
					return nil, err
				}
				kd.upserts = append(kd.upserts, r)
			}
		}
		for ; oi < len(old); oi++ {
			copyOld(old[oi])
		}
		if len(spans) != list.Len() {
			return nil, fmt.Errorf("%w: %s has %d resources, the previous ones and the changes make %d", ErrPatchMismatch, kind, list.Len(), len(spans))
		}
		for j, s := range spans { // the same resources in the same places: a cheap read of each key
			if md := metadataOf(list.Get(j).Message()); md.GetNamespace() != s.namespace || md.GetName() != s.name {
				return nil, fmt.Errorf("%w: %s %s/%s is not where the previous bundle and the changes put it", ErrPatchMismatch, kind, md.GetNamespace(), md.GetName())
			}
		}
		if len(spans) > 0 {
			lay.lists[fd.Number()] = spans
		}
		deltas = append(deltas, kd)
	}
	h := Hash(out)
	d := &bundlev1.BundleDelta{
		Header: b.GetHeader(), BaseEpoch: prev.GetHeader().GetEpoch(), BaseVersion: prev.GetHeader().GetVersion(),
		BaseHash: prevHash[:], TargetHash: h[:],
	}
	slices.SortFunc(deltas, func(a, b kindDelta) int { return cmp.Compare(a.kind, b.kind) }) // DeltaBetween's order
	for _, kd := range deltas {
		d.Upserts = append(d.Upserts, kd.upserts...)
		d.Removals = append(d.Removals, kd.removals...)
	}
	return &Patched{Payload: out, Hash: h, Layout: lay, Delta: d}, nil
}

func compareKey(s span, k Key) int {
	return cmp.Or(cmp.Compare(s.namespace, k.Namespace), cmp.Compare(s.name, k.Name))
}

// findItem finds the resource with k's namespace and name in a canonical list, or -1.
func findItem(list protoreflect.List, k Key) int {
	n := list.Len()
	j := sort.Search(n, func(i int) bool {
		md := metadataOf(list.Get(i).Message())
		return cmp.Or(cmp.Compare(md.GetNamespace(), k.Namespace), cmp.Compare(md.GetName(), k.Name)) >= 0
	})
	if j < n {
		if md := metadataOf(list.Get(j).Message()); md.GetNamespace() == k.Namespace && md.GetName() == k.Name {
			return j
		}
	}
	return -1
}
