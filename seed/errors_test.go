package seed_test

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
)

// TestRefusalsAreDomainErrors: an embedding process applies without a principal and gets
// refusals it can test with errors.Is; the admin API renders the same refusal as the gRPC
// code its clients expect.
func TestRefusalsAreDomainErrors(t *testing.T) {
	ts := open(t, "")
	_, err := ts.Apply(t.Context(), "embedder", nil)
	if !errors.Is(err, seed.ErrInvalid) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty apply: %v (code %v), want ErrInvalid / InvalidArgument", err, status.Code(err))
	}
	bad := resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Route\nmetadata: {name: r, namespace: shop}\nspec: {cluster: missing, match: {hosts: [r.example]}}\n")
	if _, err := ts.Apply(t.Context(), "embedder", bad); !errors.Is(err, seed.ErrInvalid) {
		t.Fatalf("route to a missing cluster: %v, want ErrInvalid", err)
	}
	good := resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: api, namespace: shop}\nspec: {endpoints: [{address: 10.0.0.1, port: 80}]}\n")
	resp, err := ts.Apply(t.Context(), "embedder", good)
	if err != nil || len(resp.GetChanges()) != 1 {
		t.Fatalf("apply as the embedder: %v, %v", resp, err)
	}
	_, err = ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: "Cluster", Namespace: "shop", Name: "nope"})
	if !errors.Is(err, seed.ErrNotFound) || status.Code(err) != codes.NotFound {
		t.Fatalf("delete of nothing: %v (code %v), want ErrNotFound / NotFound", err, status.Code(err))
	}
}
