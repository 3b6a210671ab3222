package bundle

import (
	"testing"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// TestHeaderViewMirrorsBundleAndDelta: the verifier reads headers through HeaderView, so
// its field must have the same number and type as the header of Bundle and BundleDelta.
func TestHeaderViewMirrorsBundleAndDelta(t *testing.T) {
	view := (&bundlev1.HeaderView{}).ProtoReflect().Descriptor().Fields().ByName("header")
	for _, m := range []proto.Message{&bundlev1.Bundle{}, &bundlev1.BundleDelta{}} {
		fd := m.ProtoReflect().Descriptor().Fields().ByName("header")
		if fd == nil || fd.Number() != view.Number() || fd.Message().FullName() != view.Message().FullName() {
			t.Errorf("%s.header does not mirror HeaderView.header", m.ProtoReflect().Descriptor().FullName())
		}
	}
}

// TestEveryResourceKindIsComplete: each resource list of Bundle holds messages with
// Metadata as field 1 and has a case in Resource, so deltas and canonical order cover it.
func TestEveryResourceKindIsComplete(t *testing.T) {
	b := &bundlev1.Bundle{}
	lists := resourceLists(b, false)
	if len(lists) != 6 {
		t.Fatalf("%d resource lists, want 6", len(lists))
	}
	for _, l := range lists {
		mt := l.field.Message()
		if f1 := mt.Fields().ByNumber(1); f1 == nil || f1.Message() == nil || f1.Message().FullName() != metadataName {
			t.Errorf("%s: field 1 is not Metadata", mt.FullName())
		}
		found := false
		for i := 0; i < resourceOneof.Fields().Len(); i++ {
			if resourceOneof.Fields().Get(i).Message().FullName() == mt.FullName() {
				found = true
			}
		}
		if !found {
			t.Errorf("%s has no case in Resource", mt.FullName())
		}
	}
}
