package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

type acceptAll struct{}

func (acceptAll) Validate(context.Context, Message) Verdict { return Accept }
func (acceptAll) Heads() []*syncv1.Head                     { return nil }
func (acceptAll) Held([]byte) *syncv1.HeldBundle            { return nil }

// TestLostPeerBackRedialsTheOthers: when one lost peer comes back, the node redials its
// other lost peers at once instead of when their backoff ends (an hour here). A node that
// and whose peers keep two connections throughout stay at their peer target (no peer
// exchange, no dialling of known peers), so only lost-peer redials can bring c back.
func TestLostPeerBackRedialsTheOthers(t *testing.T) {
	mn, err := mocknet.FullMeshLinked(5)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts()
	a, b, c := hs[0], hs[1], hs[2]
	var nodes []*Node
	for _, h := range hs {
		n, err := New(context.Background(), Config{Domain: "prod", Host: h, Validator: acceptAll{}, Source: acceptAll{},
			TargetPeers: 2, MaintainInterval: 20 * time.Millisecond, RedialFirst: time.Hour, RedialMax: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	na := nodes[0]
	if err := mn.ConnectAllButSelf(); err != nil { // everyone keeps two peers after the cut
		t.Fatal(err)
	}
	waitUntil(t, "a knows b and c speak sync", func() bool {
		for _, h := range []host.Host{b, c} {
			if ok, _ := a.Peerstore().SupportsProtocols(h.ID(), SyncProtocol("prod")); len(ok) == 0 {
				return false
			}
		}
		return true
	})
	for _, h := range []host.Host{b, c} {
		if err := mn.UnlinkPeers(a.ID(), h.ID()); err != nil {
			t.Fatal(err)
		}
		if err := mn.DisconnectPeers(a.ID(), h.ID()); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "b and c lost", func() bool {
		na.lostMu.Lock()
		defer na.lostMu.Unlock()
		return na.lost[b.ID()] != nil && na.lost[c.ID()] != nil
	})
	for _, h := range []host.Host{b, c} {
		if _, err := mn.LinkPeers(a.ID(), h.ID()); err != nil {
			t.Fatal(err)
		}
	}
	// b's own redial succeeds: a learns the partition has healed.
	if err := b.Connect(context.Background(), peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a redials c", func() bool { return a.Network().Connectedness(c.ID()) == network.Connected })
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
