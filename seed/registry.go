package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/atomicfile"
)

// Registry is the seed's OCI distribution endpoint (/v2/): push and pull of blobs,
// manifests and tags, chunked uploads included, so that `oras push` publishes an
// extension. It is go-containerregistry's registry with its blobs in the seed's content
// store (OCI digests and CIDs map one to one: a pushed layer is fetchable by agents under
// its CID at once) and its manifests persisted, so tags survive a restart.
type Registry struct {
	store   *content.Store
	handler http.Handler
	log     *slog.Logger
	maxBody int64

	mu        sync.Mutex
	path      string // the manifests pushed, replayed at start
	manifests []pushedManifest
}

type pushedManifest struct {
	Path        string `json:"path"` // /v2/<repo>/manifests/<reference>
	ContentType string `json:"content_type"`
	Body        []byte `json:"body"`
}

// NewRegistry serves blobs from store and keeps manifests in dir.
func NewRegistry(dir string, store *content.Store, logger *slog.Logger) (*Registry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("seed: registry: %w", err)
	}
	r := &Registry{store: store, log: logger, path: filepath.Join(dir, "manifests.json"), maxBody: store.MaxBlobBytes() + 1<<20}
	r.handler = registry.New(
		registry.WithBlobHandler(blobStore{store}),
		registry.Logger(log.New(io.Discard, "", 0)),
	)
	b, err := os.ReadFile(r.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("seed: registry: %w", err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.manifests); err != nil {
			return nil, fmt.Errorf("seed: registry: %s is corrupt: %w", r.path, err)
		}
	}
	for _, m := range r.manifests {
		req, _ := http.NewRequest(http.MethodPut, m.Path, bytes.NewReader(m.Body))
		req.Header.Set("Content-Type", m.ContentType)
		w := &statusWriter{header: http.Header{}}
		r.handler.ServeHTTP(w, req)
		if w.status != http.StatusCreated {
			logger.Warn("registry: manifest not restored (a blob it references is gone?)", "path", m.Path, "status", w.status)
		}
	}
	return r, nil
}

// ServeHTTP serves the OCI distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Body != nil {
		req.Body = http.MaxBytesReader(w, req.Body, r.maxBody)
	}
	isManifestPut := req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/")
	if !isManifestPut {
		r.handler.ServeHTTP(w, req)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, fmt.Sprintf("manifest: %v", err), http.StatusRequestEntityTooLarge)
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	sw := &statusWriter{ResponseWriter: w, header: w.Header()}
	r.handler.ServeHTTP(sw, req)
	if sw.status == http.StatusCreated {
		if err := r.remember(pushedManifest{Path: req.URL.Path, ContentType: req.Header.Get("Content-Type"), Body: body}); err != nil {
			r.log.Error("registry: manifest not persisted", "path", req.URL.Path, "err", err)
		}
	}
}

func (r *Registry) remember(m pushedManifest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.manifests[:0]
	for _, o := range r.manifests {
		if o.Path != m.Path {
			kept = append(kept, o)
		}
	}
	r.manifests = append(kept, m)
	b, err := json.Marshal(r.manifests)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(r.path, b, 0o600)
}

// statusWriter records the status of a response (and discards it when it wraps nothing).
type statusWriter struct {
	http.ResponseWriter
	header http.Header
	status int
}

func (s *statusWriter) Header() http.Header { return s.header }

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	if s.ResponseWriter != nil {
		s.ResponseWriter.WriteHeader(code)
	}
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.ResponseWriter == nil {
		return len(b), nil
	}
	return s.ResponseWriter.Write(b)
}

// blobStore adapts the content store to the registry: digests are CIDs.
type blobStore struct{ s *content.Store }

func (b blobStore) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	c, err := content.FromDigest(digest.Digest(h.String()))
	if err != nil {
		return nil, err
	}
	data, err := b.s.Get(c)
	if errors.Is(err, content.ErrNotFound) {
		return nil, registry.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (b blobStore) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	c, err := content.FromDigest(digest.Digest(h.String()))
	if err != nil {
		return 0, err
	}
	size, ok := b.s.Has(c)
	if !ok {
		return 0, registry.ErrNotFound
	}
	return size, nil
}

func (b blobStore) Put(ctx context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	c, err := content.FromDigest(digest.Digest(h.String()))
	if err != nil {
		return err
	}
	_, err = b.s.PutExpect(ctx, c, rc, 0)
	return err
}
