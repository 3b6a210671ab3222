package content

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/encoding/protodelim"

	contentv1 "meshkit.dev/meshkit/proto/meshkit/content/v1"
)

const domain = "test"

// net builds n fully linked mocknet hosts, each with its own store.
func net(t *testing.T, n int) ([]host.Host, []*Store) {
	t.Helper()
	mn, err := mocknet.FullMeshLinked(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mn.Close() })
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = open(t, Options{})
	}
	return mn.Hosts(), stores
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchFromSeveralPeersNotTheSeed(t *testing.T) {
	hs, stores := net(t, 4) // 0 seed, 1 and 2 hold the blob, 3 fetches
	blob := random(t, 1<<20+123)
	ctx := context.Background()
	c := Sum(blob)
	servers := make([]*Server, 3)
	for i := range 3 {
		if _, err := stores[i].PutBytes(ctx, blob); err != nil {
			t.Fatal(err)
		}
		servers[i] = Serve(hs[i], domain, stores[i], ServerConfig{})
		defer servers[i].Close()
	}
	f := NewFetcher(hs[3], domain, stores[3], FetchConfig{Chunk: 64 << 10, FallbackAfter: time.Hour})
	err := f.Fetch(ctx, c, int64(len(blob)), Sources{
		Peers:    func() []peer.ID { return []peer.ID{hs[1].ID(), hs[2].ID()} },
		Fallback: []peer.ID{hs[0].ID()},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := stores[3].Get(c)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("fetched blob: %v", err)
	}
	peers, fallback := f.Received()
	if peers != int64(len(blob)) || fallback != 0 || servers[0].ServedBytes() != 0 {
		t.Fatalf("from peers %d, from the seed %d (served %d)", peers, fallback, servers[0].ServedBytes())
	}
	// Both peers served ranges.
	if servers[1].ServedBytes() == 0 || servers[2].ServedBytes() == 0 {
		t.Fatalf("served %d and %d: not spread over providers", servers[1].ServedBytes(), servers[2].ServedBytes())
	}
}

func TestFetchFallsBackToTheSeedOnlyWhenNoPeerHasIt(t *testing.T) {
	hs, stores := net(t, 3)
	blob := random(t, 300<<10)
	ctx := context.Background()
	c, _ := stores[0].PutBytes(ctx, blob)
	seed := Serve(hs[0], domain, stores[0], ServerConfig{MaxConcurrent: 1})
	defer seed.Close()
	Serve(hs[1], domain, stores[1], ServerConfig{}) // holds nothing
	f := NewFetcher(hs[2], domain, stores[2], FetchConfig{FallbackAfter: 300 * time.Millisecond, Retry: 50 * time.Millisecond})
	src := Sources{Peers: func() []peer.ID { return []peer.ID{hs[1].ID()} }, Fallback: []peer.ID{hs[0].ID()}}
	if err := f.Fetch(ctx, c, int64(len(blob)), src); err != nil {
		t.Fatal(err)
	}
	if _, fallback := f.Received(); fallback != int64(len(blob)) {
		t.Fatalf("from the seed %d, want the whole blob", fallback)
	}
	// Without fallback peers and without providers, the fetch ends with its context.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := f.Fetch(short, Sum([]byte("nobody has this")), 15, Sources{Peers: src.Peers})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fetch of what nobody holds: %v", err)
	}
}

// liar answers the content protocol claiming to hold every blob, with bytes of its own.
func liar(h host.Host, size int) {
	h.SetStreamHandler(Protocol(domain), func(s network.Stream) {
		defer s.Close()
		req := &contentv1.ContentRequest{}
		if err := protodelim.UnmarshalFrom(bufio.NewReader(s), req); err != nil {
			return
		}
		resp := &contentv1.ContentResponse{Held: true, Size: uint64(size)}
		if req.GetLength() > 0 {
			resp.Data = bytes.Repeat([]byte{'x'}, int(req.GetLength()))
		}
		_, _ = protodelim.MarshalTo(s, resp)
	})
}

func TestFetchFindsTheLiarAndStoresOnlyTheRealBlob(t *testing.T) {
	hs, stores := net(t, 3)
	blob := random(t, 200<<10)
	ctx := context.Background()
	c, _ := stores[0].PutBytes(ctx, blob)
	Serve(hs[0], domain, stores[0], ServerConfig{})
	liar(hs[1], len(blob))
	f := NewFetcher(hs[2], domain, stores[2], FetchConfig{Chunk: 32 << 10, Retry: 20 * time.Millisecond, FallbackAfter: time.Hour})
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := f.Fetch(ctx, c, int64(len(blob)), Sources{Peers: func() []peer.ID { return []peer.ID{hs[0].ID(), hs[1].ID()} }})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := stores[2].Get(c); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("stored: %v", err)
	}
	// A liar alone never gets its bytes stored.
	other := random(t, 1000)
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	liar(hs[1], len(other))
	err = f.Fetch(short, Sum(other), int64(len(other)), Sources{Peers: func() []peer.ID { return []peer.ID{hs[1].ID()} }})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("fetch from a liar: %v", err)
	}
	if _, ok := stores[2].Has(Sum(other)); ok {
		t.Fatal("a liar's bytes were stored")
	}
}

func TestFetchCapsSizeByTheManifest(t *testing.T) {
	hs, stores := net(t, 2)
	blob := random(t, 5000)
	ctx := context.Background()
	c, _ := stores[0].PutBytes(ctx, blob)
	Serve(hs[0], domain, stores[0], ServerConfig{})
	f := NewFetcher(hs[1], domain, stores[1], FetchConfig{Retry: 20 * time.Millisecond})
	// The manifest says 4,000 bytes: the peer holding 5,000 is not a provider of it.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := f.Fetch(short, c, 4000, Sources{Peers: func() []peer.ID { return []peer.ID{hs[0].ID()} }}); err == nil {
		t.Fatal("fetched a blob larger than its manifest")
	}
	if err := f.Fetch(ctx, c, 1<<40, Sources{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared 1 TiB: %v", err)
	}
}

func FuzzContentRequest(f *testing.F) {
	f.Add([]byte{})
	var buf bytes.Buffer
	_, _ = protodelim.MarshalTo(&buf, &contentv1.ContentRequest{Cid: Sum(nil).String(), Offset: 1, Length: 10})
	f.Add(buf.Bytes())
	s := &Server{store: open(f, Options{})}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &contentv1.ContentRequest{}
		if err := (protodelim.UnmarshalOptions{MaxSize: maxRequestBytes}).UnmarshalFrom(bufio.NewReader(bytes.NewReader(data)), req); err != nil {
			return
		}
		resp := s.answer("", req)
		if len(resp.GetData()) > MaxChunk {
			t.Fatalf("answered %d bytes", len(resp.GetData()))
		}
	})
}

// hog holds a limited server's slot the cheapest way: a one-byte range every 300 ms.
func hog(ctx context.Context, h host.Host, server peer.ID, c cid.Cid) {
	ticker := time.NewTicker(300 * time.Millisecond)
	defer ticker.Stop()
	for {
		s, err := h.NewStream(ctx, server, Protocol(domain))
		if err == nil {
			_, _ = protodelim.MarshalTo(s, &contentv1.ContentRequest{Cid: c.String(), Offset: 0, Length: 1})
			_ = s.CloseWrite()
			_, _ = io.Copy(io.Discard, s)
			_ = s.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// TestSlowPeerCannotHoldTheSeed: a peer asks a one-slot seed for one byte every 300 ms,
// which used to keep the slot for as long as it liked. Its lease ends after the grace for
// want of progress, and an honest agent fetches the whole blob from the seed.
func TestSlowPeerCannotHoldTheSeed(t *testing.T) {
	hs, stores := net(t, 3)
	blob := random(t, 512<<10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _ := stores[0].PutBytes(ctx, blob)
	seed := Serve(hs[0], domain, stores[0], ServerConfig{MaxConcurrent: 1})
	defer seed.Close()
	var hogging sync.WaitGroup
	hogging.Go(func() { hog(ctx, hs[1], hs[0].ID(), c) })
	defer hogging.Wait()
	defer cancel()
	waitFor(t, "the hog's first byte", func() bool { return seed.ServedBytes() > 0 })
	f := NewFetcher(hs[2], domain, stores[2], FetchConfig{FallbackAfter: time.Millisecond, Retry: 50 * time.Millisecond})
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	if err := f.Fetch(fctx, c, int64(len(blob)), Sources{Peers: func() []peer.ID { return nil }, Fallback: []peer.ID{hs[0].ID()}}); err != nil {
		t.Fatalf("the honest agent's fetch while a peer hogs the seed: %v", err)
	}
	if got, err := stores[2].Get(c); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("stored: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServerServesAllowedPeersOnly: a server whose Allow refuses a peer (one not admitted
// into the domain's mesh) resets its streams, so the peer finds no provider; an allowed
// peer fetches the blob.
func TestServerServesAllowedPeersOnly(t *testing.T) {
	hs, stores := net(t, 3)
	blob := random(t, 64<<10)
	ctx := context.Background()
	c, _ := stores[0].PutBytes(ctx, blob)
	srv := Serve(hs[0], domain, stores[0], ServerConfig{Allow: func(p peer.ID) bool { return p == hs[1].ID() }})
	defer srv.Close()
	src := Sources{Peers: func() []peer.ID { return []peer.ID{hs[0].ID()} }}
	allowed := NewFetcher(hs[1], domain, stores[1], FetchConfig{Retry: 50 * time.Millisecond})
	if err := allowed.Fetch(ctx, c, int64(len(blob)), src); err != nil {
		t.Fatalf("the allowed peer: %v", err)
	}
	refused := NewFetcher(hs[2], domain, stores[2], FetchConfig{Retry: 50 * time.Millisecond})
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := refused.Fetch(short, c, int64(len(blob)), src); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the refused peer: %v, want no provider until the deadline", err)
	}
	if _, ok := stores[2].Has(c); ok {
		t.Fatal("the refused peer holds the blob")
	}
}
