package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

// liar claims a head far above anything published and, asked for it, never answers.
type liar struct{ stall chan struct{} }

func (l *liar) Validate(context.Context, p2p.Message) p2p.Verdict { return p2p.Ignore }

func (l *liar) Heads() []*syncv1.Head {
	return []*syncv1.Head{{Epoch: 1, Version: 1_000_000, Hash: make([]byte, 32), Size: 4096}}
}

func (l *liar) Held([]byte) *syncv1.HeldBundle {
	<-l.stall
	return nil
}

// TestFalseHeadDoesNotStallSync: a peer claims a huge head and stalls when asked for it.
// Anti-entropy gives that fetch one bounded attempt, falls back to the seed for v1, and
// stops asking the liar first for a while, which /status shows.
func TestFalseHeadDoesNotStallSync(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 0, nil)
	l := &liar{stall: make(chan struct{})}
	a, liarID := agentBeside(t, d, m, l)
	t.Cleanup(func() { close(l.stall) }) // runs before the peer's Close: lets the stalled handler end

	// Published after the agent met both peers, so only a sync round can bring it.
	m.seed.offer(t, d, 1, d.payload(t, 1, 3))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.SyncOnce(ctx)
	if b, _ := a.Current(); b.Version != 1 {
		t.Fatalf("after a sync round with the liar and the seed the agent serves v%d, want the seed's v1 (status %+v)", b.Version, a.Status())
	}
	if !slices.Contains(a.Status().SyncBanned, liarID.String()) {
		t.Fatalf("the liar is not banned from sync: %v", a.Status().SyncBanned)
	}
}

// forgetful claims a head and, asked for it, answers at once that it no longer holds it,
// as an honest agent does when it moved on to a newer bundle between heads and fetch.
type forgetful struct{}

func (forgetful) Validate(context.Context, p2p.Message) p2p.Verdict { return p2p.Ignore }
func (forgetful) Heads() []*syncv1.Head {
	return []*syncv1.Head{{Epoch: 1, Version: 2, Hash: make([]byte, 32), Size: 4096}}
}
func (forgetful) Held([]byte) *syncv1.HeldBundle { return nil }

// TestNotHeldIsNoLie: a quick "not held" moves anti-entropy on to the next claim without
// banning the peer.
func TestNotHeldIsNoLie(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 0, nil)
	a, _ := agentBeside(t, d, m, forgetful{})
	m.seed.offer(t, d, 1, d.payload(t, 1, 3))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.SyncOnce(ctx)
	if b, _ := a.Current(); b.Version != 1 {
		t.Fatalf("the agent serves v%d, want the seed's v1", b.Version)
	}
	if banned := a.Status().SyncBanned; len(banned) != 0 {
		t.Fatalf("a peer that answered 'not held' was banned: %v", banned)
	}
}

// agentBeside starts an agent that bootstraps through m's seed and through a peer of the
// domain whose sync answers come from src, with periodic sync off, and waits until it has
// both peers.
func agentBeside(t *testing.T, d *domain, m *mesh, src interface {
	p2p.Validator
	p2p.Source
}) (*node.Agent, peer.ID) {
	t.Helper()
	ph, err := m.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	pn, err := p2p.New(context.Background(), p2p.Config{Domain: d.name, Host: ph, Validator: src, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pn.Close() })
	ah, err := m.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: t.TempDir(), Host: ah, Clock: d.clock, SyncInterval: time.Hour,
		Bootstrap: []peer.AddrInfo{m.seedInfo(), {ID: ph.ID(), Addrs: ph.Addrs()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	waitFor(t, "both peers", func() bool { return a.Status().Peers >= 2 })
	return a, ph.ID()
}
