package p2p

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

// TestHeldResponseIsWhatProtodelimWrites: a fetch answered from the source's encoding is
// byte for byte the answer marshalled from the message, so peers of either kind read it.
func TestHeldResponseIsWhatProtodelimWrites(t *testing.T) {
	big := bytes.Repeat([]byte{0xa5}, 100<<10) // a length prefix of three bytes
	for _, hb := range []*syncv1.HeldBundle{
		{},
		{Proof: []byte("proof")},
		{Proof: big, Payload: []byte("payload")},
	} {
		var want bytes.Buffer
		if _, err := protodelim.MarshalTo(&want, &syncv1.SyncResponse{Result: &syncv1.SyncResponse_Bundle{Bundle: hb}}); err != nil {
			t.Fatal(err)
		}
		enc, err := proto.Marshal(hb)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := writeHeldResponse(&got, enc); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("proof %d B, payload %d B: wrote %d bytes %x…, protodelim writes %d bytes %x…",
				len(hb.Proof), len(hb.Payload), got.Len(), got.Bytes()[:min(8, got.Len())], want.Len(), want.Bytes()[:min(8, want.Len())])
		}
	}
}

// encodedSource serves one bundle from its encoding and counts how often it did.
type encodedSource struct {
	fuzzSource
	served atomic.Int32
}

func (s *encodedSource) HeldEncoded(hash []byte) []byte {
	hb := s.Held(hash)
	if hb == nil {
		return nil
	}
	b, err := proto.Marshal(hb)
	if err != nil {
		return nil
	}
	s.served.Add(1)
	return b
}

func TestFetchIsServedFromTheEncoding(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { _ = mn.Close() })
	hs := make([]*Node, 2)
	want := &syncv1.HeldBundle{Proof: bytes.Repeat([]byte("p"), 70<<10), Payload: []byte("body")}
	src := &encodedSource{fuzzSource: fuzzSource{held: want}}
	for i := range hs {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		var s Source = fuzzSource{}
		if i == 0 {
			s = src
		}
		n, err := New(context.Background(), Config{Domain: "prod", Host: h, Validator: fuzzSource{}, Source: s})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		hs[i] = n
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs[1].Host().Connect(ctx, peer.AddrInfo{ID: hs[0].ID(), Addrs: hs[0].Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	got, err := hs[1].Fetch(ctx, hs[0].ID(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("fetched proof %d B, payload %q; want proof %d B, payload %q", len(got.Proof), got.Payload, len(want.Proof), want.Payload)
	}
	if n := src.served.Load(); n != 1 {
		t.Fatalf("the encoding served %d fetches, want 1", n)
	}
	if _, err := hs[1].Fetch(ctx, hs[0].ID(), bytes.Repeat([]byte{1}, 32)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of a bundle not held: %v, want ErrNotFound", err)
	}
}
