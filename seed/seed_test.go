package seed_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/trust"
)

func TestApplyExamplesPublishesAVerifiableBundle(t *testing.T) {
	ts := open(t, "")
	resp := ts.apply(t, resources(t, "../examples/shop"))
	if len(resp.GetChanges()) != 13 || resp.GetAuditSeq() != 1 || !strings.HasPrefix(resp.GetStateHash(), "sha256:") {
		t.Fatalf("apply response = %v", resp)
	}
	pub := ts.waitPublished(t, 1)
	if len(pub.Variants) != 1 {
		t.Fatalf("%d variants, want 1 (no extensions)", len(pub.Variants))
	}
	v := verifierFor(t, "prod")
	vb, err := v.Verify(pub.Variants[0].Snapshot)
	if err != nil {
		t.Fatalf("published bundle does not verify: %v", err)
	}
	b, err := bundle.DecodeBundle(vb.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if bundle.Count(b) != 13 || b.GetHeader().GetVersion() != 1 || b.GetHeader().GetEpoch() != 1 {
		t.Fatalf("bundle v%d holds %d resources", b.GetHeader().GetVersion(), bundle.Count(b))
	}
	// Applying the same resources again changes nothing and writes no audit entry.
	again := ts.apply(t, resources(t, "../examples/shop"))
	if len(again.GetChanges()) != 0 || again.GetAuditSeq() != 0 {
		t.Fatalf("re-apply changed %v", again.GetChanges())
	}
}

func TestValidationErrorsStoreNothing(t *testing.T) {
	ts := open(t, "")
	bad := resources(t, `apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: api, namespace: shop}
spec: {match: {hosts: [api.example.com], pathPrefix: /}, cluster: missing}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: api2, namespace: shop}
spec: {match: {hosts: [api.example.com], pathPrefix: /}, cluster: missing, retryPolicy: nope}
`)
	_, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: bad})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
	for _, want := range []string{
		`Route shop/api: spec.cluster: Cluster "missing" does not exist in namespace "shop"`,
		`Route shop/api2: spec.retryPolicy: RetryPolicy "nope" does not exist`,
		`Route shop/api2: spec.match.hosts[0]: conflicts with Route shop/api`,
	} {
		if !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("error lacks %q:\n%s", want, status.Convert(err).Message())
		}
	}
	list, _ := ts.api.List(adminCtx(), &adminv1.ListRequest{})
	audit, _ := ts.api.Audit(adminCtx(), &adminv1.AuditRequest{})
	if len(list.GetResources()) != 0 || len(audit.GetEntries()) != 0 {
		t.Fatalf("refused apply stored %d resources, %d audit entries", len(list.GetResources()), len(audit.GetEntries()))
	}
}

func TestDryRunShowsTheBundleDiffAndStoresNothing(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	changed := resources(t, `apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: inventory, namespace: shop, tenant: acme, region: eu-west-1}
spec: {match: {hosts: [shop.example.com], pathPrefix: /api/inventory, method: GET}, cluster: frontend, timeout: 2s}
`)
	resp, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: changed, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetChanges()) != 1 || resp.GetChanges()[0].GetOp() != "~" || !strings.Contains(resp.GetChanges()[0].GetDiff(), "frontend") || resp.GetAuditSeq() != 0 {
		t.Fatalf("dry run = %v", resp)
	}
	got, _ := ts.api.Get(adminCtx(), &adminv1.GetRequest{Kind: "Route", Namespace: "shop", Name: "inventory"})
	if got.GetResource().GetRoute().GetCluster() != "inventory" {
		t.Fatal("dry run changed the stored route")
	}
}

func TestDeleteRefusesWhatIsStillReferenced(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	_, err := ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: "Cluster", Namespace: "shop", Name: "inventory"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "Route/shop/inventory") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: "Route", Namespace: "shop", Name: "inventory"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: "Cluster", Namespace: "shop", Name: "inventory"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.api.Get(adminCtx(), &adminv1.GetRequest{Kind: "Cluster", Namespace: "shop", Name: "inventory"}); status.Code(err) != codes.NotFound {
		t.Fatalf("deleted cluster: err = %v", err)
	}
	if _, err := ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: "Cluster", Namespace: "shop", Name: "inventory"}); status.Code(err) != codes.NotFound {
		t.Fatalf("second delete: err = %v", err)
	}
}

// TestDeltasReproduceSnapshots applies a chain of changes; for every variant each delta
// applied to the previous snapshot reproduces the new snapshot's hash, and an agent-style
// verifier accepts the chain snapshot → delta → delta.
func TestDeltasReproduceSnapshots(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, resources(t, "../examples/shop"))
	prev := ts.waitPublished(t, 1)
	v := verifierFor(t, "prod")
	vb, err := v.Verify(prev.Variants[0].Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(vb); err != nil {
		t.Fatal(err)
	}
	held := vb.Payload
	for i, change := range []string{
		"kind: Route\nmetadata: {name: inventory, namespace: shop, tenant: acme}\nspec: {match: {hosts: [shop.example.com], pathPrefix: /api/inventory, method: GET}, cluster: frontend}\n",
		"kind: Cluster\nmetadata: {name: search, namespace: shop, tenant: acme}\nspec: {endpoints: [{address: 10.0.9.1, port: 80}]}\n",
	} {
		ts.apply(t, resources(t, "apiVersion: meshkit.dev/v1alpha1\n"+change))
		pub := ts.waitPublished(t, uint64(i+2))
		snapEnv, _ := trust.DecodeEnvelope(pub.Variants[0].Snapshot, 0)
		dv, err := v.Verify(pub.Variants[0].Delta)
		if err != nil {
			t.Fatalf("delta v%d: %v", i+2, err)
		}
		got, err := bundle.ApplyDeltaView(held, bundle.Hash(held), dv.Delta)
		if err != nil {
			t.Fatalf("apply delta v%d: %v", i+2, err)
		}
		if bundle.Hash(got) != bundle.Hash(snapEnv.GetPayload()) {
			t.Fatalf("delta v%d gives %s, snapshot is %s", i+2, bundle.Hash(got), bundle.Hash(snapEnv.GetPayload()))
		}
		if err := v.Commit(dv); err != nil {
			t.Fatal(err)
		}
		held = got
	}
}
