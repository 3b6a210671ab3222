package node_test

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
)

// Example_decodeWatchPayload shows how a data-plane client decodes the payload of an
// omnirelay.control ControlWatchResponse: it is a meshkit.bundle.v1.Bundle, whose header
// carries the schema version (1) the client must check before reading the resources.
func Example_decodeWatchPayload() {
	// What an agent sends (normally read from the Watch stream).
	payload, _ := proto.Marshal(&bundlev1.Bundle{
		Header: &bundlev1.BundleHeader{SchemaVersion: 1, Domain: "prod", Epoch: 1, Version: 7, RequiredCapabilities: []string{"core/v1"}},
		Routes: []*bundlev1.Route{{Metadata: &bundlev1.Metadata{Name: "storefront", Namespace: "shop"}, Spec: &bundlev1.RouteSpec{Cluster: "frontend"}}},
	})
	resp := &controlpb.ControlWatchResponse{Version: "7", Epoch: 1, Payload: payload, FullSnapshot: true}

	// What the client does.
	var b bundlev1.Bundle
	if err := proto.Unmarshal(resp.GetPayload(), &b); err != nil {
		fmt.Println("bad payload:", err)
		return
	}
	if v := b.GetHeader().GetSchemaVersion(); v != 1 {
		fmt.Println("unsupported bundle schema", v)
		return
	}
	fmt.Printf("domain %s version %d: %d route(s)\n", b.GetHeader().GetDomain(), b.GetHeader().GetVersion(), len(b.GetRoutes()))
	for _, r := range b.GetRoutes() {
		fmt.Printf("  %s/%s -> %s\n", r.GetMetadata().GetNamespace(), r.GetMetadata().GetName(), r.GetSpec().GetCluster())
	}
	// Output:
	// domain prod version 7: 1 route(s)
	//   shop/storefront -> frontend
}
