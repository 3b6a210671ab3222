package bundle

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"meshkit.dev/meshkit/trust"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// SchemaVersion is the bundle schema this build writes.
const SchemaVersion = 1

// Digest is the SHA-256 of an encoded bundle: its content hash. It is trust's digest
// type, so a hash computed here compares with the one a verifier reports.
type Digest = trust.Digest

// Hash returns the content hash of an encoded bundle or delta.
func Hash(payload []byte) Digest { return sha256.Sum256(payload) }

// Encode puts b into canonical form (in place) and encodes it deterministically. The same
// content always yields the same bytes, whatever order the resources were declared in.
func Encode(b *bundlev1.Bundle) ([]byte, error) {
	Canonicalize(b)
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode: %w", err)
	}
	return out, nil
}

// DecodeBundle parses an encoded bundle.
func DecodeBundle(payload []byte) (*bundlev1.Bundle, error) {
	b := &bundlev1.Bundle{}
	if err := proto.Unmarshal(payload, b); err != nil {
		return nil, fmt.Errorf("bundle: decode: %w", err)
	}
	return b, nil
}

// Canonicalize sorts every resource list by (namespace, name), every label list by key,
// and the required capabilities, removing duplicate capabilities.
func Canonicalize(b *bundlev1.Bundle) {
	CanonicalizeHeader(b)
	for _, l := range resourceLists(b, true) {
		sortList(l.list)
	}
}

// CanonicalizeHeader puts b's header in canonical form (its capabilities sorted, once
// each): all Canonicalize does to a bundle whose resource lists are known to be in order.
func CanonicalizeHeader(b *bundlev1.Bundle) {
	if h := b.GetHeader(); h != nil {
		slices.Sort(h.RequiredCapabilities)
		h.RequiredCapabilities = slices.Compact(h.RequiredCapabilities)
	}
}

// sortList sorts one resource list by (namespace, name) and each item's labels by key.
// Keys are read once per item (reflection inside a comparator would run n·log n times),
// and a list already in order, as the seed's usually are, is left untouched.
func sortList(list protoreflect.List) {
	type item struct {
		md *bundlev1.Metadata
		m  protoreflect.Message
	}
	items := make([]item, list.Len())
	sorted := true
	for i := range items {
		m := list.Get(i).Message()
		items[i] = item{md: metadataOf(m), m: m}
		if labels := items[i].md.GetLabels(); !slices.IsSortedFunc(labels, compareLabels) {
			slices.SortFunc(labels, compareLabels)
		}
		if i > 0 && compareMeta(items[i-1].md, items[i].md) > 0 {
			sorted = false
		}
	}
	if sorted {
		return
	}
	slices.SortStableFunc(items, func(a, b item) int { return compareMeta(a.md, b.md) })
	for i, it := range items {
		list.Set(i, protoreflect.ValueOfMessage(it.m))
	}
}

func compareLabels(a, b *bundlev1.Label) int { return cmp.Compare(a.GetKey(), b.GetKey()) }

func compareMeta(a, b *bundlev1.Metadata) int {
	return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
}

// kindList is one repeated resource field of a Bundle.
type kindList struct {
	kind  string // message name, e.g. "Route"
	field protoreflect.FieldDescriptor
	list  protoreflect.List
}

// resourceLists returns the resource lists of b, in field order. Every repeated message
// field of Bundle except the header is a resource list whose element has Metadata as
// field 1: a new kind added to the schema is handled here without more code.
// Lists are mutable only when mutable is set; readers must not call Mutable, which writes.
func resourceLists(b *bundlev1.Bundle, mutable bool) []kindList {
	m := b.ProtoReflect()
	fields := m.Descriptor().Fields()
	var out []kindList
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !fd.IsList() || fd.Kind() != protoreflect.MessageKind {
			continue
		}
		l := kindList{kind: string(fd.Message().Name()), field: fd}
		if mutable {
			l.list = m.Mutable(fd).List()
		} else {
			l.list = m.Get(fd).List()
		}
		out = append(out, l)
	}
	return out
}

var metadataName = (&bundlev1.Metadata{}).ProtoReflect().Descriptor().FullName()

// metadataOf returns field 1 (Metadata) of a resource message. The known kinds take a
// type switch (this runs for every resource on every compile and delta); reflection
// covers any other message with Metadata as field 1.
func metadataOf(m protoreflect.Message) *bundlev1.Metadata {
	switch r := m.Interface().(type) {
	case *bundlev1.Route:
		return r.GetMetadata()
	case *bundlev1.Cluster:
		return r.GetMetadata()
	case *bundlev1.AuthzPolicy:
		return r.GetMetadata()
	case *bundlev1.RetryPolicy:
		return r.GetMetadata()
	case *bundlev1.ExtensionBinding:
		return r.GetMetadata()
	case *bundlev1.KillSwitch:
		return r.GetMetadata()
	}
	fd := m.Descriptor().Fields().ByNumber(1)
	if fd == nil || fd.Message() == nil || fd.Message().FullName() != metadataName {
		return nil
	}
	if !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message().Interface().(*bundlev1.Metadata)
}

// Each calls fn for every resource of b, in canonical order of kinds and lists.
func Each(b *bundlev1.Bundle, fn func(k Key, m proto.Message)) {
	for _, l := range resourceLists(b, false) {
		for i := 0; i < l.list.Len(); i++ {
			m := l.list.Get(i).Message()
			md := metadataOf(m)
			fn(Key{Kind: l.kind, Namespace: md.GetNamespace(), Name: md.GetName()}, m.Interface())
		}
	}
}

// Count returns how many resources b holds.
func Count(b *bundlev1.Bundle) int {
	n := 0
	for _, l := range resourceLists(b, false) {
		n += l.list.Len()
	}
	return n
}

// HasExtensionBindings reports whether an encoded bundle has any extension binding,
// without decoding it: agents check every accepted bundle, and most have none.
// Malformed input reports true, so that the caller decodes it and sees the error.
func HasExtensionBindings(payload []byte) bool {
	const field = 6 // Bundle.extension_bindings
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return true
		}
		if num == field {
			return true
		}
		payload = payload[n:]
		m := protowire.ConsumeFieldValue(num, typ, payload)
		if m < 0 {
			return true
		}
		payload = payload[m:]
	}
	return false
}
