package p2p

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// TestConnSetFollowsConnections: the set tracks connects and disconnects, and samples
// distinct connected peers without the excluded one.
func TestConnSetFollowsConnections(t *testing.T) {
	mn, err := mocknet.FullMeshLinked(12)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts()
	s := newConnSet()
	hs[0].Network().Notify(&notifyFuncs{s})
	for _, h := range hs[1:] {
		if err := hs[0].Connect(context.Background(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	if s.len() != 11 {
		t.Fatalf("len %d, want 11", s.len())
	}
	got := s.sample(5, hs[1].ID())
	seen := map[peer.ID]bool{}
	for _, p := range got {
		if p == hs[1].ID() || seen[p] {
			t.Fatalf("sample %v repeats or includes the excluded peer", got)
		}
		seen[p] = true
	}
	if len(got) != 5 {
		t.Fatalf("sample of 5 gave %d", len(got))
	}
	if all := s.sample(50, hs[2].ID()); len(all) != 10 {
		t.Fatalf("sample of all but one gave %d", len(all))
	}
	if err := hs[0].Network().ClosePeer(hs[3].ID()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the set drops the disconnected peer", func() bool { return s.len() == 10 }) // notifications are asynchronous
	for _, p := range s.sample(50, "") {
		if p == hs[3].ID() {
			t.Fatal("a disconnected peer is still sampled")
		}
	}
}

type notifyFuncs struct{ s *connSet }

func (n *notifyFuncs) Listen(network.Network, ma.Multiaddr)      {}
func (n *notifyFuncs) ListenClose(network.Network, ma.Multiaddr) {}
func (n *notifyFuncs) Connected(net network.Network, c network.Conn) {
	n.s.connected(net, c)
}
func (n *notifyFuncs) Disconnected(net network.Network, c network.Conn) {
	n.s.disconnected(net, c)
}
