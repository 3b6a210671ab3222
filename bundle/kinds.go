package bundle

import (
	"fmt"
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// checkKinds checks the kind table against the Bundle schema: a compiled kind adds
// exactly one resource, to the field whose resources have its spec message; a kind that is
// not compiled says why and has no such field; and every resource field of the Bundle
// belongs to a kind. A kind, or a Bundle field, added on one side only is an error: no
// kind's resources can be dropped from bundles silently.
func checkKinds() error {
	fields := map[protoreflect.FullName]protoreflect.FieldDescriptor{} // by spec message
	fds := (&bundlev1.Bundle{}).ProtoReflect().Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if !fd.IsList() || fd.Message() == nil {
			continue
		}
		if spec := fd.Message().Fields().ByName("spec"); spec != nil && spec.Message() != nil && fd.Message().Fields().ByName("metadata") != nil {
			fields[spec.Message().FullName()] = fd
		}
	}
	claimed := map[protoreflect.FieldDescriptor]string{}
	for _, name := range Kinds() {
		k := kinds[name]
		spec := k.spec()
		fd, hasField := fields[spec.ProtoReflect().Descriptor().FullName()]
		switch {
		case k.add == nil && k.notCompiled == "":
			return fmt.Errorf("bundle: kind %s is neither compiled nor says why not", name)
		case k.add == nil && hasField:
			return fmt.Errorf("bundle: kind %s is not compiled, but the Bundle has a field for it (%s)", name, fd.Name())
		case k.add == nil:
			continue
		case !hasField:
			return fmt.Errorf("bundle: kind %s is compiled, but the Bundle has no field for its resources", name)
		}
		b := &bundlev1.Bundle{}
		k.add(b, Object{Kind: name, Metadata: &bundlev1.Metadata{Name: "x"}, Spec: spec}, nil)
		if n := b.ProtoReflect().Get(fd).List().Len(); n != 1 || countResources(b) != 1 {
			return fmt.Errorf("bundle: compiling kind %s does not add one resource to %s", name, fd.Name())
		}
		claimed[fd] = name
	}
	for _, fd := range fields {
		if _, ok := claimed[fd]; !ok {
			return fmt.Errorf("bundle: the Bundle's field %s belongs to no kind", fd.Name())
		}
	}
	return nil
}

func countResources(b *bundlev1.Bundle) int {
	n := 0
	b.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.IsList() {
			n += v.List().Len()
		}
		return true
	})
	return n
}

// kindsChecked is checkKinds, run once: a table that breaks its rule fails the package's
// tests and every Assemble.
var kindsChecked = sync.OnceValue(checkKinds)
