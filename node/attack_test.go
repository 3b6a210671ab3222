package node_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// TestMaliciousPeerIsRefusedAndGraylisted: a peer running plain gossipsub (no validator)
// injects forged, tampered, replayed, rolled-back, cross-domain, expired and oversized
// messages into agent A. A applies none and forwards none (agent B, reachable only
// through A, never sees them), keeps serving its bundle, and A's score of the attacker
// falls below the graylist threshold.
func TestMaliciousPeerIsRefusedAndGraylisted(t *testing.T) {
	d := newDomain(t, "prod")
	// Only gossip delivers (no periodic sync, no new connections after the start), so
	// every agent has relayed v3 once and a further copy of it is a replay.
	m := newMeshWith(t, d, 2, func(c *node.Config, tu *tuning.Replica) {
		c.SyncInterval = time.Hour
		tu.P2P = func(p *p2p.Config) { p.MaintainInterval = time.Hour; p.ScoreInspectInterval = 100 * time.Millisecond }
	})
	m.waitMesh()
	p1, p2, p3 := d.payload(t, 1, 3), d.payload(t, 2, 4), d.payload(t, 3, 5)
	v1 := m.seed.offer(t, d, 1, p1)
	m.seed.publish(t, v1)
	waitVersion(t, 1, m.agents...)
	v2 := m.seed.offer(t, d, 2, p2)
	m.seed.publish(t, v2)
	waitVersion(t, 2, m.agents...)
	v3 := m.seed.offer(t, d, 3, p3)
	m.seed.publish(t, v3)
	waitVersion(t, 3, m.agents...)
	victim, bystander := m.agents[0], m.agents[1]
	// Cut the bystander from the seed: whatever reaches it now comes through the victim.
	_ = m.mn.UnlinkPeers(m.hosts[1].ID(), m.seed.node.ID())
	_ = m.mn.DisconnectPeers(m.hosts[1].ID(), m.seed.node.ID())

	other := newDomain(t, "staging")
	tampered := d.seal(t, trust.PayloadBundle, d.payload(t, 10, 3), d.seed)
	tampered[len(tampered)/2] ^= 0x40
	attacks := []struct {
		name, reason string
		msg          []byte
		penalised    bool
		// seen: the message carries signed content the victim has already seen, so
		// gossipsub's seen-cache drops it before validation however it is re-encoded
		// (message ids key on what was signed); it is refused nowhere and costs nothing.
		seen bool
	}{
		{"forged", "unknown_key", d.seal(t, trust.PayloadBundle, d.payload(t, 9, 3), d.strange), true, false},
		{"tampered", "bad_signature", tampered, true, false},
		{"replayed", "replay", reencode(t, v3), false, true},
		{"rolled-back", "rollback", reencode(t, v1), false, true},
		{"cross-domain", "unknown_key", other.seal(t, trust.PayloadBundle, other.payload(t, 12, 3), other.seed), true, false},
		{"expired", "expired", d.seal(t, trust.PayloadBundle, d.payloadAt(t, 11, t0.Add(-48*time.Hour), t0.Add(-24*time.Hour)), d.seed), true, false},
		{"oversized", "oversized", d.seal(t, trust.PayloadBundle, d.payload(t, 13, 1450), d.seed), true, false},
		{"garbage", "malformed", []byte("not an envelope at all"), true, false},
	}
	for i, at := range attacks {
		before := victim.Status().Rejected[at.reason]
		ah, topic := newAttacker(t, m, 0)
		if err := topic.Publish(context.Background(), at.msg, pubsub.WithReadiness(pubsub.MinTopicSize(1))); err != nil {
			t.Fatalf("%s: %v", at.name, err)
		}
		if at.seen {
			// The victim handles one peer's messages in order: once a later one from the
			// same attacker is refused, this one has been through the seen-cache.
			marker := []byte(fmt.Sprintf("garbage after %d", i))
			malformed := victim.Status().Rejected["malformed"]
			if err := topic.Publish(context.Background(), marker); err != nil {
				t.Fatal(err)
			}
			waitFor(t, at.name+": the marker after it refused", func() bool { return victim.Status().Rejected["malformed"] > malformed })
			if got := victim.Status().Rejected[at.reason]; got != before {
				t.Fatalf("%s reached validation (%s count %d → %d): the seen-cache should have dropped it", at.name, at.reason, before, got)
			}
			t.Logf("%-12s dropped by the seen-cache before validation", at.name)
			continue
		}
		waitFor(t, at.name+" refused by the victim", func() bool { return victim.Status().Rejected[at.reason] > before })
		if at.penalised {
			waitFor(t, at.name+": attacker graylisted", func() bool { return victim.Node().Scores()[ah.ID()] < p2p.GraylistThreshold })
		}
		t.Logf("%-12s refused (%s); attacker score %.1f", at.name, at.reason, victim.Node().Scores()[ah.ID()])
	}
	for i, a := range m.agents {
		b, ok := a.Current()
		if !ok || b.Version != 3 || b.Hash != trust.Digest(bundle.Hash(p3)) {
			t.Fatalf("agent %d serves v%d %s after the attacks, want v3 %s", i, b.Version, b.Hash, bundle.Hash(p3))
		}
	}
	if r := bystander.Status().Rejected; len(r) != 0 {
		t.Fatalf("the bystander refused %v: the victim forwarded attack messages", r)
	}
}

// newAttacker is a host running plain gossipsub, without validation, connected to agent i.
func newAttacker(t *testing.T, m *mesh, i int) (host.Host, *pubsub.Topic) {
	t.Helper()
	ah, err := m.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.mn.LinkPeers(ah.ID(), m.hosts[i].ID()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr := &peerTracer{added: make(chan peer.ID, 16)}
	aps, err := pubsub.NewGossipSub(ctx, ah, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pb.Message) string { return string(m.Data) }), pubsub.WithRawTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := aps.Join(p2p.BundlesTopic(m.d.name))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	if err := ah.Connect(ctx, peer.AddrInfo{ID: m.hosts[i].ID(), Addrs: m.hosts[i].Addrs()}); err != nil {
		t.Fatal(err)
	}
	// Publishing before the router has an outbound stream to the victim loses the
	// message; once the victim is in the attacker's mesh, it has one.
	select {
	case <-tr.added:
	case <-time.After(20 * time.Second):
		t.Fatal("the victim never joined the attacker's mesh")
	}
	waitFor(t, "attacker joined the victim's topic", func() bool { return slices.Contains(topic.ListPeers(), m.hosts[i].ID()) })
	return ah, topic
}

// peerTracer reports when a peer joins the attacker's mesh.
type peerTracer struct {
	p2p.NopTracer
	added chan peer.ID
}

func (p *peerTracer) Graft(id peer.ID, _ string) {
	select {
	case p.added <- id:
	default:
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reencode returns env with a different encoding but the same signed content.
func reencode(t *testing.T, env []byte) []byte {
	t.Helper()
	e, err := trust.DecodeEnvelope(env, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.Signatures = append(e.Signatures, e.Signatures[0])
	b, err := trust.MarshalEnvelope(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (d *domain) payloadAt(t testing.TB, version uint64, issued, expires time.Time) []byte {
	t.Helper()
	b, err := bundle.DecodeBundle(d.payload(t, version, 3))
	if err != nil {
		t.Fatal(err)
	}
	b.Header.IssuedAt, b.Header.ExpiresAt = timestamppb.New(issued), timestamppb.New(expires)
	p, err := bundle.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBridgeCannotWipeOrLockOutTheDomain: a bridge delegated namespace "edge" signs a
// snapshot of its namespace alone at a far higher (epoch, version) than the seed's. Agents
// hold and relay it as the bridge's own stream, but keep serving the seed's bundle whole,
// and the seed's next version is still accepted, not refused as a rollback. The agent
// holds the two signed sources of its domain apart, through a restart too.
func TestBridgeCannotWipeOrLockOutTheDomain(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 2, func(c *node.Config, tu *tuning.Replica) { c.SyncInterval = time.Hour })
	m.waitMesh()
	p1 := d.payload(t, 1, 3)
	m.seed.publish(t, m.seed.offer(t, d, 1, p1))
	waitVersion(t, 1, m.agents...)

	wipe := &bundlev1.Bundle{
		Header: &bundlev1.BundleHeader{SchemaVersion: 1, Domain: d.name, Epoch: 900, Version: 999_999,
			IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(24 * time.Hour))},
		Clusters: []*bundlev1.Cluster{{Metadata: &bundlev1.Metadata{Name: "edge", Namespace: "edge"}, Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.9.9.9", Port: 80}}}}},
	}
	bundle.Canonicalize(wipe)
	wp, err := bundle.Encode(wipe)
	if err != nil {
		t.Fatal(err)
	}
	m.seed.publish(t, d.seal(t, trust.PayloadBundle, wp, d.bridge))
	for i, a := range m.agents {
		waitFor(t, "the bridge's stream", func() bool {
			return slices.ContainsFunc(a.Status().Held, func(h node.HeadStatus) bool { return h.Variant == "bridge/edge|" && h.Version == 999_999 })
		})
		b, _ := a.Current()
		if b.Version != 1 || !bytes.Equal(b.Payload, p1) {
			t.Fatalf("agent %d serves version %d (%d bytes) after the bridge's snapshot, want the seed's v1 whole", i, b.Version, len(b.Payload))
		}
	}
	p2 := d.payload(t, 2, 4)
	m.seed.publish(t, m.seed.offer(t, d, 2, p2))
	waitVersion(t, 2, m.agents...)

	// Both signed sources survive a restart, each from its own last-known-good files.
	if err := m.agents[0].Close(); err != nil {
		t.Fatal(err)
	}
	a := m.start(0, []peer.AddrInfo{m.seedInfo()})
	held := map[string]uint64{}
	for _, h := range a.Status().Held {
		if h.FromLKG {
			held[h.Variant] = h.Version
		}
	}
	if held[""] != 2 || held["bridge/edge|"] != 999_999 {
		t.Fatalf("after a restart the agent holds %v from its LKG, want the seeds' v2 and the bridge's v999999", held)
	}
	if b, _ := a.Current(); b.Version != 2 || !bytes.Equal(b.Payload, p2) {
		t.Fatalf("after a restart the agent serves v%d, want the seeds' v2", b.Version)
	}
}
