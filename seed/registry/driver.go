package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/ipfs/go-cid"
	"github.com/opencontainers/go-digest"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/atomicfile"
)

// Distribution's storage layout (registry/storage/paths.go): blob bytes live at
// /docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data, uploads in progress under
// /docker/registry/v2/repositories/<name>/_uploads/<id>/.
const (
	v2Root      = "/docker/registry/v2"
	blobsPrefix = v2Root + "/blobs/sha256/"
	reposPrefix = v2Root + "/repositories/"
	uploadsDir  = "/_uploads/"
)

// storeDriver is the storage driver the distribution engine runs on. sha256 blob bytes
// (layers, configs, manifests) live in the seed's content store, so a pushed layer is
// fetchable by agents under its CID the moment the push completes; everything else
// (repository links, tags, uploads in progress, blobs of other digest algorithms) lives
// in distribution's filesystem driver under the registry's directory. It also keeps the
// byte count of uploads in progress, which the upload guard bounds.
type storeDriver struct {
	storagedriver.StorageDriver // the filesystem driver
	root                        string
	store                       *content.Store

	maxUpload int64 // a hard stop for one upload's data, behind the HTTP guard

	mu       sync.Mutex
	uploads  map[string]int64 // upload directory -> bytes written so far
	pending  int64            // sum of uploads
	reserved int64            // allowances of upload requests in flight
}

// blobCID returns the CID a path of a sha256 blob's data names, or ok=false.
func blobCID(p string) (cid.Cid, bool) {
	rest, ok := strings.CutPrefix(p, blobsPrefix)
	if !ok {
		return cid.Undef, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "data" || len(parts[1]) != 64 || !strings.HasPrefix(parts[1], parts[0]) {
		return cid.Undef, false
	}
	c, err := content.FromDigest(digest.NewDigestFromEncoded(digest.SHA256, parts[1]))
	if err != nil {
		return cid.Undef, false
	}
	return c, true
}

// uploadOf returns the upload directory a path lies in, or "".
func uploadOf(p string) string {
	if !strings.HasPrefix(p, reposPrefix) {
		return ""
	}
	i := strings.Index(p, uploadsDir)
	if i < 0 {
		return ""
	}
	id, _, _ := strings.Cut(p[i+len(uploadsDir):], "/")
	if id == "" {
		return ""
	}
	return p[:i+len(uploadsDir)+len(id)]
}

func (d *storeDriver) Name() string { return "meshkit-content" }

func (d *storeDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if c, ok := blobCID(p); ok {
		b, err := d.store.Get(c)
		return b, d.storeErr(p, err)
	}
	return d.StorageDriver.GetContent(ctx, p)
}

func (d *storeDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if c, ok := blobCID(p); ok {
		_, err := d.store.PutExpect(ctx, c, bytes.NewReader(b), int64(len(b)))
		return err
	}
	return d.StorageDriver.PutContent(ctx, p, b)
}

func (d *storeDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	c, ok := blobCID(p)
	if !ok {
		return d.StorageDriver.Reader(ctx, p, offset)
	}
	r, size, err := d.store.Open(c)
	if err != nil {
		return nil, d.storeErr(p, err)
	}
	if offset < 0 || offset > size {
		r.Close()
		return nil, storagedriver.InvalidOffsetError{Path: p, Offset: offset}
	}
	// The store's reader verifies the digest at the end, so the bytes before the offset
	// are read (and hashed), not skipped.
	if _, err := io.CopyN(io.Discard, r, offset); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (d *storeDriver) Writer(ctx context.Context, p string, appendTo bool) (storagedriver.FileWriter, error) {
	if _, ok := blobCID(p); ok {
		return nil, fmt.Errorf("registry: blob data is written by moving a finished upload, not directly (%s)", p)
	}
	w, err := d.StorageDriver.Writer(ctx, p, appendTo)
	if err != nil {
		return nil, err
	}
	up := uploadOf(p)
	if up == "" || path.Base(p) != "data" {
		return w, nil
	}
	return &countingWriter{FileWriter: w, d: d, upload: up}, nil
}

func (d *storeDriver) Stat(ctx context.Context, p string) (storagedriver.FileInfo, error) {
	if c, ok := blobCID(p); ok {
		size, held := d.store.Has(c)
		if !held {
			return nil, storagedriver.PathNotFoundError{Path: p, DriverName: d.Name()}
		}
		return storeFileInfo{path: p, size: size}, nil
	}
	return d.StorageDriver.Stat(ctx, p)
}

// Move lands a finished upload: into the content store when its destination is a sha256
// blob (the store checks the digest again and fsyncs), otherwise by the filesystem
// driver's rename, made durable by syncing the directory it lands in.
func (d *storeDriver) Move(ctx context.Context, src, dst string) error {
	c, ok := blobCID(dst)
	if !ok {
		if err := d.StorageDriver.Move(ctx, src, dst); err != nil {
			return err
		}
		d.forgetUpload(src)
		return atomicfile.SyncDir(filepath.Dir(d.full(dst)))
	}
	r, err := d.StorageDriver.Reader(ctx, src, 0)
	if err != nil {
		return err
	}
	_, err = d.store.PutExpect(ctx, c, r, 0)
	r.Close()
	if err != nil {
		return err
	}
	if err := d.StorageDriver.Delete(ctx, src); err != nil {
		return err
	}
	d.forgetUpload(src)
	return nil
}

// Delete removes a path and syncs its parent, so that a deleted tag or manifest stays
// deleted after a crash. Blob bytes in the content store are not deleted here: a signed
// bundle may name them whatever the registry's repositories say.
func (d *storeDriver) Delete(ctx context.Context, p string) error {
	if _, ok := blobCID(p); ok {
		return nil
	}
	if err := d.StorageDriver.Delete(ctx, p); err != nil {
		return err
	}
	d.forgetUpload(p)
	return atomicfile.SyncDir(filepath.Dir(d.full(p)))
}

// RedirectURL never redirects: blobs are served by the seed, through its authorization.
func (d *storeDriver) RedirectURL(*http.Request, string) (string, error) { return "", nil }

func (d *storeDriver) full(p string) string { return filepath.Join(d.root, filepath.FromSlash(p)) }

func (d *storeDriver) storeErr(p string, err error) error {
	if errors.Is(err, content.ErrNotFound) {
		return storagedriver.PathNotFoundError{Path: p, DriverName: d.Name()}
	}
	return err
}

// pendingBytes is the byte count of every upload in progress.
func (d *storeDriver) pendingBytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending
}

// reserve grants up to want bytes of the total limit to one upload request, counting
// what uploads hold and what requests in flight were granted; release returns it.
func (d *storeDriver) reserve(want, limit int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := max(0, min(want, limit-d.pending-d.reserved))
	d.reserved += n
	return n
}

func (d *storeDriver) release(n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reserved -= n
}

// uploadBytes is what one upload has received.
func (d *storeDriver) uploadBytes(upload string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.uploads[upload]
}

func (d *storeDriver) setUpload(upload string, n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending += n - d.uploads[upload]
	d.uploads[upload] = n
}

// forgetUpload drops the count of every upload at or under p (a finished upload's data
// moved away, an upload directory deleted, or a whole repository).
func (d *storeDriver) forgetUpload(p string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for up, n := range d.uploads {
		if up == p || strings.HasPrefix(up, p+"/") || uploadOf(p) == up {
			d.pending -= n
			delete(d.uploads, up)
		}
	}
}

// countUploads recounts the uploads a restart found on disk.
func (d *storeDriver) countUploads(ctx context.Context) error {
	err := d.StorageDriver.Walk(ctx, v2Root+"/repositories", func(fi storagedriver.FileInfo) error {
		if up := uploadOf(fi.Path()); up != "" && !fi.IsDir() && path.Base(fi.Path()) == "data" {
			d.setUpload(up, fi.Size())
		}
		return nil
	})
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

// countingWriter keeps the driver's count of an upload's bytes current.
type countingWriter struct {
	storagedriver.FileWriter
	d      *storeDriver
	upload string
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.d.maxUpload > 0 && w.FileWriter.Size()+int64(len(b)) > w.d.maxUpload {
		return 0, fmt.Errorf("%w: an upload may hold at most %d bytes", errOverAllowance, w.d.maxUpload)
	}
	n, err := w.FileWriter.Write(b)
	w.d.setUpload(w.upload, w.FileWriter.Size())
	return n, err
}

type storeFileInfo struct {
	path string
	size int64
}

func (f storeFileInfo) Path() string       { return f.path }
func (f storeFileInfo) Size() int64        { return f.size }
func (f storeFileInfo) ModTime() time.Time { return time.Time{} }
func (f storeFileInfo) IsDir() bool        { return false }
