package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"meshkit.dev/meshkit/internal/atomicfile"
)

// Options bound a Store.
type Options struct {
	// MaxBlobBytes refuses any single blob above it; default 64 MiB.
	MaxBlobBytes int64
	// MaxTotalBytes refuses a blob that would take the store above it; default 8 GiB.
	// GC frees what no held bundle references.
	MaxTotalBytes int64
	// Grace keeps blobs younger than this from GC even when unreferenced (a fetch for a
	// bundle not yet installed, a registry push not yet signed); default 1 hour.
	Grace time.Duration
	// Now is the clock for Grace; default time.Now.
	Now func() time.Time
}

func (o *Options) defaults() {
	if o.MaxBlobBytes <= 0 {
		o.MaxBlobBytes = 64 << 20
	}
	if o.MaxTotalBytes <= 0 {
		o.MaxTotalBytes = 8 << 30
	}
	if o.Grace <= 0 {
		o.Grace = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Store is a local blob store addressed by CID. Blobs live in DIR/sha256/<hex>, written
// through a temporary file, fsynced and renamed, so a crash leaves either no blob or the
// whole blob; nothing whose digest does not match is ever stored, and every read verifies
// the digest again (disks rot, and files can be edited).
type Store struct {
	dir  string
	opt  Options
	mu   sync.Mutex
	used int64
	// verified remembers blobs hashed in full since they last changed on disk, so that
	// serving a blob chunk by chunk hashes it once, not once per chunk.
	verified map[cid.Cid]fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// Open opens (creating) the store in dir.
func Open(dir string, opt Options) (*Store, error) {
	opt.defaults()
	s := &Store{dir: dir, opt: opt, verified: map[cid.Cid]fileStamp{}}
	for _, d := range []string{s.blobDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("content: %w", err)
		}
	}
	// Temporary files are from writes a crash interrupted.
	tmps, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	for _, t := range tmps {
		_ = os.Remove(filepath.Join(s.tmpDir(), t.Name()))
	}
	err = s.walk(func(_ cid.Cid, info fs.FileInfo) error {
		s.used += info.Size()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) blobDir() string { return filepath.Join(s.dir, "sha256") }
func (s *Store) tmpDir() string  { return filepath.Join(s.dir, "tmp") }

func (s *Store) path(c cid.Cid) (string, error) {
	sum, err := sha256Of(c)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.blobDir(), hex.EncodeToString(sum)), nil
}

// walk calls f for every stored blob.
func (s *Store) walk(f func(cid.Cid, fs.FileInfo) error) error {
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return fmt.Errorf("content: %w", err)
	}
	for _, e := range ents {
		sum, err := hex.DecodeString(e.Name())
		if err != nil || len(sum) != sha256.Size {
			continue // not ours
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if err := f(fromSHA256(sum), info); err != nil {
			return err
		}
	}
	return nil
}

// MaxBlobBytes is the largest blob the store accepts.
func (s *Store) MaxBlobBytes() int64 { return s.opt.MaxBlobBytes }

// Put stores what r yields, at most limit bytes (and at most MaxBlobBytes), and returns
// its CID and size.
func (s *Store) Put(ctx context.Context, r io.Reader, limit int64) (cid.Cid, int64, error) {
	return s.put(ctx, r, cid.Undef, limit)
}

// PutExpect stores what r yields only if it is exactly the blob c names, of at most
// limit bytes: fetched content is checked before it lands.
func (s *Store) PutExpect(ctx context.Context, c cid.Cid, r io.Reader, limit int64) (int64, error) {
	if _, err := sha256Of(c); err != nil {
		return 0, err
	}
	_, n, err := s.put(ctx, r, c, limit)
	return n, err
}

func (s *Store) put(ctx context.Context, r io.Reader, want cid.Cid, limit int64) (cid.Cid, int64, error) {
	if limit <= 0 || limit > s.opt.MaxBlobBytes {
		limit = s.opt.MaxBlobBytes
	}
	tmp, err := os.CreateTemp(s.tmpDir(), "put-*")
	if err != nil {
		return cid.Undef, 0, fmt.Errorf("content: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: io.LimitReader(r, limit+1)})
	if err != nil {
		return cid.Undef, n, fmt.Errorf("content: write blob: %w", err)
	}
	if n > limit {
		return cid.Undef, n, fmt.Errorf("%w: blob is over %d bytes", ErrTooLarge, limit)
	}
	got := fromSHA256(h.Sum(nil))
	if want.Defined() && !got.Equals(want) {
		return cid.Undef, n, fmt.Errorf("%w: the bytes received hash to %s, not %s", ErrDigestMismatch, got, want)
	}
	if err := tmp.Sync(); err != nil {
		return cid.Undef, n, fmt.Errorf("content: sync blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return cid.Undef, n, fmt.Errorf("content: %w", err)
	}
	dst, _ := s.path(got)
	s.mu.Lock()
	defer s.mu.Unlock()
	if info, err := os.Stat(dst); err == nil && info.Size() == n {
		return got, n, nil // already held (verified on every read)
	}
	if s.used+n > s.opt.MaxTotalBytes {
		return cid.Undef, n, fmt.Errorf("%w: the store holds %d of %d bytes; a %d-byte blob does not fit (unreferenced blobs are freed by GC)",
			ErrTooLarge, s.used, s.opt.MaxTotalBytes, n)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return cid.Undef, n, fmt.Errorf("content: %w", err)
	}
	keep = true
	s.used += n
	if err := atomicfile.SyncDir(s.blobDir()); err != nil {
		return cid.Undef, n, err
	}
	return got, n, nil
}

// Has reports whether the store holds c, and its size.
func (s *Store) Has(c cid.Cid) (int64, bool) {
	p, err := s.path(c)
	if err != nil {
		return 0, false
	}
	info, err := os.Stat(p)
	if err != nil {
		return 0, false
	}
	return info.Size(), true
}

// Get returns the blob c names, verified. A blob that no longer matches its digest is
// removed and reported as ErrDigestMismatch.
func (s *Store) Get(c cid.Cid) ([]byte, error) {
	p, err := s.path(c)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, c)
	}
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	if got := Sum(b); !got.Equals(c) {
		s.drop(c, p)
		return nil, fmt.Errorf("%w: stored blob %s now hashes to %s; removed", ErrDigestMismatch, c, got)
	}
	return b, nil
}

// Open returns a reader of the blob c names and its size. The reader verifies as it goes:
// at the end it returns ErrDigestMismatch instead of io.EOF if the bytes were not c's, so a
// consumer must not act on what it read before seeing io.EOF.
func (s *Store) Open(c cid.Cid) (io.ReadCloser, int64, error) {
	p, err := s.path(c)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, c)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("content: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("content: %w", err)
	}
	return &verifyingReader{f: f, h: sha256.New(), want: c, onBad: func() { s.drop(c, p) }}, info.Size(), nil
}

// ReadRange returns length bytes of c from offset (fewer at the end of the blob), for
// serving a blob in chunks. The whole blob is verified before its first range is served,
// and again whenever it changes on disk.
func (s *Store) ReadRange(c cid.Cid, offset, length int64) ([]byte, int64, error) {
	p, err := s.path(c)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, c)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("content: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("content: %w", err)
	}
	stamp := fileStamp{size: info.Size(), mod: info.ModTime()}
	s.mu.Lock()
	ok := s.verified[c] == stamp
	s.mu.Unlock()
	if !ok {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return nil, 0, fmt.Errorf("content: %w", err)
		}
		if got := fromSHA256(h.Sum(nil)); !got.Equals(c) {
			s.drop(c, p)
			return nil, 0, fmt.Errorf("%w: stored blob %s now hashes to %s; removed", ErrDigestMismatch, c, got)
		}
		s.mu.Lock()
		s.verified[c] = stamp
		s.mu.Unlock()
	}
	if offset < 0 || offset > stamp.size || length < 0 {
		return nil, stamp.size, fmt.Errorf("content: range %d+%d outside %s (%d bytes)", offset, length, c, stamp.size)
	}
	buf := make([]byte, min(length, stamp.size-offset))
	if _, err := f.ReadAt(buf, offset); err != nil && !errors.Is(err, io.EOF) {
		return nil, stamp.size, fmt.Errorf("content: %w", err)
	}
	return buf, stamp.size, nil
}

// drop removes a blob found corrupt.
func (s *Store) drop(c cid.Cid, p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if info, err := os.Stat(p); err == nil && os.Remove(p) == nil {
		s.used -= info.Size()
	}
	delete(s.verified, c)
}

// Delete removes c; deleting what is not held is not an error.
func (s *Store) Delete(c cid.Cid) error {
	p, err := s.path(c)
	if err != nil {
		return err
	}
	s.drop(c, p)
	return nil
}

// Usage is the bytes and blobs held.
func (s *Store) Usage() (bytes int64, blobs int, err error) {
	err = s.walk(func(cid.Cid, fs.FileInfo) error { blobs++; return nil })
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, blobs, err
}

// GCResult is what a GC removed.
type GCResult struct {
	Removed int   `json:"removed"`
	Freed   int64 `json:"freed_bytes"`
	Kept    int   `json:"kept"`
}

// GC removes every blob that referenced does not report and that is older than Grace.
func (s *Store) GC(referenced func(cid.Cid) bool) (GCResult, error) {
	var r GCResult
	cutoff := s.opt.Now().Add(-s.opt.Grace)
	err := s.walk(func(c cid.Cid, info fs.FileInfo) error {
		if referenced(c) || info.ModTime().After(cutoff) {
			r.Kept++
			return nil
		}
		p, _ := s.path(c)
		s.drop(c, p)
		r.Removed++
		r.Freed += info.Size()
		return nil
	})
	return r, err
}

type verifyingReader struct {
	f     *os.File
	h     hash.Hash
	want  cid.Cid
	onBad func()
	err   error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := fromSHA256(v.h.Sum(nil)); !got.Equals(v.want) {
			v.onBad()
			v.err = fmt.Errorf("%w: stored blob %s now hashes to %s; removed", ErrDigestMismatch, v.want, got)
			return n, v.err
		}
		v.err = io.EOF
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.f.Close() }

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// PutBytes stores b (a convenience over Put).
func (s *Store) PutBytes(ctx context.Context, b []byte) (cid.Cid, error) {
	c, _, err := s.Put(ctx, bytes.NewReader(b), int64(len(b)))
	return c, err
}
