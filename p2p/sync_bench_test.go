package p2p

import (
	"bytes"
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/proto"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

// BenchmarkFetch64KiB: one peer fetches a 64 KiB bundle from another over mocknet, as
// every agent does once per large publish (the announce path). B/op is what the serving
// and the fetching side allocate per fetch together: on the 1,000-agent simulation each
// fresh 64 KiB costs page faults, and that showed as a third of the CPU.
//
//	go test ./p2p -run '^$' -bench Fetch64KiB -benchmem -count 6
func BenchmarkFetch64KiB(b *testing.B) {
	mn := mocknet.New()
	b.Cleanup(func() { _ = mn.Close() })
	held := &syncv1.HeldBundle{Proof: bytes.Repeat([]byte{7}, 64<<10)}
	enc, err := proto.Marshal(held)
	if err != nil {
		b.Fatal(err)
	}
	src := cachedSource{fuzzSource: fuzzSource{held: held}, encoded: enc}
	var nodes [2]*Node
	for i := range nodes {
		h, err := mn.GenPeer()
		if err != nil {
			b.Fatal(err)
		}
		var s Source = fuzzSource{}
		if i == 0 {
			s = src
		}
		if nodes[i], err = New(context.Background(), Config{Domain: "prod", Host: h, Validator: fuzzSource{}, Source: s}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = nodes[i].Close() })
	}
	if err := mn.LinkAll(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := nodes[1].Host().Connect(ctx, peer.AddrInfo{ID: nodes[0].ID(), Addrs: nodes[0].Host().Addrs()}); err != nil {
		b.Fatal(err)
	}
	hash := make([]byte, 32)
	b.SetBytes(int64(len(held.Proof)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := nodes[1].Fetch(ctx, nodes[0].ID(), hash)
		if err != nil {
			b.Fatal(err)
		}
		if len(got.GetProof()) != len(held.Proof) {
			b.Fatalf("fetched %d bytes, want %d", len(got.GetProof()), len(held.Proof))
		}
	}
}

// cachedSource serves one bundle from an encoding made once, as the agent does.
type cachedSource struct {
	fuzzSource
	encoded []byte
}

func (s cachedSource) HeldEncoded(hash []byte) []byte {
	if s.Held(hash) == nil {
		return nil
	}
	return s.encoded
}
