package seed

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// TestShallowCopyCopiesEveryField: every field of a bundle, a list added to the schema
// included, is in the copy; the copy's lists are its own and the header is not shared.
func TestShallowCopyCopiesEveryField(t *testing.T) {
	b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{Domain: "d", Version: 3}}
	m := b.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.IsList() && fd.Message() != nil {
			l := m.Mutable(fd).List()
			l.Append(protoreflect.ValueOfMessage(l.NewElement().Message()))
		}
	}
	c := shallowCopy(b)
	if !proto.Equal(c, b) {
		t.Fatalf("copy differs:\n%v\n%v", c, b)
	}
	c.Header.Version = 4
	c.Routes = append(c.Routes, &bundlev1.Route{})
	if b.GetHeader().GetVersion() != 3 || len(b.GetRoutes()) != 1 {
		t.Fatal("the copy shares the header or a list with the original")
	}
}
