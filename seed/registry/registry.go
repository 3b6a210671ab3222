// Package registry is the seed's OCI registry (the distribution API on /v2/): push and
// pull of blobs, manifests and tags, chunked and resumable uploads, cross-repository
// mounts, deletes, the catalog and the referrers API, so that `oras push` (or any OCI
// client) publishes an extension.
//
// The engine is CNCF Distribution, the registry most registries are built on, embedded
// as a library with its own storage driver: sha256 blob bytes live in the seed's content
// store, where agents fetch them by CID, and the rest (links, tags, uploads in progress)
// in distribution's filesystem driver under the registry's directory. MeshKit adds what
// distribution does not have or what the seed must bound: the referrers API and the
// OCI-Subject header, per-upload and total limits on uploads in progress, upload expiry
// on an injected clock, and durable deletes. Authentication and tenant scopes are the
// seed's HTTP server's (seed.registryAuth), in front of this handler.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/atomicfile"
)

// Config configures a Registry.
type Config struct {
	// Dir holds the registry's own files (links, tags, uploads in progress, its upload
	// secret); blob bytes go to Store.
	Dir   string
	Store *content.Store
	// MaxUploadBytes bounds one blob upload; default the store's MaxBlobBytes.
	MaxUploadBytes int64
	// MaxPendingBytes bounds the bytes of every upload in progress together; default 2 GiB.
	MaxPendingBytes int64
	// UploadExpiry is how long an upload may stay unfinished before it is purged;
	// default 1 hour. PurgeInterval is how often that is checked; default 10 minutes.
	UploadExpiry  time.Duration
	PurgeInterval time.Duration
	// Now is the clock upload expiry is judged on; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.Dir == "" || c.Store == nil {
		return errors.New("registry: Config.Dir and Config.Store are required")
	}
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = c.Store.MaxBlobBytes()
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = 2 << 30
	}
	if c.UploadExpiry <= 0 {
		c.UploadExpiry = time.Hour
	}
	if c.PurgeInterval <= 0 {
		c.PurgeInterval = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Registry serves the OCI distribution API. Close stops its upload purger.
type Registry struct {
	cfg       Config
	driver    *storeDriver
	app       *handlers.App
	referrers *referrers

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// anyManifest is every manifest media type the engine stores.
const anyManifest = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// driverFactoryName is the name distribution's driver factory knows MeshKit's driver by.
const driverFactoryName = "meshkit-content"

// registerFactory registers, once per process, the factory handlers.NewApp creates its
// driver with. Distribution looks drivers up by name in a process-wide map and has no
// way to hand an App a driver value; the factory is stateless and returns the driver
// each App's configuration carries, so one registration serves every Registry.
var registerFactory sync.Once

type passDriver struct{}

func (passDriver) Create(_ context.Context, p map[string]any) (storagedriver.StorageDriver, error) {
	d, ok := p["driver"].(storagedriver.StorageDriver)
	if !ok {
		return nil, errors.New("registry: no driver in the storage parameters")
	}
	return d, nil
}

// New opens (creating) the registry in cfg.Dir and starts its upload purger.
func New(cfg Config) (*Registry, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	secret, err := uploadSecret(filepath.Join(cfg.Dir, "upload-secret"))
	if err != nil {
		return nil, err
	}
	root := filepath.Join(cfg.Dir, "distribution")
	d := &storeDriver{
		StorageDriver: filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100}),
		root:          root,
		store:         cfg.Store,
		maxUpload:     cfg.MaxUploadBytes,
		uploads:       map[string]int64{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.countUploads(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("registry: count the uploads in progress: %w", err)
	}
	ns, err := storage.NewRegistry(ctx, d, storage.EnableDelete)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("registry: %w", err)
	}
	registerFactory.Do(func() { factory.Register(driverFactoryName, passDriver{}) })
	conf := &configuration.Configuration{
		Storage: configuration.Storage{
			driverFactoryName: configuration.Parameters{"driver": d},
			"delete":          configuration.Parameters{"enabled": true},
			"redirect":        configuration.Parameters{"disable": true},
			// Expiry runs on the Registry's own clock and goroutine (purge), which Close joins.
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	// Non-distributable layers name where clients fetch them; the seed never fetches
	// them, and agents fetch only the CIDs bundles name, so any https URL may be declared.
	conf.Validation.Manifests.URLs.Allow = []string{"^https://"}
	conf.HTTP.Secret = secret
	// Location headers relative to the request, so they hold behind a proxy or a
	// load balancer that rewrites the host.
	conf.HTTP.RelativeURLs = true
	app, err := newApp(ctx, conf)
	if err != nil {
		cancel()
		return nil, err
	}
	r := &Registry{cfg: cfg, driver: d, app: app, referrers: newReferrers(ns, d), cancel: cancel}
	r.wg.Add(1)
	go r.purgeLoop(ctx)
	return r, nil
}

// newApp builds distribution's App, which reports configuration errors by panicking.
func newApp(ctx context.Context, conf *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("registry: distribution refused its configuration: %v", p)
		}
	}()
	return handlers.NewApp(ctx, conf), nil
}

// uploadSecret reads (creating) the key distribution signs upload state with: kept on
// disk, an upload a client started survives a restart of the seed.
func uploadSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) < 32 {
			return "", fmt.Errorf("registry: %s holds %d bytes, want at least 32; delete it to make a new one", path, len(b))
		}
		return string(b), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("registry: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	secret := hex.EncodeToString(raw)
	if err := atomicfile.WriteFile(path, []byte(secret), 0o600); err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	return secret, nil
}

// Close stops the purger and the engine.
func (r *Registry) Close() error {
	r.cancel()
	r.wg.Wait()
	return r.app.Shutdown()
}

func (r *Registry) purgeLoop(ctx context.Context) {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.PurgeInterval)
	defer t.Stop()
	for {
		if n, err := r.Purge(ctx); err != nil {
			r.cfg.Logger.Warn("registry: purge expired uploads", "err", err)
		} else if n > 0 {
			r.cfg.Logger.Info("registry: purged expired uploads", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Purge deletes every upload started more than UploadExpiry ago and returns how many.
func (r *Registry) Purge(ctx context.Context) (int, error) {
	if _, err := r.driver.Stat(ctx, v2Root+"/repositories"); errors.As(err, new(storagedriver.PathNotFoundError)) {
		return 0, nil // nothing pushed yet
	}
	deleted, errs := storage.PurgeUploads(ctx, r.driver, r.cfg.Now().Add(-r.cfg.UploadExpiry), true)
	return len(deleted), errors.Join(errs...)
}

// PendingUploadBytes is the bytes held by uploads in progress.
func (r *Registry) PendingUploadBytes() int64 { return r.driver.pendingBytes() }

// ServeHTTP serves the distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rt := parseRoute(req.URL.Path)
	if msg := unsupportedDigest(req, rt); msg != "" {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", msg)
		return
	}
	switch {
	case rt.kind == routeUpload && req.Method == http.MethodPost && req.URL.Query().Get("digest") != "" && req.ContentLength != 0:
		r.postUpload(w, req, rt)
	case rt.kind == routeReferrers && (req.Method == http.MethodGet || req.Method == http.MethodHead):
		r.referrers.serve(w, req, rt)
	case rt.kind == routeManifest && (req.Method == http.MethodGet || req.Method == http.MethodHead) && req.Header.Get("Accept") == "":
		// Distribution answers a request that accepts no manifest type with 404, as if
		// the manifest were missing; a client that names no type (curl) takes any.
		req.Header.Set("Accept", anyManifest)
		r.app.ServeHTTP(w, req)
	case rt.kind == routeManifest && req.Method == http.MethodPut:
		r.putManifest(w, req)
	case rt.kind == routeUpload && (req.Method == http.MethodPost || req.Method == http.MethodPatch || req.Method == http.MethodPut):
		r.guardUpload(w, req, rt)
	default:
		r.app.ServeHTTP(w, req)
	}
}
