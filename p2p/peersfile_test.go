package p2p

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// TestPeersFileRedialsTheOldPeersAtStart: a node saves the peers of the domain it was
// connected to when it closes; a node started on that file, with no bootstrap peer and
// well above nothing to trigger a dial, connects to them at once. A damaged file is
// ignored.
func TestPeersFileRedialsTheOldPeersAtStart(t *testing.T) {
	mn, err := mocknet.FullMeshLinked(3)
	if err != nil {
		t.Fatal(err)
	}
	defer mn.Close()
	hs := mn.Hosts()
	file := filepath.Join(t.TempDir(), "peers.json")
	cfg := func(i int) Config {
		return Config{Domain: "prod", Host: hs[i], Validator: acceptAll{}, Source: acceptAll{}, TargetPeers: 1,
			MaintainInterval: 20 * time.Millisecond, RedialFirst: time.Hour, RedialMax: time.Hour}
	}
	b, err := New(context.Background(), cfg(1))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ac := cfg(0)
	ac.PeersFile = file
	a, err := New(context.Background(), ac)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mn.ConnectPeers(hs[0].ID(), hs[1].ID()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a knows b speaks sync", func() bool {
		ok, _ := hs[0].Peerstore().SupportsProtocols(hs[1].ID(), SyncProtocol("prod"))
		return len(ok) > 0
	})
	_ = a.Close() // saves b
	if err := mn.DisconnectPeers(hs[0].ID(), hs[1].ID()); err != nil {
		t.Fatal(err)
	}

	// c starts on a's file: it has never met b, no bootstrap peer, nothing else to dial.
	cc := cfg(2)
	cc.PeersFile = file
	c, err := New(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, "c dialling b from the peers file", func() bool {
		return hs[2].Network().Connectedness(hs[1].ID()) == network.Connected
	})

	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	dc := cfg(0)
	dc.PeersFile = file
	d, err := New(context.Background(), dc)
	if err != nil {
		t.Fatalf("a damaged peers file stopped the node: %v", err)
	}
	_ = d.Close()
}
