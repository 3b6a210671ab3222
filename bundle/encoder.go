package bundle

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// Encoder encodes successive canonical bundles, reusing the bytes of every resource that
// is the same message as in the bundle it encoded before: a seed publishing one changed
// route out of 10,000 re-encodes one route. The output is byte for byte what Encode
// gives (property-tested). Resources are recognised by the identity of their parts
// (metadata, spec, …), so messages must not be modified after they are encoded; the seed
// shares stored messages read-only and copies what compilation changes.
//
// An Encoder is not safe for concurrent use.
type Encoder struct {
	prev map[partsKey][]byte
	// last is the previous output's size: the next is sized from it, so a 1 MiB bundle is
	// not copied through a dozen doublings of append.
	last int
}

// partsKey identifies a resource by the message fields it points to.
type partsKey struct {
	kind    protoreflect.FullName
	a, b, c any
}

// keyOf returns the identity of m's message fields; ok is false when m has fields that
// are not singular messages (then it is always encoded afresh).
func keyOf(m protoreflect.Message) (partsKey, bool) {
	k := partsKey{kind: m.Descriptor().FullName()}
	fields := m.Descriptor().Fields()
	if fields.Len() > 3 {
		return k, false
	}
	slots := []*any{&k.a, &k.b, &k.c}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return k, false
		}
		if m.Has(fd) {
			*slots[i] = m.Get(fd).Message().Interface()
		}
	}
	return k, true
}

// Encode canonicalises b (in place) and encodes it.
func (e *Encoder) Encode(b *bundlev1.Bundle) ([]byte, error) {
	out, _, err := e.EncodeLayout(b)
	return out, err
}

// EncodeLayout is Encode, also returning where each resource lies (for Patch).
func (e *Encoder) EncodeLayout(b *bundlev1.Bundle) ([]byte, *Layout, error) {
	Canonicalize(b)
	det := proto.MarshalOptions{Deterministic: true}
	next := make(map[partsKey][]byte, len(e.prev))
	out := make([]byte, 0, e.last+e.last/16+1024)
	lay := &Layout{lists: map[protowire.Number][]span{}}
	m := b.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ { // field-number order, as deterministic Marshal writes
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !fd.IsList() {
			enc, err := det.Marshal(m.Get(fd).Message().Interface())
			if err != nil {
				return nil, nil, fmt.Errorf("bundle: encode %s: %w", fd.Name(), err)
			}
			out = protowire.AppendTag(out, fd.Number(), protowire.BytesType)
			out = protowire.AppendBytes(out, enc)
			continue
		}
		list := m.Get(fd).List()
		spans := make([]span, list.Len())
		for j := 0; j < list.Len(); j++ {
			item := list.Get(j).Message()
			key, cacheable := keyOf(item)
			enc, hit := e.prev[key]
			if !cacheable || !hit {
				var err error
				if enc, err = det.Marshal(item.Interface()); err != nil {
					return nil, nil, fmt.Errorf("bundle: encode %s: %w", fd.Name(), err)
				}
			}
			if cacheable {
				next[key] = enc
			}
			md := metadataOf(item)
			start := len(out)
			out = protowire.AppendTag(out, fd.Number(), protowire.BytesType)
			out = protowire.AppendBytes(out, enc)
			spans[j] = span{namespace: md.GetNamespace(), name: md.GetName(), start: start, end: len(out)}
		}
		if len(spans) > 0 {
			lay.lists[fd.Number()] = spans
		}
	}
	e.prev = next
	e.last = len(out)
	return out, lay, nil
}
