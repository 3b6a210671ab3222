package bundle

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// TestKindsHaveOneHome: the kind table agrees with the Bundle schema (checkKinds), and
// Assemble puts one object of each compiled kind in its field.
func TestKindsHaveOneHome(t *testing.T) {
	if err := checkKinds(); err != nil {
		t.Fatal(err)
	}
	var objs []Object
	compiled := 0
	for _, name := range Kinds() {
		if kinds[name].add == nil {
			continue
		}
		compiled++
		spec, _ := NewSpec(name)
		objs = append(objs, Object{Kind: name, Metadata: &bundlev1.Metadata{Name: "x", Namespace: "ns"}, Spec: spec})
	}
	if n := countResources(Assemble(Header{Domain: "d", Version: 1}, objs)); n != compiled {
		t.Fatalf("Assemble kept %d of %d resources, one of each compiled kind", n, compiled)
	}
}

// TestANewKindFailsClosed adds kinds the table and the schema disagree on: each is
// refused (so Assemble cannot drop its resources silently), and Validate refuses the
// objects of a kind it has no validation for.
func TestANewKindFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    kind
		want string
	}{
		{"no way to compile", kind{spec: func() proto.Message { return &bundlev1.Endpoint{} }}, "neither compiled nor says why"},
		{"no Bundle field", kind{spec: func() proto.Message { return &bundlev1.Endpoint{} }, add: func(*bundlev1.Bundle, Object, map[Key]*bundlev1.ExtensionSpec) {}}, "no field"},
		{"adds to the wrong field", kind{spec: func() proto.Message { return &bundlev1.RouteSpec{} }, add: func(b *bundlev1.Bundle, o Object, _ map[Key]*bundlev1.ExtensionSpec) {
			b.Clusters = append(b.Clusters, &bundlev1.Cluster{})
		}}, "does not add one resource"},
		{"skips a Bundle field", kind{spec: func() proto.Message { return &bundlev1.ClusterSpec{} }, notCompiled: "no reason"}, "has a field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "Widget"
			if tc.name == "skips a Bundle field" || tc.name == "adds to the wrong field" {
				name = map[string]string{"skips a Bundle field": KindCluster, "adds to the wrong field": KindRoute}[tc.name]
			}
			saved, had := kinds[name]
			kinds[name] = tc.k
			t.Cleanup(func() {
				if had {
					kinds[name] = saved
				} else {
					delete(kinds, name)
				}
			})
			if err := checkKinds(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkKinds: %v, want %q", err, tc.want)
			}
		})
	}
	err := Validate([]Object{{Kind: "Widget", Metadata: &bundlev1.Metadata{Name: "w", Namespace: "ns"}, Spec: &bundlev1.Endpoint{}}})
	if err == nil || !strings.Contains(err.Error(), "no validation") {
		t.Fatalf("an object of a kind with no validation passed: %v", err)
	}
}
