package p2p

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
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
	f, err := client.Fetch(ctx, server.ID(), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	got := f.Held
	if !proto.Equal(got, want) {
		t.Fatalf("fetched proof %d B, payload %q; want proof %d B, payload %q", len(got.Proof), got.Payload, len(want.Proof), want.Payload)
	}
	if enc, _ := proto.Marshal(want); !bytes.Equal(f.Encoded, enc) {
		t.Fatalf("Encoded is %d bytes, not the bundle's encoding (%d bytes)", len(f.Encoded), len(enc))
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

// TestFetchedBundlesDoNotShareTheReadBuffer: a fetched bundle aliases the buffer its answer
// was read into, so that buffer must be its own: one fetched first must not change when
// the next ones are read.
func TestFetchedBundlesDoNotShareTheReadBuffer(t *testing.T) {
	server, client := fetchPair(t, twoSource{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*syncv1.HeldBundle
	for k := range 20 {
		hash := make([]byte, 32)
		hash[0] = byte(k % 2)
		f, err := client.Fetch(ctx, server.ID(), hash)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f.Held)
	}
	for k, hb := range got {
		if want := bytes.Repeat([]byte{'a' + byte(k%2)}, 8<<10); !bytes.Equal(hb.GetProof(), want) {
			t.Fatalf("fetch %d changed after the next ones: starts %q", k, hb.GetProof()[:8])
		}
	}
}

// TestAliasHeld: only an answer in exactly the canonical form of SyncResponse{bundle} is
// aliased (and its encoding kept); every other valid encoding is left to proto.Unmarshal,
// which reads the same bundle.
func TestAliasHeld(t *testing.T) {
	hb := &syncv1.HeldBundle{Proof: []byte("proof"), Payload: []byte("payload")}
	held, _ := proto.Marshal(hb)
	answer := func(held []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, syncResponseBundle, protowire.BytesType), held)
	}
	proof := protowire.AppendBytes(protowire.AppendTag(nil, heldProof, protowire.BytesType), hb.Proof)
	payload := protowire.AppendBytes(protowire.AppendTag(nil, heldPayload, protowire.BytesType), hb.Payload)
	emptyPayload := protowire.AppendBytes(protowire.AppendTag(nil, heldPayload, protowire.BytesType), nil)
	overlong := append(protowire.AppendTag(nil, heldProof, protowire.BytesType), 0x85, 0x00) // 5, in two bytes
	overlong = append(overlong, hb.Proof...)
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 1)

	f := aliasHeld(answer(held))
	if f == nil || !proto.Equal(f.Held, hb) || !bytes.Equal(f.Encoded, held) {
		t.Fatalf("canonical answer: %v", f)
	}
	f.Encoded[len(f.Encoded)-1] = '!' // aliased: the bundle is the answer's bytes
	if string(f.Held.Payload) != "payloa!" {
		t.Fatalf("payload %q does not alias the answer", f.Held.Payload)
	}
	for _, c := range []struct {
		name   string
		answer []byte
	}{
		{"payload before proof", answer(slices.Concat(payload, proof))},
		{"empty payload written", answer(slices.Concat(proof, emptyPayload))},
		{"overlong length", answer(overlong)},
		{"unknown field", answer(slices.Concat(proof, payload, unknown))},
		{"field after the bundle", slices.Concat(answer(held), unknown)},
		{"an error answer", protowire.AppendString(protowire.AppendTag(nil, 4, protowire.BytesType), "not held")},
	} {
		if f := aliasHeld(c.answer); f != nil {
			t.Errorf("%s: aliased, want it left to proto.Unmarshal", c.name)
		}
		if c.name == "an error answer" {
			continue
		}
		resp := &syncv1.SyncResponse{}
		if err := proto.Unmarshal(c.answer, resp); err != nil || !bytes.Equal(resp.GetBundle().GetProof(), hb.Proof) {
			t.Errorf("%s: proto.Unmarshal = %v, %v; the case must be a valid encoding of the bundle", c.name, resp, err)
		}
	}
}

// TestReadAnswerRefuses: an answer over the limit or cut short is refused with the reason.
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
	} {
		_, err := n.readAnswer(bufio.NewReader(bytes.NewReader(c.in)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
		}
	}
}

// stallingReader sends n bytes, then ends (as a peer that declared a large answer and
// stopped sending).
type stallingReader struct{ n int }

func (s *stallingReader) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), s.n)
	s.n -= k
	return k, nil
}

// TestAnswerMemoryFollowsWhatArrives: a peer declares a 60 MiB answer and sends 10 bytes.
// Reading it fails without allocating anywhere near what was declared; an honest answer
// larger than one chunk still arrives whole.
func TestAnswerMemoryFollowsWhatArrives(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := readBounded(&stallingReader{n: 10}, 60<<20); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated answer: %v, want ErrUnexpectedEOF", err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("reading 10 bytes of a declared 60 MiB answer allocated %d bytes", got)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), (3*answerChunk+5)/16)
	got, err := readBounded(iotest.OneByteReader(bytes.NewReader(want)), len(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("a %d-byte answer read one byte at a time: %d bytes, %v", len(want), len(got), err)
	}
}

// TestMessageIDIsWhatWasSigned: copies of one envelope resent with an unknown field, an
// extra signature or reordered signatures share its message id, so gossipsub's seen-cache
// drops them before validation; another payload or payload type is another message; bytes
// that are no envelope are keyed by themselves, apart from every envelope.
func TestMessageIDIsWhatWasSigned(t *testing.T) {
	sig := func(key string) *trustv1.Signature { return &trustv1.Signature{KeyId: key, Sig: []byte("sig-" + key)} }
	env := func(pt string, payload []byte, sigs ...*trustv1.Signature) []byte {
		b, err := proto.Marshal(&trustv1.Envelope{PayloadType: pt, Payload: payload, Signatures: sigs})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id := func(b []byte) string { return messageID(&pb.Message{Data: b}) }
	const bundleType = "application/vnd.meshkit.bundle.v1+protobuf"
	orig := env(bundleType, []byte("payload"), sig("a"))
	same := map[string][]byte{
		"unknown field appended": protowire.AppendBytes(protowire.AppendTag(slices.Clone(orig), 9, protowire.BytesType), []byte("junk")),
		"extra signature":        env(bundleType, []byte("payload"), sig("a"), sig("b")),
		"signatures reordered":   env(bundleType, []byte("payload"), sig("b"), sig("a")),
	}
	// A payload_type field before the real one: proto.Unmarshal keeps the last.
	twice := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "ignored/type")
	same["payload type sent twice"] = append(twice, orig...)
	for name, b := range same {
		if id(b) != id(orig) {
			t.Errorf("%s: a new message id for the same signed content", name)
		}
	}
	for name, b := range map[string][]byte{
		"another payload":      env(bundleType, []byte("payload2"), sig("a")),
		"another payload type": env("application/vnd.meshkit.delta.v1+protobuf", []byte("payload"), sig("a")),
		"no envelope":          []byte{0xff, 0xff, 0xff},
		"no payload":           env(bundleType, nil, sig("a")),
	} {
		if id(b) == id(orig) {
			t.Errorf("%s: shares the original's message id", name)
		}
	}
	if id([]byte{0xff}) == id([]byte{0xfe}) || !strings.HasPrefix(id([]byte{0xff}), "r") || !strings.HasPrefix(id(orig), "s") {
		t.Error("unparseable bytes are not keyed by their own bytes, apart from envelopes")
	}
}
