package p2p

import (
	"bytes"
	"context"
	"flag"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/internal/fuzzcorpus"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

type fuzzSource struct{ held *syncv1.HeldBundle }

func (s fuzzSource) Validate(context.Context, Message) Verdict { return Ignore }
func (s fuzzSource) Heads() []*syncv1.Head {
	return []*syncv1.Head{{Version: 1, Hash: make([]byte, 32)}}
}
func (s fuzzSource) Held(hash []byte) *syncv1.HeldBundle {
	if string(hash) == string(make([]byte, 32)) {
		return s.held
	}
	return nil
}

func syncCorpus(t testing.TB) [][]byte {
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return [][]byte{
		enc(&syncv1.SyncRequest{Op: &syncv1.SyncRequest_Heads{Heads: &syncv1.HeadsRequest{}}}),
		enc(&syncv1.SyncRequest{Op: &syncv1.SyncRequest_Fetch{Fetch: &syncv1.FetchRequest{Hash: make([]byte, 32)}}}),
		enc(&syncv1.SyncRequest{Op: &syncv1.SyncRequest_Fetch{Fetch: &syncv1.FetchRequest{Hash: []byte{1}}}}),
		enc(&syncv1.SyncRequest{Op: &syncv1.SyncRequest_Peers{Peers: &syncv1.PeersRequest{Limit: 1 << 30}}}),
		enc(&syncv1.PeersResponse{Peers: []*syncv1.PeerAddrs{{Id: []byte("not a peer id"), Addrs: [][]byte{{4, 127, 0, 0, 1}}}}}),
		enc(&syncv1.SyncResponse{Result: &syncv1.SyncResponse_Bundle{Bundle: &syncv1.HeldBundle{Proof: []byte("proof"), Payload: []byte("payload")}}}),
		enc(&syncv1.SyncResponse{Result: &syncv1.SyncResponse_Bundle{Bundle: &syncv1.HeldBundle{Proof: []byte("proof")}}}),
		{},
	}
}

// FuzzSyncDecoders feeds the same bytes to what a node decodes from peers over sync: a
// request (which it answers), a peer-exchange answer (which it dials) and a fetch answer
// (which it aliases when canonical: then it must be what proto.Unmarshal reads, and its
// kept encoding what proto.Marshal writes).
func FuzzSyncDecoders(f *testing.F) {
	for _, in := range syncCorpus(f) {
		f.Add(in)
	}
	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		f.Fatal(err)
	}
	src := fuzzSource{held: &syncv1.HeldBundle{Proof: []byte("proof")}}
	n, err := New(context.Background(), Config{Domain: "prod", Host: h, Validator: src, Source: src})
	if err != nil {
		f.Fatal(err)
	}
	defer n.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &syncv1.SyncRequest{}
		if proto.Unmarshal(data, req) == nil {
			resp := n.answer(peer.ID("fuzz"), req)
			if resp.GetResult() == nil {
				t.Fatal("a request got no answer")
			}
			if f := req.GetFetch(); f != nil && resp.GetBundle() != nil && len(f.GetHash()) != 32 {
				t.Fatalf("fetch with a %d-byte hash was served", len(f.GetHash()))
			}
			if len(resp.GetPeers().GetPeers()) > maxExchangedPeers {
				t.Fatal("peer exchange answer over its bound")
			}
		}
		if f := aliasHeld(data); f != nil {
			resp := &syncv1.SyncResponse{}
			if err := proto.Unmarshal(data, resp); err != nil || !proto.Equal(resp.GetBundle(), f.Held) {
				t.Fatalf("aliased %v, proto.Unmarshal reads %v (%v)", f.Held, resp.GetBundle(), err)
			}
			if enc, err := proto.Marshal(f.Held); err != nil || !bytes.Equal(enc, f.Encoded) {
				t.Fatalf("kept encoding %x is not the bundle's %x", f.Encoded, enc)
			}
		}
		pr := &syncv1.PeersResponse{}
		if proto.Unmarshal(data, pr) == nil {
			for _, ai := range parsePeers(pr) {
				if ai.ID == "" || len(ai.Addrs) == 0 {
					t.Fatalf("parsed an undialable peer %v", ai)
				}
			}
		}
	})
}

func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzSyncDecoders": syncCorpus(t)}, *updateCorpus)
}
