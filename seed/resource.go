package seed

import (
	"crypto/sha256"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// specField is the field of the admin Resource's spec oneof that holds spec messages of
// name, found through the schema: every kind in bundle's table has one (a test holds
// them to it), and nothing here lists the kinds again.
func specField(name protoreflect.FullName) protoreflect.FieldDescriptor {
	fields := (&adminv1.Resource{}).ProtoReflect().Descriptor().Oneofs().ByName("spec").Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Message() != nil && fd.Message().FullName() == name {
			return fd
		}
	}
	return nil
}

// ResourceFromObject wraps a decoded YAML object for the admin API.
func ResourceFromObject(o bundle.Object) (*adminv1.Resource, error) {
	if o.Spec == nil {
		return nil, fmt.Errorf("seed: %s %s/%s has no spec", o.Kind, o.Metadata.GetNamespace(), o.Metadata.GetName())
	}
	fd := specField(o.Spec.ProtoReflect().Descriptor().FullName())
	if fd == nil {
		return nil, fmt.Errorf("seed: %s has no admin resource form (%T)", o.Kind, o.Spec)
	}
	r := &adminv1.Resource{Metadata: o.Metadata}
	r.ProtoReflect().Set(fd, protoreflect.ValueOfMessage(o.Spec.ProtoReflect()))
	return r, nil
}

// ObjectFromResource unwraps an admin API resource into the form bundle validates. A
// spec of a kind bundle does not know is refused.
func ObjectFromResource(r *adminv1.Resource) (bundle.Object, error) {
	o := bundle.Object{Metadata: r.GetMetadata()}
	m := r.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("spec"))
	if fd == nil {
		return bundle.Object{}, fmt.Errorf("seed: resource %s/%s has no spec", r.GetMetadata().GetNamespace(), r.GetMetadata().GetName())
	}
	o.Spec = m.Get(fd).Message().Interface()
	kind, ok := bundle.KindOf(o.Spec)
	if !ok {
		return bundle.Object{}, fmt.Errorf("seed: resource %s/%s: %s is no kind of bundle's", r.GetMetadata().GetNamespace(), r.GetMetadata().GetName(), fd.Message().FullName())
	}
	o.Kind = kind
	if o.Metadata == nil {
		return bundle.Object{}, fmt.Errorf("seed: %s resource has no metadata", o.Kind)
	}
	if o.Metadata.GetNamespace() == "" {
		o.Metadata = proto.Clone(o.Metadata).(*bundlev1.Metadata)
		o.Metadata.Namespace = bundle.DefaultNamespace
	}
	if err := bundle.ValidateMetadata(o.Metadata); err != nil {
		return bundle.Object{}, fmt.Errorf("seed: %s: %w", o.Kind, err)
	}
	return o, nil
}

// keyString is the store and memdb id of a resource: "Kind/namespace/name".
func keyString(k bundle.Key) string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

// resourceHash is the SHA-256 of a resource's deterministic encoding.
func resourceHash(r *adminv1.Resource) (string, []byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return "", nil, fmt.Errorf("seed: encode resource: %w", err)
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%x", sum[:]), b, nil
}

// references are the ids of the resources o names.
func references(o bundle.Object) []string {
	keys := bundle.References(o)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = keyString(k)
	}
	return out
}
