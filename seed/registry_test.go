package seed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/seed/registry"
)

// push uploads blob and a manifest referencing it under tag, as an OCI client does.
func push(t *testing.T, base, repo, tag, token string, blob []byte) (int, string) {
	t.Helper()
	do := func(method, url, ctype string, body []byte) *http.Response {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	upload := func(blob []byte) (int, string) {
		resp := do(http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/", base, repo), "", nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return resp.StatusCode, string(b)
		}
		loc, err := resp.Location()
		if err != nil {
			t.Fatal(err)
		}
		q := loc.Query()
		q.Set("digest", digest.FromBytes(blob).String())
		loc.RawQuery = q.Encode()
		resp = do(http.MethodPut, loc.String(), "application/octet-stream", blob)
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	d := digest.FromBytes(blob)
	if code, body := upload(blob); code != http.StatusCreated {
		return code, body
	}
	cfg := []byte("{}")
	if code, body := upload(cfg); code != http.StatusCreated {
		return code, body
	}
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.meshkit.extension.v1",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},`+
		`"layers":[{"mediaType":"application/vnd.module.wasm.content.layer.v1+wasm","digest":"%s","size":%d}]}`, digest.FromBytes(cfg), d, len(blob))
	resp := do(http.MethodPut, fmt.Sprintf("%s/v2/%s/manifests/%s", base, repo, tag), "application/vnd.oci.image.manifest.v1+json", []byte(manifest))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// authRegistry serves a registry over a fresh content store behind registryAuth with the
// given principals.
func authRegistry(t *testing.T, principals ...PolicyEntry) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	store, _ := content.Open(dir+"/content", content.Options{})
	reg, err := registry.New(registry.Config{Dir: dir + "/registry", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	pol := &Policy{Principals: principals}
	if err := pol.validate(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registryAuth(pol, reg))
	t.Cleanup(srv.Close)
	return srv
}

// TestRegistryNeedsTheAdminCredentials: pulls need mesh.read, pushes mesh.operate.
func TestRegistryNeedsTheAdminCredentials(t *testing.T) {
	srv := authRegistry(t,
		PolicyEntry{Name: "reader", TokenSHA256: HashToken("r"), Scopes: []string{"mesh.read"}, Tenants: []string{"*"}},
		PolicyEntry{Name: "ci", TokenSHA256: HashToken("w"), Scopes: []string{"mesh.operate"}, Tenants: []string{"*"}},
	)
	module := []byte("module")
	if code, body := push(t, srv.URL, "shop/x", "v1", "", module); code != http.StatusUnauthorized || !strings.Contains(body, "UNAUTHORIZED") {
		t.Fatalf("anonymous push: %d %s", code, body)
	}
	if code, body := push(t, srv.URL, "shop/x", "v1", "r", module); code != http.StatusForbidden || !strings.Contains(body, "needs mesh.operate") {
		t.Fatalf("reader push: %d %s", code, body)
	}
	if code, body := push(t, srv.URL, "shop/x", "v1", "w", module); code != http.StatusCreated {
		t.Fatalf("operator push: %d %s", code, body)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/v2/shop/x/manifests/v1", nil)
	req.Header.Set("Authorization", "Bearer r")
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reader pull: %d", resp.StatusCode)
	}
}

// TestRegistryRepositoriesBelongToTenants: a repository's first path component is its
// tenant. An operator of acme pushes to acme's repositories only, a reader of globex pulls
// globex's only, the catalog (every tenant's names) needs all tenants, and a blob mount
// from another tenant's repository is refused.
func TestRegistryRepositoriesBelongToTenants(t *testing.T) {
	srv := authRegistry(t,
		PolicyEntry{Name: "acme-ci", TokenSHA256: HashToken("acme"), Scopes: []string{"mesh.operate"}, Tenants: []string{"acme"}},
		PolicyEntry{Name: "globex-reader", TokenSHA256: HashToken("globex"), Scopes: []string{"mesh.read"}, Tenants: []string{"globex"}},
		PolicyEntry{Name: "platform", TokenSHA256: HashToken("all"), Scopes: []string{"mesh.operate"}, Tenants: []string{"*"}},
	)
	module := []byte("module")
	if code, body := push(t, srv.URL, "acme/shop/auth", "v1", "acme", module); code != http.StatusCreated {
		t.Fatalf("acme pushes to acme/shop/auth: %d %s", code, body)
	}
	if code, body := push(t, srv.URL, "globex/shop/auth", "v1", "acme", module); code != http.StatusForbidden || !strings.Contains(body, `belongs to tenant \"globex\"`) {
		t.Fatalf("acme pushes to globex's repository: %d %s", code, body)
	}
	if code, body := push(t, srv.URL, "no_tenant/shop/auth", "v1", "acme", module); code != http.StatusForbidden {
		t.Fatalf("acme pushes to an untenanted repository: %d %s", code, body)
	}
	if code, body := push(t, srv.URL, "no_tenant/shop/auth", "v1", "all", module); code != http.StatusCreated {
		t.Fatalf("a principal of every tenant pushes to an untenanted repository: %d %s", code, body)
	}
	get := func(token, path string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("globex", "/v2/acme/shop/auth/manifests/v1"); code != http.StatusForbidden {
		t.Fatalf("globex pulls acme's manifest: %d", code)
	}
	if code := get("globex", "/v2/_catalog"); code != http.StatusForbidden {
		t.Fatalf("globex lists the catalog: %d", code)
	}
	d := digest.FromBytes(module)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/acme/shop/copy/blobs/uploads/?mount="+d.String()+"&from=globex/shop/secret", nil)
	req.Header.Set("Authorization", "Bearer acme")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("acme mounts a blob from globex's repository: %d", resp.StatusCode)
	}
}
