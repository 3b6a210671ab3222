package bundle

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	gocmp "github.com/google/go-cmp/cmp"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// fill sets every field of m (the pick-th member of each oneof), recursing into messages
// up to depth levels: the whole schema, not what the examples happen to use.
func fill(m protoreflect.Message, pick, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() && o.Fields().Get(pick%o.Fields().Len()) != fd {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for j := range 2 {
				k := protoreflect.ValueOfString(fmt.Sprintf("k%d", j)).MapKey()
				if fd.MapKey().Kind() != protoreflect.StringKind {
					k = scalar(fd.MapKey(), j).MapKey()
				}
				mp.Set(k, value(mp.NewValue, fd.MapValue(), pick, depth, j))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range 2 {
				l.Append(value(l.NewElement, fd, pick, depth, j))
			}
		default:
			if fd.Message() != nil && depth <= 0 {
				continue
			}
			m.Set(fd, value(func() protoreflect.Value { return m.NewField(fd) }, fd, pick, depth, 0))
		}
	}
}

func value(newMsg func() protoreflect.Value, fd protoreflect.FieldDescriptor, pick, depth, j int) protoreflect.Value {
	if fd.Message() == nil {
		return scalar(fd, j)
	}
	if fd.Message().FullName() == durationName {
		return protoreflect.ValueOfMessage(durationpb.New(time.Duration(j+1) * 1500 * time.Millisecond).ProtoReflect())
	}
	v := newMsg()
	fill(v.Message(), pick, depth-1)
	return v
}

func scalar(fd protoreflect.FieldDescriptor, j int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d: with 'quotes', #, true", fd.Name(), j))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(-7 - j))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(-1<<40 - j))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(7 + j))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(1<<40 + j))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(0.25 + float64(j)))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(0.1 + float64(j))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{0, 1, byte(j), 0xff})
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(min(1+j, vals.Len()-1)).Number())
	}
	panic(fmt.Sprintf("no value for %s", fd.Kind()))
}

// TestYAMLRoundTripsEveryKindAndField: every field of every kind, set, encoded to YAML,
// decoded and encoded again gives the same objects and the same bytes.
func TestYAMLRoundTripsEveryKindAndField(t *testing.T) {
	for _, kind := range Kinds() {
		for pick := range 3 {
			spec, _ := NewSpec(kind)
			fill(spec.ProtoReflect(), pick, 3)
			o := Object{Kind: kind, Spec: spec, Metadata: &bundlev1.Metadata{Name: "n", Namespace: "ns", Tenant: "acme", Region: "eu-west-1",
				Labels: []*bundlev1.Label{{Key: "app", Value: "shop"}, {Key: "team", Value: "true"}}}}
			var first bytes.Buffer
			if err := EncodeYAML(&first, []Object{o}); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			back, err := Decode("get.yaml", first.Bytes())
			if err != nil {
				t.Fatalf("%s (pick %d): the encoded YAML does not decode: %v\n%s", kind, pick, err, first.String())
			}
			if len(back) != 1 || back[0].Kind != kind || !proto.Equal(back[0].Metadata, o.Metadata) {
				t.Fatalf("%s: metadata after a round trip: %v", kind, back)
			}
			if diff := gocmp.Diff(o.Spec, back[0].Spec, protocmp.Transform()); diff != "" {
				t.Fatalf("%s (pick %d): spec changed in a round trip (-want +got):\n%s\n%s", kind, pick, diff, first.String())
			}
			var second bytes.Buffer
			if err := EncodeYAML(&second, back); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first.Bytes(), second.Bytes()) {
				t.Fatalf("%s: encoding is not canonical:\n%s\nthen\n%s", kind, first.String(), second.String())
			}
		}
	}
}

// TestYAMLWritesDurationsAndLabelsAsPeopleDo: the examples' spelling survives.
func TestYAMLWritesDurationsAndLabelsAsPeopleDo(t *testing.T) {
	objs, err := Decode("in.yaml", []byte("apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c, namespace: shop, labels: {tier: gold}}\n"+
		"spec:\n  endpoints: [{address: 10.0.0.1, port: 80}]\n  connectTimeout: 500ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := EncodeYAML(&out, objs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connectTimeout: 500ms\n", "  labels:\n    tier: gold\n"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
