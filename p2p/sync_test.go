package p2p

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
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

// fetchPair starts a node serving src and a node connected to it that fetches from it,
// over mocknet; both close with tb.
func fetchPair(tb testing.TB, src Source) (server, client *Node) {
	tb.Helper()
	mn := mocknet.New()
	tb.Cleanup(func() { _ = mn.Close() })
	var nodes [2]*Node
	for i, s := range []Source{src, fuzzSource{}} {
		h, err := mn.GenPeer()
		if err != nil {
			tb.Fatal(err)
		}
		if nodes[i], err = New(context.Background(), Config{Domain: "prod", Host: h, Validator: fuzzSource{}, Source: s}); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = nodes[i].Close() })
	}
	if err := mn.LinkAll(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[1].Host().Connect(ctx, peer.AddrInfo{ID: nodes[0].ID(), Addrs: nodes[0].Host().Addrs()}); err != nil {
		tb.Fatal(err)
	}
	return nodes[0], nodes[1]
}

func TestFetchIsServedFromTheEncoding(t *testing.T) {
	want := &syncv1.HeldBundle{Proof: bytes.Repeat([]byte("p"), 70<<10), Payload: []byte("body")}
	src := &encodedSource{fuzzSource: fuzzSource{held: want}}
	server, client := fetchPair(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := client.Fetch(ctx, server.ID(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("fetched proof %d B, payload %q; want proof %d B, payload %q", len(got.Proof), got.Payload, len(want.Proof), want.Payload)
	}
	if n := src.served.Load(); n != 1 {
		t.Fatalf("the encoding served %d fetches, want 1", n)
	}
	if _, err := client.Fetch(ctx, server.ID(), bytes.Repeat([]byte{1}, 32)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of a bundle not held: %v, want ErrNotFound", err)
	}
}

// twoSource holds two bundles, keyed by the first byte of the hash.
type twoSource struct{ fuzzSource }

func (twoSource) Held(hash []byte) *syncv1.HeldBundle {
	if len(hash) == 32 && hash[0] < 2 {
		return &syncv1.HeldBundle{Proof: bytes.Repeat([]byte{'a' + hash[0]}, 8<<10)}
	}
	return nil
}

// TestFetchedBundlesDoNotShareTheReadBuffer: answers are read into a reused buffer; a
// bundle fetched first must not change when the next one is read.
func TestFetchedBundlesDoNotShareTheReadBuffer(t *testing.T) {
	server, client := fetchPair(t, twoSource{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Several rounds: a pooled buffer comes back to the goroutine's own processor only.
	var got []*syncv1.HeldBundle
	for k := range 20 {
		hash := make([]byte, 32)
		hash[0] = byte(k % 2)
		hb, err := client.Fetch(ctx, server.ID(), hash)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, hb)
	}
	for k, hb := range got {
		if want := bytes.Repeat([]byte{'a' + byte(k%2)}, 8<<10); !bytes.Equal(hb.GetProof(), want) {
			t.Fatalf("fetch %d changed after the next ones: starts %q", k, hb.GetProof()[:8])
		}
	}
}

// TestReadAnswerRefuses: an answer over the limit, cut short or malformed is refused with
// the reason.
func TestReadAnswerRefuses(t *testing.T) {
	n := &Node{cfg: Config{MaxFetchBytes: 100}}
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"over the limit", []byte{0xc8, 0x01}, "over the 100-byte limit"},
		{"empty", nil, "length prefix: EOF"},
		{"length prefix cut short", []byte{0x80}, "length prefix: unexpected EOF"},
		{"body cut short", []byte{10, 1, 2}, "unexpected EOF"},
		{"not a SyncResponse", []byte{2, 0xff, 0xff}, "proto"},
	} {
		err := n.readAnswer(bufio.NewReader(bytes.NewReader(c.in)), &syncv1.SyncResponse{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
		}
	}
}
