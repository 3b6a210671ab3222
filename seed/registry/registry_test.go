package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/goleak"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"

	mkcontent "meshkit.dev/meshkit/content"
)

func TestMain(m *testing.M) {
	RouteLogs(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	// Distribution's App starts an idle notification broadcaster that Shutdown leaves
	// running and nothing else can reach (see docs/RATIONALE.md).
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
}

// fixture is a registry over a content store in a directory that outlives restarts.
type fixture struct {
	t     *testing.T
	dir   string
	store *mkcontent.Store
	cfg   Config
	reg   *Registry
	srv   *httptest.Server
	now   time.Time
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), cfg: cfg, now: time.Now()}
	var err error
	if f.store, err = mkcontent.Open(f.dir+"/content", mkcontent.Options{}); err != nil {
		t.Fatal(err)
	}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	cfg := f.cfg
	cfg.Dir, cfg.Store, cfg.Now = f.dir+"/registry", f.store, func() time.Time { return f.now }
	reg, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.reg, f.srv = reg, httptest.NewServer(reg)
}

func (f *fixture) stop() {
	if f.srv != nil {
		f.srv.Close()
		_ = f.reg.Close()
		f.srv, f.reg = nil, nil
	}
}

// restart stops the registry and opens a new one on the same directories.
func (f *fixture) restart() { f.stop(); f.start() }

// repo is an OCI client (oras-go) for a repository of the running registry.
func (f *fixture) repo(name string) *remote.Repository {
	f.t.Helper()
	r, err := remote.NewRepository(strings.TrimPrefix(f.srv.URL, "http://") + "/" + name)
	if err != nil {
		f.t.Fatal(err)
	}
	r.PlainHTTP = true
	return r
}

func (f *fixture) do(method, path string, body io.Reader, header ...string) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// pushArtifact pushes a one-layer artifact (with subject, if given) and tags it.
func pushArtifact(t *testing.T, repo *remote.Repository, tag, artifactType string, layer []byte, subject *ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	ctx := context.Background()
	ld := content.NewDescriptorFromBytes("application/vnd.module.wasm.content.layer.v1+wasm", layer)
	if err := repo.Push(ctx, ld, bytes.NewReader(layer)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		t.Fatalf("push layer: %v", err)
	}
	md, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, artifactType, oras.PackManifestOptions{Layers: []ocispec.Descriptor{ld}, Subject: subject})
	if err != nil {
		t.Fatalf("push manifest: %v", err)
	}
	if tag != "" {
		if err := repo.Tag(ctx, md, tag); err != nil {
			t.Fatalf("tag: %v", err)
		}
	}
	return md
}

// TestPushesAndDeletesSurviveRestarts: a pushed layer is in the content store under its
// CID at once; a tag resolves after a restart; a deleted manifest (and its tag) stays
// deleted after the next one.
func TestPushesAndDeletesSurviveRestarts(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	layer := []byte("\x00asm\x01\x00\x00\x00 a module")
	md := pushArtifact(t, f.repo("acme/shop/auth"), "v1", "application/vnd.meshkit.extension.v1", layer, nil)
	if got, err := f.store.Get(mkcontent.Sum(layer)); err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("layer not in the content store under its CID: %v", err)
	}
	if _, err := f.store.Get(mustCID(t, md.Digest)); err != nil {
		t.Fatalf("manifest not in the content store: %v", err)
	}

	f.restart()
	got, err := f.repo("acme/shop/auth").Resolve(ctx, "v1")
	if err != nil || got.Digest != md.Digest {
		t.Fatalf("tag after restart: %v %v", got.Digest, err)
	}
	// A client that names no media type (curl) gets the manifest as stored.
	if resp, body := f.do(http.MethodGet, "/v2/acme/shop/auth/manifests/v1", nil); resp.StatusCode != http.StatusOK || digest.FromString(body) != md.Digest {
		t.Fatalf("GET without Accept: %d %s", resp.StatusCode, body)
	}
	if err := f.repo("acme/shop/auth").Delete(ctx, md); err != nil {
		t.Fatalf("delete: %v", err)
	}

	f.restart()
	if _, err := f.repo("acme/shop/auth").Resolve(ctx, "v1"); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("tag of a deleted manifest after restart: %v", err)
	}
	if _, err := f.repo("acme/shop/auth").Resolve(ctx, md.Digest.String()); !errors.Is(err, errdef.ErrNotFound) {
		t.Fatalf("deleted manifest after restart: %v", err)
	}
	// The layer stays in the content store: signed bundles may still name it.
	if _, err := f.store.Get(mkcontent.Sum(layer)); err != nil {
		t.Fatalf("layer dropped from the content store by a registry delete: %v", err)
	}
}

func mustCID(t *testing.T, d digest.Digest) cid.Cid {
	t.Helper()
	c, err := mkcontent.FromDigest(d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startUpload opens an upload and returns its location (path and query).
func (f *fixture) startUpload(repo string) string {
	f.t.Helper()
	resp, body := f.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		f.t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

func withDigest(loc string, d digest.Digest) string {
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	return loc + sep + "digest=" + d.String()
}

// TestUploadsSurviveRestartsAndExpire: an upload in progress is on disk, counted after a
// restart and finished across it; one left unfinished past UploadExpiry is purged, its
// bytes uncounted, and its location answers BLOB_UPLOAD_UNKNOWN.
func TestUploadsSurviveRestartsAndExpire(t *testing.T) {
	f := newFixture(t, Config{UploadExpiry: time.Hour, PurgeInterval: time.Hour})
	if n, err := f.reg.Purge(context.Background()); n != 0 || err != nil {
		t.Fatalf("purge of a registry nothing was pushed to: %d %v", n, err)
	}
	blob := bytes.Repeat([]byte("m"), 3000)
	loc := f.startUpload("acme/shop/auth")
	resp, body := f.do(http.MethodPatch, loc, bytes.NewReader(blob[:1000]), "Content-Type", "application/octet-stream", "Content-Range", "0-999")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("patch: %d %s", resp.StatusCode, body)
	}
	loc = resp.Header.Get("Location")

	f.restart()
	if got := f.reg.PendingUploadBytes(); got != 1000 {
		t.Fatalf("after a restart the upload in progress counts %d bytes, want 1000", got)
	}
	resp, body = f.do(http.MethodPut, withDigest(loc, digest.FromBytes(blob)), bytes.NewReader(blob[1000:]), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish the upload after a restart: %d %s", resp.StatusCode, body)
	}
	if got := f.reg.PendingUploadBytes(); got != 0 {
		t.Fatalf("a finished upload still counts %d bytes", got)
	}
	if _, err := f.store.Get(mkcontent.Sum(blob)); err != nil {
		t.Fatalf("finished upload not in the content store: %v", err)
	}

	stale := f.startUpload("acme/shop/auth")
	resp, _ = f.do(http.MethodPatch, stale, bytes.NewReader(blob[:500]), "Content-Type", "application/octet-stream")
	stale = resp.Header.Get("Location")
	if n, err := f.reg.Purge(context.Background()); err != nil || n != 0 {
		t.Fatalf("purge of a fresh upload: %d %v", n, err)
	}
	f.now = f.now.Add(2 * time.Hour)
	if n, err := f.reg.Purge(context.Background()); err != nil || n != 1 {
		t.Fatalf("purge of an upload two hours old: %d %v", n, err)
	}
	if got := f.reg.PendingUploadBytes(); got != 0 {
		t.Fatalf("a purged upload still counts %d bytes", got)
	}
	resp, body = f.do(http.MethodPatch, stale, bytes.NewReader(blob[500:]), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "BLOB_UPLOAD_UNKNOWN") {
		t.Fatalf("patch of a purged upload: %d %s", resp.StatusCode, body)
	}
}

// TestUploadLimits: one upload may not exceed MaxUploadBytes, declared or streamed, and
// uploads in progress together may not exceed MaxPendingBytes; each refusal is 413
// SIZE_INVALID saying which limit, and leaves the registry serving.
func TestUploadLimits(t *testing.T) {
	f := newFixture(t, Config{MaxUploadBytes: 1000, MaxPendingBytes: 1500})
	big := bytes.Repeat([]byte("x"), 1200)

	loc := f.startUpload("acme/a")
	resp, body := f.do(http.MethodPatch, loc, bytes.NewReader(big), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "SIZE_INVALID") || !strings.Contains(body, "at most 1000 bytes") {
		t.Fatalf("declared 1200 bytes: %d %s", resp.StatusCode, body)
	}
	// Streamed: no length declared, cut at the allowance.
	req, _ := http.NewRequest(http.MethodPatch, f.srv.URL+loc, io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b2), "SIZE_INVALID") {
		t.Fatalf("streamed 1200 bytes: %d %s", r2.StatusCode, b2)
	}
	if got := f.reg.PendingUploadBytes(); got > 1000 {
		t.Fatalf("an upload holds %d bytes past its 1000-byte limit", got)
	}

	// Together: a second upload may add only what the first leaves of 1500.
	loc2 := f.startUpload("acme/b")
	resp, body = f.do(http.MethodPatch, loc2, bytes.NewReader(big[:800]), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "uploads in progress hold") {
		t.Fatalf("second upload over the total: %d %s (pending %d)", resp.StatusCode, body, f.reg.PendingUploadBytes())
	}

	// A blob within the limits still goes through, in one POST.
	small := []byte("small blob")
	resp, body = f.do(http.MethodPost, "/v2/acme/c/blobs/uploads/?digest="+digest.FromBytes(small).String(), bytes.NewReader(small), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") == "" {
		t.Fatalf("single-POST upload: %d %s", resp.StatusCode, body)
	}
}

// TestOtherDigestAlgorithmsAreRefused: a digest of an algorithm other than sha256, in a
// path or a parameter, is refused with DIGEST_INVALID (400), never a 500 or a 404.
func TestOtherDigestAlgorithmsAreRefused(t *testing.T) {
	f := newFixture(t, Config{})
	d512 := digest.SHA512.FromString("x")
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v2/acme/a/blobs/" + d512.String()},
		{http.MethodHead, "/v2/acme/a/blobs/" + d512.String()},
		{http.MethodDelete, "/v2/acme/a/blobs/" + d512.String()},
		{http.MethodGet, "/v2/acme/a/manifests/" + d512.String()},
		{http.MethodPut, "/v2/acme/a/manifests/" + d512.String()},
		{http.MethodGet, "/v2/acme/a/referrers/" + d512.String()},
		{http.MethodPost, "/v2/acme/a/blobs/uploads/?digest=" + d512.String()},
		{http.MethodPost, "/v2/acme/a/blobs/uploads/?mount=" + d512.String() + "&from=acme/b"},
	} {
		resp, body := f.do(c.method, c.path, strings.NewReader("x"))
		if resp.StatusCode != http.StatusBadRequest || (c.method != http.MethodHead && !strings.Contains(body, "DIGEST_INVALID")) {
			t.Errorf("%s %s: %d %s", c.method, c.path, resp.StatusCode, body)
		}
	}
	// sha256 still works.
	resp, body := f.do(http.MethodGet, "/v2/acme/a/blobs/"+digest.FromString("x").String(), nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET of a missing sha256 blob: %d %s", resp.StatusCode, body)
	}
}

// TestReferrersFollowTheManifests: the referrers API lists what names a subject, filters
// by artifactType (and says so), and stops listing a referrer once it is deleted; a push
// with a subject is answered with OCI-Subject.
func TestReferrersFollowTheManifests(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	repo := f.repo("acme/shop/auth")
	subject := pushArtifact(t, repo, "v1", "application/vnd.meshkit.extension.v1", []byte("module"), nil)
	sig := pushArtifact(t, repo, "", "application/vnd.example.signature", []byte("signature"), &subject)
	sbom := pushArtifact(t, repo, "", "application/vnd.example.sbom", []byte("sbom"), &subject)

	list := func(query string) ([]ocispec.Descriptor, http.Header) {
		resp, body := f.do(http.MethodGet, "/v2/acme/shop/auth/referrers/"+subject.Digest.String()+query, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
			t.Fatalf("referrers: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		var idx ocispec.Index
		if err := json.Unmarshal([]byte(body), &idx); err != nil {
			t.Fatal(err)
		}
		return idx.Manifests, resp.Header
	}
	got, _ := list("")
	if len(got) != 2 || !hasDigest(got, sig.Digest) || !hasDigest(got, sbom.Digest) {
		t.Fatalf("referrers of the subject: %+v", got)
	}
	got, h := list("?artifactType=application/vnd.example.sbom")
	if len(got) != 1 || got[0].Digest != sbom.Digest || got[0].ArtifactType != "application/vnd.example.sbom" || h.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers: %+v %v", got, h)
	}
	if err := repo.Delete(ctx, sig); err != nil {
		t.Fatal(err)
	}
	got, _ = list("")
	if len(got) != 1 || got[0].Digest != sbom.Digest {
		t.Fatalf("referrers after deleting one: %+v", got)
	}

	// The header that tells clients the registry indexes referrers.
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"a/b","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d}}`,
		ocispec.MediaTypeImageManifest, digest.FromString("{}"), subject.MediaType, subject.Digest, subject.Size)
	if err := repo.Push(ctx, content.NewDescriptorFromBytes("application/vnd.oci.empty.v1+json", []byte("{}")), strings.NewReader("{}")); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		t.Fatal(err)
	}
	resp, rb := f.do(http.MethodPut, "/v2/acme/shop/auth/manifests/with-subject", strings.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != subject.Digest.String() {
		t.Fatalf("manifest PUT with a subject: %d OCI-Subject=%q %s", resp.StatusCode, resp.Header.Get("OCI-Subject"), rb)
	}
}

func hasDigest(ds []ocispec.Descriptor, d digest.Digest) bool {
	for _, x := range ds {
		if x.Digest == d {
			return true
		}
	}
	return false
}

// TestConcurrentUploadsShareTheTotal: an upload request in flight holds its allowance, so
// a second one cannot take the same room: with 1500 bytes in all and a streamed upload
// allowed 1000 under way, a 1000-byte upload is refused and the first one completes.
func TestConcurrentUploadsShareTheTotal(t *testing.T) {
	f := newFixture(t, Config{MaxUploadBytes: 1000, MaxPendingBytes: 1500})
	locA, locB := f.startUpload("acme/a"), f.startUpload("acme/b")
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() }) // before the server's Close, which waits for this request
	req, _ := http.NewRequest(http.MethodPatch, f.srv.URL+locA, pr)
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("a"), 10)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); f.reg.PendingUploadBytes() < 10; {
		if time.Now().After(deadline) {
			t.Fatal("the streamed upload's first bytes never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, body := f.do(http.MethodPatch, locB, bytes.NewReader(bytes.Repeat([]byte("b"), 1000)), "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "uploads in progress hold") {
		t.Fatalf("a second upload into room the first holds: %d %s", resp.StatusCode, body)
	}
	if _, err := pw.Write(bytes.Repeat([]byte("a"), 990)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-done; code != http.StatusAccepted {
		t.Fatalf("the streamed upload: %d", code)
	}
	if got := f.reg.PendingUploadBytes(); got != 1000 {
		t.Fatalf("uploads in progress hold %d bytes, want 1000", got)
	}
}
