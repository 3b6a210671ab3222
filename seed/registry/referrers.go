package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxReferrers bounds one referrers answer; maxCached bounds the parsed-manifest cache.
const (
	maxReferrers = 10_000
	maxCached    = 100_000
)

// referrers serves GET /v2/<name>/referrers/<digest> (distribution-spec "Listing
// Referrers"), which distribution does not implement. It is computed from the
// repository's manifests on each request, so it can never disagree with them: a deleted
// manifest stops being a referrer at once. Manifests are immutable by digest, so what
// each one says about its subject is parsed once and cached.
type referrers struct {
	ns     distribution.Namespace
	driver storagedriver.StorageDriver

	mu    sync.Mutex
	cache map[digest.Digest]refEntry
}

type refEntry struct {
	subject digest.Digest // "" when the manifest has none
	desc    ocispec.Descriptor
}

func newReferrers(ns distribution.Namespace, d storagedriver.StorageDriver) *referrers {
	return &referrers{ns: ns, driver: d, cache: map[digest.Digest]refEntry{}}
}

func (rf *referrers) serve(w http.ResponseWriter, req *http.Request, rt route) {
	subject, err := digest.Parse(rt.rest)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("%q is not a digest: %v", rt.rest, err))
		return
	}
	named, err := reference.WithName(rt.name)
	if err != nil {
		ociError(w, http.StatusBadRequest, "NAME_INVALID", err.Error())
		return
	}
	ctx := req.Context()
	repo, err := rf.ns.Repository(ctx, named)
	if err != nil {
		ociError(w, http.StatusBadRequest, "NAME_INVALID", err.Error())
		return
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	enum, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "the manifest store cannot list manifests")
		return
	}
	artifactType := req.URL.Query().Get("artifactType")
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{},
	}
	err = enum.Enumerate(ctx, func(d digest.Digest) error {
		e, err := rf.entry(ctx, d)
		if err != nil || e.subject != subject {
			return nil // a manifest that cannot be read is nobody's referrer
		}
		if artifactType != "" && e.desc.ArtifactType != artifactType {
			return nil
		}
		if len(index.Manifests) >= maxReferrers {
			return errTooMany
		}
		index.Manifests = append(index.Manifests, e.desc)
		return nil
	})
	var nf storagedriver.PathNotFoundError
	switch {
	case errors.Is(err, errTooMany):
		ociError(w, http.StatusInternalServerError, "UNSUPPORTED", fmt.Sprintf("%s has over %d referrers; filter by artifactType", subject, maxReferrers))
		return
	case errors.As(err, &nf), errors.As(err, new(distribution.ErrRepositoryUnknown)):
		// No manifests in this repository: nothing refers to anything.
	case err != nil:
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	body, err := json.Marshal(index)
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

var errTooMany = errors.New("registry: too many referrers")

// entry reads (once) what manifest d says about its subject, and its descriptor.
func (rf *referrers) entry(ctx context.Context, d digest.Digest) (refEntry, error) {
	rf.mu.Lock()
	e, ok := rf.cache[d]
	rf.mu.Unlock()
	if ok {
		return e, nil
	}
	p := fmt.Sprintf("%s/blobs/%s/%s/%s/data", v2Root, d.Algorithm(), d.Encoded()[:2], d.Encoded())
	body, err := rf.driver.GetContent(ctx, p)
	if err != nil {
		return refEntry{}, err
	}
	if len(body) > maxManifestBytes || !d.Algorithm().Available() || d.Algorithm().FromBytes(body) != d {
		return refEntry{}, fmt.Errorf("registry: manifest %s is not what its digest names", d)
	}
	var m struct {
		MediaType    string              `json:"mediaType"`
		ArtifactType string              `json:"artifactType"`
		Config       *ocispec.Descriptor `json:"config"`
		Subject      *ocispec.Descriptor `json:"subject"`
		Annotations  map[string]string   `json:"annotations"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return refEntry{}, err
	}
	e = refEntry{desc: ocispec.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(body)), ArtifactType: m.ArtifactType, Annotations: m.Annotations}}
	if e.desc.ArtifactType == "" && m.Config != nil {
		// An image manifest without artifactType is described by its config's media type
		// (image-spec, "Guidelines for Artifact Usage").
		e.desc.ArtifactType = m.Config.MediaType
	}
	if m.Subject != nil {
		e.subject = m.Subject.Digest
	}
	rf.mu.Lock()
	if len(rf.cache) >= maxCached {
		clear(rf.cache)
	}
	rf.cache[d] = e
	rf.mu.Unlock()
	return e, nil
}
