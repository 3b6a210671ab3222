package p2p

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// idontwantCounter counts the message IDs of IDONTWANT controls a plain gossipsub peer receives.
type idontwantCounter struct {
	NopTracer
	ids atomic.Int64
}

func (c *idontwantCounter) RecvRPC(rpc *pubsub.RPC) {
	for _, x := range rpc.GetControl().GetIdontwant() {
		c.ids.Add(int64(len(x.GetMessageIDs())))
	}
}

// TestIDontWantOnlyForLargeMessages: an agent relaying a bundle sends IDONTWANT to the rest
// of its mesh only when the message is at least IDontWantAbove (see GossipParams). A plain
// gossipsub peer in the relay's mesh counts what it is told.
func TestIDontWantOnlyForLargeMessages(t *testing.T) {
	mn := mocknet.New()
	defer mn.Close()
	var nodes [2]*Node // src publishes; mid relays to obs
	for i := range nodes {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if nodes[i], err = New(context.Background(), Config{Domain: "prod", Host: h, Validator: acceptAll{}, Source: acceptAll{}}); err != nil {
			t.Fatal(err)
		}
		defer nodes[i].Close()
	}
	src, mid := nodes[0], nodes[1]
	oh, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	counter := &idontwantCounter{}
	ops, err := pubsub.NewGossipSub(ctx, oh, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID), pubsub.WithRawTracer(counter))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ops.Join(BundlesTopic("prod"))
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	// src and the observer are not linked: the observer hears the bundle only from mid.
	for _, h := range []peer.ID{src.ID(), oh.ID()} {
		if _, err := mn.LinkPeers(mid.ID(), h); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []peer.ID{src.ID(), oh.ID()} {
		if err := mid.Host().Connect(ctx, peer.AddrInfo{ID: h, Addrs: mn.Host(h).Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "mid meshes with src and the observer", func() bool { return len(mid.MeshPeers()) == 2 })

	for _, tc := range []struct {
		size int
		want bool
	}{{4 << 10, false}, {16 << 10, false}, {IDontWantAbove, true}} {
		before := counter.ids.Load()
		data := bytes.Repeat([]byte{byte(tc.size >> 10)}, tc.size)
		if err := src.Publish(ctx, data); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := sub.Next(rctx)
		rcancel()
		if err != nil || !bytes.Equal(m.Data, data) {
			t.Fatalf("%d B: the observer did not receive the message: %v", tc.size, err)
		}
		// Preprocess queues a message's IDONTWANTs before the message is forwarded, on the
		// same stream: by the time the observer holds the message it has them too.
		if got := counter.ids.Load() - before; (got > 0) != tc.want {
			t.Errorf("%d B message: observer received %d IDONTWANT IDs; want some: %v", tc.size, got, tc.want)
		}
	}
}
