package seed_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/wasmfixture"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/wasm"
)

// countingAdmission is the real StoreAdmission, counting what the seed asks it.
type countingAdmission struct {
	*seed.StoreAdmission
	calls atomic.Int32
}

func (c *countingAdmission) CheckArtifact(ctx context.Context, ext *bundlev1.ExtensionSpec) error {
	c.calls.Add(1)
	return c.StoreAdmission.CheckArtifact(ctx, ext)
}

// TestSeedAdmitsExtensionsItIsGiven: an Extension is accepted only when the seed's
// registry holds its artifact, of the declared size, and (for Wasm) the artifact passes
// the admission agents run; each refusal says why. Re-applying an unchanged Extension does
// not admit it again.
func TestSeedAdmitsExtensionsItIsGiven(t *testing.T) {
	store, err := content.Open(t.TempDir(), content.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check := &countingAdmission{StoreAdmission: seed.NewStoreAdmission(store, wasm.NewAdmitter(wasm.Config{}))}
	ts := open(t, "", func(c *seed.Config) { c.Artifacts = check })
	ctx := context.Background()
	put := func(name string) string {
		c, err := store.PutBytes(ctx, wasmfixture.Module(t, name))
		if err != nil {
			t.Fatal(err)
		}
		return c.String()
	}
	valid, forbidden := put("valid"), put("forbidden")
	ext := func(name, artifact string, size int) []*adminv1.Resource {
		return []*adminv1.Resource{{Metadata: &bundlev1.Metadata{Name: name, Namespace: "shop"}, Spec: &adminv1.Resource_Extension{Extension: &bundlev1.ExtensionSpec{
			Kind: bundlev1.ExtensionKind_EXTENSION_KIND_WASM, Artifact: artifact, Abi: "proxy-wasm/0.2.1", Size: uint64(size)}}}}
	}
	for _, tc := range []struct {
		name, want string
		rs         []*adminv1.Resource
	}{
		{"not pushed", "is not in the seed's registry", ext("ghost", content.Sum([]byte("never pushed")).String(), 0)},
		{"size understated", "spec.size: 10", ext("liar", valid, 10)},
		{"fails admission", "forbidden_import", ext("shell", forbidden, 0)},
	} {
		_, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: tc.rs})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want InvalidArgument naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: ext("auth", valid, len(wasmfixture.Module(t, "valid")))}); err != nil {
		t.Fatalf("an admissible extension: %v", err)
	}
	before := check.calls.Load()
	if _, err := ts.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: ext("auth", valid, len(wasmfixture.Module(t, "valid")))}); err != nil {
		t.Fatal(err)
	}
	if check.calls.Load() != before {
		t.Fatal("an unchanged Extension was admitted again")
	}
}
