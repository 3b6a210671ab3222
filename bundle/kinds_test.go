package bundle

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// TestKindsHaveOneHome: every kind is either compiled into exactly the Bundle field the
// schema gives it, or listed with a reason as not compiled; Assemble puts one object of
// each compiled kind in its field.
func TestKindsHaveOneHome(t *testing.T) {
	kinds, err := resourceFields()
	if err != nil {
		t.Fatal(err)
	}
	if len(kinds)+len(notCompiled) != len(Kinds()) {
		t.Fatalf("%d compiled and %d not compiled, of %d kinds", len(kinds), len(notCompiled), len(Kinds()))
	}
	var objs []Object
	for kind := range kinds {
		spec, _ := NewSpec(kind)
		objs = append(objs, Object{Kind: kind, Metadata: &bundlev1.Metadata{Name: "x", Namespace: "ns"}, Spec: spec})
	}
	m := Assemble(Header{Domain: "d", Version: 1}, objs).ProtoReflect()
	for kind, rf := range kinds {
		l := m.Get(rf.list).List()
		if l.Len() != 1 {
			t.Errorf("%s: %d resources in %s, want 1", kind, l.Len(), rf.list.Name())
			continue
		}
		if got := l.Get(0).Message().Get(rf.spec).Message().Descriptor().FullName(); got != mustSpec(kind).ProtoReflect().Descriptor().FullName() {
			t.Errorf("%s: spec %s in %s", kind, got, rf.list.Name())
		}
	}
}

func mustSpec(kind string) proto.Message {
	s, _ := NewSpec(kind)
	return s
}

// TestANewKindFailsClosed adds a kind the Bundle has no field for: the kind table refuses
// it (so Assemble cannot drop its resources silently), and Validate refuses its objects.
func TestANewKindFailsClosed(t *testing.T) {
	newSpec["Widget"] = func() proto.Message { return &bundlev1.Endpoint{} }
	t.Cleanup(func() { delete(newSpec, "Widget") })
	if _, err := resourceFields(); err == nil || !strings.Contains(err.Error(), "Widget") {
		t.Fatalf("a kind without a Bundle field was accepted: %v", err)
	}
	err := Validate([]Object{{Kind: "Widget", Metadata: &bundlev1.Metadata{Name: "w", Namespace: "ns"}, Spec: &bundlev1.Endpoint{}}})
	if err == nil || !strings.Contains(err.Error(), "no validation") {
		t.Fatalf("an object of a kind with no validation passed: %v", err)
	}
}
