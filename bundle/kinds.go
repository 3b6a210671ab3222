package bundle

import (
	"fmt"
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// notCompiled lists the kinds a seed keeps and validates with but never puts in a
// bundle as resources of their own, with the reason.
var notCompiled = map[string]string{
	KindExtension:      "resolved into the ExtensionBindings that use it",
	KindReferenceGrant: "used by validation only",
}

// resourceField is where a compiled kind's resources live in a Bundle: the repeated
// field whose element has a metadata field and a spec field of the kind's spec message.
type resourceField struct {
	list, metadata, spec protoreflect.FieldDescriptor
}

// resourceFields derives, from the schema, the Bundle field of every kind that is
// compiled. A kind that has neither such a field nor a reason in notCompiled is an error:
// a new kind cannot be dropped from bundles silently.
func resourceFields() (map[string]resourceField, error) {
	bySpec := map[protoreflect.FullName]resourceField{}
	fields := (&bundlev1.Bundle{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !fd.IsList() || fd.Message() == nil {
			continue
		}
		el := fd.Message().Fields()
		md, spec := el.ByName("metadata"), el.ByName("spec")
		if md == nil || spec == nil || spec.Message() == nil {
			continue
		}
		bySpec[spec.Message().FullName()] = resourceField{list: fd, metadata: md, spec: spec}
	}
	out := map[string]resourceField{}
	for _, kind := range Kinds() {
		spec, _ := NewSpec(kind)
		rf, ok := bySpec[spec.ProtoReflect().Descriptor().FullName()]
		_, skipped := notCompiled[kind]
		switch {
		case ok && skipped:
			return nil, fmt.Errorf("bundle: kind %s has a Bundle field but is listed as not compiled", kind)
		case !ok && !skipped:
			return nil, fmt.Errorf("bundle: kind %s has no Bundle field and no reason not to be compiled", kind)
		case ok:
			out[kind] = rf
		}
	}
	return out, nil
}

// compiledKinds is resourceFields, computed once from the generated descriptors; a
// schema that breaks its rule fails every test of the package and every Assemble.
var compiledKinds = sync.OnceValues(resourceFields)
