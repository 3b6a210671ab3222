package p2p

import (
	"bytes"
	"context"
	"testing"

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
	held := &syncv1.HeldBundle{Proof: bytes.Repeat([]byte{7}, 64<<10)}
	enc, err := proto.Marshal(held)
	if err != nil {
		b.Fatal(err)
	}
	server, client := fetchPair(b, cachedSource{fuzzSource: fuzzSource{held: held}, encoded: enc})
	ctx := context.Background()
	hash := make([]byte, 32)
	b.SetBytes(int64(len(held.Proof)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := client.Fetch(ctx, server.ID(), hash)
		if err != nil {
			b.Fatal(err)
		}
		if len(got.Held.GetProof()) != len(held.Proof) {
			b.Fatalf("fetched %d bytes, want %d", len(got.Held.GetProof()), len(held.Proof))
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
