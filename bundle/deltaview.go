package bundle

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// DecodeDeltaView parses an encoded delta, leaving its header and upserts encoded.
func DecodeDeltaView(payload []byte) (*bundlev1.BundleDeltaView, error) {
	d := &bundlev1.BundleDeltaView{}
	if err := proto.Unmarshal(payload, d); err != nil {
		return nil, fmt.Errorf("bundle: decode delta: %w", err)
	}
	return d, nil
}

// DeltaFromView decodes what a view left encoded.
func DeltaFromView(v *bundlev1.BundleDeltaView) (*bundlev1.BundleDelta, error) {
	d := &bundlev1.BundleDelta{
		BaseEpoch: v.GetBaseEpoch(), BaseVersion: v.GetBaseVersion(),
		BaseHash: v.GetBaseHash(), TargetHash: v.GetTargetHash(), Removals: v.GetRemovals(),
	}
	if v.GetHeader() != nil {
		d.Header = &bundlev1.BundleHeader{}
		if err := proto.Unmarshal(v.GetHeader(), d.Header); err != nil {
			return nil, fmt.Errorf("bundle: decode delta header: %w", err)
		}
	}
	d.Upserts = make([]*bundlev1.Resource, len(v.GetUpserts()))
	for i, raw := range v.GetUpserts() {
		d.Upserts[i] = &bundlev1.Resource{}
		if err := proto.Unmarshal(raw, d.Upserts[i]); err != nil {
			return nil, fmt.Errorf("bundle: decode delta upsert %d: %w", i, err)
		}
	}
	return d, nil
}

// ApplyDeltaView applies a delta to the encoded bundle basePayload, whose hash is
// baseHash, and returns the encoded target. It has ApplyDelta's contract (the target's
// hash is checked: a delta yields exactly its target or fails with ErrDeltaMismatch) but
// works on the encoding: the base's resources and the upserts are copied as bytes into
// their canonical places, and nothing is decoded into messages. For a 4 KiB delta that
// changes every route this is several times cheaper than decoding the delta and the
// base and encoding the result, and an agent does it for every delta it receives.
//
// Any input this fast path does not recognise as canonical (fields out of order or
// repeated, unknown fields, a resource without metadata, a result whose hash differs)
// is applied again by decoding, so the outcome never depends on which path ran.
func ApplyDeltaView(basePayload []byte, baseHash Digest, d *bundlev1.BundleDeltaView) ([]byte, error) {
	if !slices.Equal(baseHash[:], d.GetBaseHash()) {
		return nil, fmt.Errorf("%w: base is %s, the delta expects %x", ErrDeltaMismatch, baseHash, d.GetBaseHash())
	}
	if out, ok := applyWire(basePayload, d); ok {
		if h := Hash(out); slices.Equal(h[:], d.GetTargetHash()) {
			return out, nil
		}
	}
	full, err := DeltaFromView(d)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDeltaMismatch, err)
	}
	base, err := DecodeBundle(basePayload)
	if err != nil {
		return nil, err
	}
	out, _, err := ApplyDeltaDecoded(base, baseHash, full)
	return out, err
}

// wireKind is one resource list of Bundle as the wire format numbers it.
type wireKind struct {
	name  string           // message name, the Key's Kind ("Route")
	field protowire.Number // the Bundle field of the list
}

// wireSchema maps Resource's oneof cases and kind names to Bundle list fields, from the
// descriptors (a kind added to the schema needs no change here).
type wireSchema struct {
	byCase map[protowire.Number]wireKind
	byName map[string]protowire.Number
	names  map[protowire.Number]string // the list fields, to their kind names
}

var wireKinds = newWireSchema()

func newWireSchema() wireSchema {
	s := wireSchema{byCase: map[protowire.Number]wireKind{}, byName: map[string]protowire.Number{}, names: map[protowire.Number]string{}}
	bundleFields := (&bundlev1.Bundle{}).ProtoReflect().Descriptor().Fields()
	listOf := map[protoreflect.FullName]protowire.Number{}
	for i := 0; i < bundleFields.Len(); i++ {
		fd := bundleFields.Get(i)
		if fd.IsList() && fd.Message() != nil {
			listOf[fd.Message().FullName()] = fd.Number()
			s.byName[string(fd.Message().Name())] = fd.Number()
			s.names[fd.Number()] = string(fd.Message().Name())
		}
	}
	cases := resourceOneof.Fields()
	for i := 0; i < cases.Len(); i++ {
		fd := cases.Get(i)
		if n, ok := listOf[fd.Message().FullName()]; ok {
			s.byCase[fd.Number()] = wireKind{name: string(fd.Message().Name()), field: n}
		}
	}
	return s
}

// wireItem is one resource in wire form: the Bundle field it belongs to, its key and its
// encoded message.
type wireItem struct {
	field     protowire.Number
	namespace []byte
	name      []byte
	raw       []byte
}

func compareWire(a, b wireItem) int {
	return cmp.Or(cmp.Compare(a.field, b.field), bytes.Compare(a.namespace, b.namespace), bytes.Compare(a.name, b.name))
}

// applyWire assembles the target from basePayload's encoded resources and d's, merging
// the base (read as it is walked) with the sorted upserts and removals. ok is false when
// an input is not in the canonical form this relies on, or when a removal names nothing
// in the base: the decoding path then decides, and words the error.
func applyWire(basePayload []byte, d *bundlev1.BundleDeltaView) (out []byte, ok bool) {
	header := d.GetHeader()
	if len(header) == 0 {
		return nil, false
	}
	ups := make([]wireItem, 0, len(d.GetUpserts()))
	size := protowire.SizeTag(1) + protowire.SizeBytes(len(header)) + len(basePayload)
	for _, raw := range d.GetUpserts() {
		it, ok := upsertItem(raw)
		if !ok {
			return nil, false
		}
		ups = append(ups, it)
		size += len(raw) // an upper bound of the item's own tag and length
	}
	if !slices.IsSortedFunc(ups, compareWire) {
		slices.SortFunc(ups, compareWire)
	}
	for i := 1; i < len(ups); i++ {
		if compareWire(ups[i-1], ups[i]) == 0 {
			return nil, false // two upserts of one key
		}
	}
	rems := make([]wireItem, 0, len(d.GetRemovals()))
	for _, k := range d.GetRemovals() {
		f, known := wireKinds.byName[k.GetKind()]
		if !known {
			return nil, false
		}
		rems = append(rems, wireItem{field: f, namespace: []byte(k.GetNamespace()), name: []byte(k.GetName())})
	}
	if !slices.IsSortedFunc(rems, compareWire) {
		slices.SortFunc(rems, compareWire)
	}
	out = make([]byte, 0, size)
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	out = protowire.AppendBytes(out, header)
	emit := func(it wireItem) {
		out = protowire.AppendTag(out, it.field, protowire.BytesType)
		out = protowire.AppendBytes(out, it.raw)
	}
	var prev wireItem
	k, j := 0, 0
	for rest, first := basePayload, true; len(rest) > 0; first = false {
		num, raw, n := nextField(rest)
		if n < 0 {
			return nil, false
		}
		rest = rest[n:]
		if num == 1 { // the base's header: the target's is the delta's
			if !first {
				return nil, false
			}
			continue
		}
		if _, list := wireKinds.names[num]; !list {
			return nil, false
		}
		it, ok := keyed(num, raw)
		if !ok || (prev.field != 0 && compareWire(prev, it) >= 0) {
			return nil, false
		}
		prev = it
		for ; k < len(ups) && compareWire(ups[k], it) < 0; k++ {
			emit(ups[k])
		}
		if j < len(rems) && compareWire(rems[j], it) < 0 {
			return nil, false // a removal of something the base lacks, or a repeated one
		}
		keep := true
		if j < len(rems) && compareWire(rems[j], it) == 0 {
			keep = false
			j++
		}
		if k < len(ups) && compareWire(ups[k], it) == 0 {
			emit(ups[k]) // replaces the base's
			k++
			continue
		}
		if keep {
			emit(it)
		}
	}
	if j < len(rems) {
		return nil, false
	}
	for ; k < len(ups); k++ {
		emit(ups[k])
	}
	return out, true
}

// nextField reads one length-delimited field; n < 0 if msg does not start with one.
func nextField(msg []byte) (num protowire.Number, v []byte, n int) {
	num, typ, n := protowire.ConsumeTag(msg)
	if n < 0 || typ != protowire.BytesType {
		return 0, nil, -1
	}
	v, m := protowire.ConsumeBytes(msg[n:])
	if m < 0 {
		return 0, nil, -1
	}
	return num, v, n + m
}

// upsertItem unwraps an encoded Resource: exactly one case, holding a resource.
func upsertItem(raw []byte) (wireItem, bool) {
	num, inner, n := nextField(raw)
	if n != len(raw) {
		return wireItem{}, false
	}
	kind, known := wireKinds.byCase[num]
	if !known {
		return wireItem{}, false
	}
	return keyed(kind.field, inner)
}

// keyed reads the key of an encoded resource message: Metadata is its field 1, and the
// Metadata's name and namespace are fields 1 and 2. Each must appear at most once, and
// the metadata must be present.
func keyed(field protowire.Number, raw []byte) (wireItem, bool) {
	it := wireItem{field: field, raw: raw}
	md, found := onlyField(raw, 1)
	if !found {
		return wireItem{}, false
	}
	var okName, okNS bool
	if it.name, okName = optionalField(md, 1); !okName {
		return wireItem{}, false
	}
	if it.namespace, okNS = optionalField(md, 2); !okNS {
		return wireItem{}, false
	}
	return it, true
}

// onlyField returns the bytes of length-delimited field num of msg, which must occur
// exactly once.
func onlyField(msg []byte, num protowire.Number) ([]byte, bool) {
	v, ok := optionalField(msg, num)
	return v, ok && v != nil
}

// optionalField returns the bytes of length-delimited field num of msg (nil if absent);
// ok is false if msg does not parse or num occurs more than once or with another type.
func optionalField(msg []byte, num protowire.Number) (v []byte, ok bool) {
	for len(msg) > 0 {
		got, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, false
		}
		msg = msg[n:]
		if got == num {
			if typ != protowire.BytesType || v != nil {
				return nil, false
			}
			b, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return nil, false
			}
			v, msg = b, msg[m:]
			if v == nil {
				v = []byte{}
			}
			continue
		}
		m := protowire.ConsumeFieldValue(got, typ, msg)
		if m < 0 {
			return nil, false
		}
		msg = msg[m:]
	}
	return v, true
}
