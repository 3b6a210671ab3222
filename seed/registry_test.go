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
	d := digest.FromBytes(blob)
	resp := do(http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/?digest=%s", base, repo, d), "application/octet-stream", blob)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return resp.StatusCode, string(b)
	}
	cfg := []byte("{}")
	resp = do(http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/?digest=%s", base, repo, digest.FromBytes(cfg)), "application/octet-stream", cfg)
	resp.Body.Close()
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.meshkit.extension.v1",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},`+
		`"layers":[{"mediaType":"application/vnd.module.wasm.content.layer.v1+wasm","digest":"%s","size":%d}]}`, digest.FromBytes(cfg), d, len(blob))
	resp = do(http.MethodPut, fmt.Sprintf("%s/v2/%s/manifests/%s", base, repo, tag), "application/vnd.oci.image.manifest.v1+json", []byte(manifest))
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestRegistryBlobsAreCIDsAndTagsSurviveRestart: a pushed layer is in the content store
// under its CID at once, and a tag pushed before a restart resolves after it.
func TestRegistryBlobsAreCIDsAndTagsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	store, err := content.Open(dir+"/content", content.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(dir+"/registry", store, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	module := []byte("\x00asm\x01\x00\x00\x00 a module")
	if code, body := push(t, srv.URL, "shop/auth", "v1", "", module); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	srv.Close()
	if got, err := store.Get(content.Sum(module)); err != nil || !bytes.Equal(got, module) {
		t.Fatalf("layer not in the content store under its CID: %v", err)
	}
	reg2, err := NewRegistry(dir+"/registry", store, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(reg2)
	defer srv2.Close()
	resp, err := http.Get(srv2.URL + "/v2/shop/auth/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), digest.FromBytes(module).String()) {
		t.Fatalf("tag after restart: %d %s", resp.StatusCode, body)
	}
	// A blob whose bytes do not match the digest it is pushed under is refused.
	resp, err = http.Post(srv2.URL+"/v2/shop/auth/blobs/uploads/?digest="+digest.FromBytes([]byte("other")).String(), "application/octet-stream", strings.NewReader("not other"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("mismatched blob accepted: %d", resp.StatusCode)
	}
}

// authRegistry serves a registry over a fresh content store behind registryAuth with the
// given principals.
func authRegistry(t *testing.T, principals ...PolicyEntry) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	store, _ := content.Open(dir+"/content", content.Options{})
	reg, err := NewRegistry(dir+"/registry", store, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	if code, body := push(t, srv.URL, "_/shop/auth", "v1", "acme", module); code != http.StatusForbidden {
		t.Fatalf("acme pushes to an untenanted repository: %d %s", code, body)
	}
	if code, body := push(t, srv.URL, "_/shop/auth", "v1", "all", module); code != http.StatusCreated {
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
