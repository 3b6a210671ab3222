package p2p_test

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protodelim"

	"meshkit.dev/meshkit/p2p"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

// certTable is an Admission whose certificates are "cert:PEERID": what matters here is
// what the node does with a peer that shows none or a wrong one.
type certTable struct{ self peer.ID }

func (c certTable) Certificate() [][]byte { return [][]byte{[]byte("cert:" + c.self.String())} }

func (c certTable) Verify(p peer.ID, chain [][]byte) (time.Time, error) {
	if len(chain) != 1 || string(chain[0]) != "cert:"+p.String() {
		return time.Time{}, fmt.Errorf("not %s's certificate", p)
	}
	return time.Now().Add(time.Hour), nil
}

// countingValidator accepts everything and counts what reaches it from peers.
type countingValidator struct{ seen atomic.Int64 }

func (v *countingValidator) Validate(_ context.Context, m p2p.Message) p2p.Verdict {
	if !m.Local {
		v.seen.Add(1)
	}
	return p2p.Accept
}
func (v *countingValidator) Heads() []*syncv1.Head          { return []*syncv1.Head{{Version: 1}} }
func (v *countingValidator) Held([]byte) *syncv1.HeldBundle { return nil }

// TestOnlyCertifiedPeersJoinTheMesh: over real TCP, a plain go-libp2p peer that holds the
// domain's network secret but shows no certificate is never grafted into the mesh, its
// gossip never reaches the validator, and sync refuses it; a peer that shows its
// certificate is grafted and served.
func TestOnlyCertifiedPeersJoinTheMesh(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var nodes [2]*p2p.Node
	var validators [2]*countingValidator
	for i := range nodes {
		h := newHost(t, "prod", secret)
		validators[i] = &countingValidator{}
		n, err := p2p.New(ctx, p2p.Config{Domain: "prod", Host: h, Role: p2p.RoleAgent, Validator: validators[i], Source: validators[i],
			Admission: certTable{self: h.ID()}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		nodes[i] = n
	}
	a, b := nodes[0], nodes[1]
	x := newHost(t, "prod", secret) // a plain go-libp2p peer with the secret
	xps, err := pubsub.NewGossipSub(ctx, x, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor())
	if err != nil {
		t.Fatal(err)
	}
	xt, err := xps.Join(p2p.BundlesTopic("prod"))
	if err != nil {
		t.Fatal(err)
	}
	defer xt.Close()
	xsub, err := xt.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer xsub.Cancel()
	connect := func(from, to host.Host) {
		if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	connect(a.Host(), b.Host())
	connect(x, a.Host())
	connect(x, b.Host())

	waitFor(t, "a and b admit each other and mesh", func() bool {
		return a.Admitted(b.ID()) && b.Admitted(a.ID()) && slices.Contains(a.MeshPeers(), b.ID())
	})
	// x GRAFTs both at its heartbeats; give it several before looking.
	time.Sleep(3 * time.Second)
	for _, n := range nodes {
		if n.Admitted(x.ID()) || slices.Contains(n.MeshPeers(), x.ID()) {
			t.Fatalf("the peer without a certificate is admitted (%v) or in the mesh (%v)", n.Admitted(x.ID()), n.MeshPeers())
		}
	}
	if err := xt.Publish(ctx, []byte("from a peer without a certificate")); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, []byte("from a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b validates a's message", func() bool { return validators[1].seen.Load() >= 1 })
	time.Sleep(500 * time.Millisecond)
	if n := validators[0].seen.Load() + validators[1].seen.Load(); n != 1 {
		t.Fatalf("%d messages reached the validators; only a's should have", n)
	}

	// Sync: the certified peer is answered, the other is refused.
	if heads, err := b.Heads(ctx, a.ID()); err != nil || len(heads) != 1 {
		t.Fatalf("a certified peer's sync: %v, %v", heads, err)
	}
	s, err := x.NewStream(ctx, a.ID(), p2p.SyncProtocol("prod"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := protodelim.MarshalTo(s, &syncv1.SyncRequest{Op: &syncv1.SyncRequest_Heads{Heads: &syncv1.HeadsRequest{}}}); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	resp := &syncv1.SyncResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: 1 << 20}).UnmarshalFrom(bufio.NewReader(s), resp); err == nil {
		t.Fatalf("a peer without a certificate was answered: %v", resp)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
