package content

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

func TestCIDsAndOCIDigestsMapOneToOne(t *testing.T) {
	// The CIDv1 (raw, sha2-256) of the empty blob, as IPFS computes it.
	empty := Sum(nil)
	if got := empty.String(); got != "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku" {
		t.Fatalf("Sum(nil) = %s", got)
	}
	d, err := Digest(empty)
	if err != nil || d != digest.FromBytes(nil) {
		t.Fatalf("Digest = %s, %v; want %s", d, err, digest.FromBytes(nil))
	}
	back, err := FromDigest(d)
	if err != nil || !back.Equals(empty) {
		t.Fatalf("FromDigest = %s, %v", back, err)
	}
	for _, bad := range []digest.Digest{"sha512:" + digest.Digest(strings.Repeat("ab", 64)), "sha256:zz", "md5:00"} {
		if _, err := FromDigest(bad); err == nil {
			t.Errorf("FromDigest(%q) accepted", bad)
		}
	}
	// A CID over another hash function is refused with its name.
	id, _ := mh.Sum([]byte("x"), mh.IDENTITY, -1)
	if _, err := Parse(cid.NewCidV1(cid.Raw, id).String()); err == nil || !strings.Contains(err.Error(), "only sha2-256") {
		t.Fatalf("identity cid: %v", err)
	}
	if _, err := Parse("not-a-cid"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func open(t testing.TB, opt Options) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutGetVerifies(t *testing.T) {
	ctx := context.Background()
	s := open(t, Options{})
	data := bytes.Repeat([]byte("wasm"), 1000)
	c, n, err := s.Put(ctx, bytes.NewReader(data), 0)
	if err != nil || n != int64(len(data)) || !c.Equals(Sum(data)) {
		t.Fatalf("Put = %s %d %v", c, n, err)
	}
	got, err := s.Get(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %v", err)
	}
	if size, ok := s.Has(c); !ok || size != int64(len(data)) {
		t.Fatalf("Has = %d %v", size, ok)
	}
	r, size, err := s.Open(c)
	if err != nil || size != int64(len(data)) {
		t.Fatal(err)
	}
	all, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("Open: %v", err)
	}
	part, total, err := s.ReadRange(c, 3990, 100)
	if err != nil || total != 4000 || !bytes.Equal(part, data[3990:]) {
		t.Fatalf("ReadRange = %q %d %v", part, total, err)
	}
	if _, _, err := s.ReadRange(c, 4001, 1); err == nil {
		t.Fatal("range past the end accepted")
	}
	if _, err := s.Get(Sum([]byte("absent"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent: %v", err)
	}
}

func TestPutExpectRefusesOtherBytesAndKeepsNothing(t *testing.T) {
	s := open(t, Options{})
	want := Sum([]byte("the module"))
	_, err := s.PutExpect(context.Background(), want, strings.NewReader("another module"), 0)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), want.String()) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := s.Has(want); ok {
		t.Fatal("mismatched bytes stored")
	}
	if used, blobs, _ := s.Usage(); used != 0 || blobs != 0 {
		t.Fatalf("usage %d bytes %d blobs", used, blobs)
	}
	if tmps, _ := os.ReadDir(s.tmpDir()); len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

func TestLimits(t *testing.T) {
	ctx := context.Background()
	s := open(t, Options{MaxBlobBytes: 100, MaxTotalBytes: 250})
	if _, _, err := s.Put(ctx, bytes.NewReader(make([]byte, 101)), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the blob limit: %v", err)
	}
	// A caller's limit (from a signed manifest) is tighter than the store's.
	if _, _, err := s.Put(ctx, bytes.NewReader(make([]byte, 50)), 49); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the caller's limit: %v", err)
	}
	for i := range 2 {
		if _, _, err := s.Put(ctx, bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 100)), 0); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := s.Put(ctx, bytes.NewReader(bytes.Repeat([]byte{9}, 100)), 0)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "200 of 250") {
		t.Fatalf("over the total: %v", err)
	}
	// The same blob again takes no more room.
	if _, _, err := s.Put(ctx, bytes.NewReader(bytes.Repeat([]byte{0}, 100)), 0); err != nil {
		t.Fatalf("re-put: %v", err)
	}
}

func TestCorruptBlobIsRefusedAndRemoved(t *testing.T) {
	ctx := context.Background()
	s := open(t, Options{})
	data := []byte("proxy-wasm module bytes")
	c, err := s.PutBytes(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.path(c)
	corrupt := func() {
		if err := os.WriteFile(p, []byte("proxy-wasm module bytez"), 0o600); err != nil {
			t.Fatal(err)
		}
		// Move the modification time so the range cache notices even on coarse clocks.
		_ = os.Chtimes(p, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	}
	// Served once (verified), then changed on disk: the next range is checked again.
	if _, _, err := s.ReadRange(c, 0, 4); err != nil {
		t.Fatal(err)
	}
	corrupt()
	if _, _, err := s.ReadRange(c, 0, 4); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("ReadRange of a corrupt blob: %v", err)
	}
	if _, ok := s.Has(c); ok {
		t.Fatal("corrupt blob kept")
	}
	if _, err := s.PutBytes(ctx, data); err != nil {
		t.Fatal(err)
	}
	corrupt()
	if _, err := s.Get(c); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Get of a corrupt blob: %v", err)
	}
	if _, err := s.PutBytes(ctx, data); err != nil {
		t.Fatal(err)
	}
	corrupt()
	r, _, err := s.Open(c)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(r)
	r.Close()
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("reading a corrupt blob to the end: %v", err)
	}
}

func TestGCKeepsReferencedAndRecent(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	s := open(t, Options{Grace: time.Hour, Now: func() time.Time { return now }})
	keep, _ := s.PutBytes(ctx, []byte("referenced"))
	old, _ := s.PutBytes(ctx, []byte("unreferenced"))
	recent, _ := s.PutBytes(ctx, []byte("just fetched"))
	for _, c := range []cid.Cid{keep, old} {
		p, _ := s.path(c)
		if err := os.Chtimes(p, now.Add(-2*time.Hour), now.Add(-2*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.GC(func(c cid.Cid) bool { return c.Equals(keep) })
	if err != nil || r.Removed != 1 || r.Freed != int64(len("unreferenced")) || r.Kept != 2 {
		t.Fatalf("GC = %+v, %v", r, err)
	}
	for c, want := range map[cid.Cid]bool{keep: true, old: false, recent: true} {
		if _, ok := s.Has(c); ok != want {
			t.Errorf("%s held = %v, want %v", c, ok, want)
		}
	}
	if used, blobs, _ := s.Usage(); blobs != 2 || used != int64(len("referenced")+len("just fetched")) {
		t.Fatalf("usage %d bytes %d blobs", used, blobs)
	}
}

func TestReopenCountsBlobsAndDropsTemporaries(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutBytes(context.Background(), []byte("kept across restarts")); err != nil {
		t.Fatal(err)
	}
	// A write a crash interrupted.
	if err := os.WriteFile(filepath.Join(dir, "tmp", "put-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if used, blobs, _ := s2.Usage(); blobs != 1 || used != int64(len("kept across restarts")) {
		t.Fatalf("after reopen: %d bytes %d blobs", used, blobs)
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
		t.Fatalf("temporaries survived: %v", tmps)
	}
}
