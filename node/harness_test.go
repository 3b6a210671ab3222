package node_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/memnet"
	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// t0 is the fixtures' time.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a clock whose Now the tests set (bundles expire, staleness sets in) while
// its timers run in real time.
type fakeClock struct {
	clockwork.Clock
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// domain is a trust domain with a root and a seed key, and a clock.
type domain struct {
	name                   string
	rootKey, seed, strange *trust.PrivateKey
	// bridge is the key of bridge "edge", delegated namespace "edge" by the root.
	bridge    *trust.PrivateKey
	root      *trust.Root
	rootBytes []byte
	clock     *fakeClock
}

func mustKey(t testing.TB) *trust.PrivateKey {
	t.Helper()
	k, err := trust.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newDomain(t testing.TB, name string) *domain {
	t.Helper()
	return newDomainWith(t, name, mustKey(t), mustKey(t), mustKey(t))
}

// newDomainFrom derives the domain's keys from seed, so signed fixtures are reproducible
// (fuzz corpora).
func newDomainFrom(t testing.TB, name string, seed byte) *domain {
	t.Helper()
	key := func(i byte) *trust.PrivateKey {
		k, err := trust.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{seed, i}, 32)))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return newDomainWith(t, name, key(1), key(2), key(3))
}

func newDomainWith(t testing.TB, name string, rootKey, seedKey, strange *trust.PrivateKey) *domain {
	t.Helper()
	d := &domain{name: name, rootKey: rootKey, seed: seedKey, strange: strange, bridge: mustKey(t), clock: &fakeClock{Clock: clockwork.NewRealClock(), now: t0}}
	msg, err := trust.BuildRoot(trust.RootSpec{
		Domain: name, Version: 1, IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(365 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{d.rootKey.Public()}, RootThreshold: 1,
		SeedKeys: []trust.PublicKey{d.seed.Public()}, SeedThreshold: 1,
		Bridges: []trust.BridgeSpec{{Name: "edge", Keys: []trust.PublicKey{d.bridge.Public()}, Threshold: 1, Namespaces: []string{"edge"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Sign(env, d.rootKey); err != nil {
		t.Fatal(err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	d.rootBytes = b
	if d.root, err = trust.VerifyRoot(b); err != nil {
		t.Fatal(err)
	}
	return d
}

// payload encodes version of the domain's bundle with n routes (about 60 bytes each).
func (d *domain) payload(t testing.TB, version uint64, n int) []byte {
	t.Helper()
	b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{
		SchemaVersion: 1, Domain: d.name, Epoch: 1, Version: version,
		IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(24 * time.Hour)),
	}}
	b.Clusters = []*bundlev1.Cluster{{Metadata: &bundlev1.Metadata{Name: "api", Namespace: "shop"}, Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 80}}}}}
	for i := range n {
		b.Routes = append(b.Routes, &bundlev1.Route{
			Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("r%05d", i), Namespace: "shop"},
			Spec:     &bundlev1.RouteSpec{Cluster: "api", Match: &bundlev1.RouteMatch{Hosts: []string{fmt.Sprintf("r%05d.shop.example", i)}}},
		})
	}
	bundle.Canonicalize(b)
	p, err := bundle.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (d *domain) seal(t testing.TB, payloadType string, payload []byte, signer trust.Signer) []byte {
	t.Helper()
	env := trust.NewEnvelope(payloadType, payload)
	if err := trust.Sign(env, signer); err != nil {
		t.Fatal(err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (d *domain) delta(t testing.TB, base, target []byte) []byte {
	t.Helper()
	dl, err := bundle.NewDelta(base, target)
	if err != nil {
		t.Fatal(err)
	}
	p, err := bundle.EncodeDelta(dl)
	if err != nil {
		t.Fatal(err)
	}
	return d.seal(t, trust.PayloadDelta, p, d.seed)
}

func (d *domain) announce(t testing.TB, payload []byte) []byte {
	t.Helper()
	view := &bundlev1.HeaderView{}
	if err := proto.Unmarshal(payload, view); err != nil {
		t.Fatal(err)
	}
	h := bundle.Hash(payload)
	a, err := proto.Marshal(&bundlev1.Announce{Header: view.GetHeader(), SnapshotHash: h[:], SnapshotSize: uint64(len(payload))})
	if err != nil {
		t.Fatal(err)
	}
	return d.seal(t, trust.PayloadAnnounce, a, d.seed)
}

// testSeed publishes signed envelopes and serves snapshots over sync, as the real seed's
// Gossip publisher does (node must not import seed; cmd/meshkit tests the real one).
type testSeed struct {
	node    *p2p.Node
	reports chan *syncv1.NodeReport
	mu      sync.Mutex
	held    map[trust.Digest]*syncv1.HeldBundle
	head    *syncv1.Head
}

func (s *testSeed) Validate(_ context.Context, m p2p.Message) p2p.Verdict {
	if m.Local {
		return p2p.Accept
	}
	return p2p.Ignore
}

func (s *testSeed) Heads() []*syncv1.Head {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head == nil {
		return nil
	}
	return []*syncv1.Head{s.head}
}

func (s *testSeed) Held(hash []byte) *syncv1.HeldBundle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[trust.Digest(hash)]
}

// offer makes a snapshot fetchable and the head of the seed.
func (s *testSeed) offer(t testing.TB, d *domain, version uint64, payload []byte) []byte {
	t.Helper()
	snap := d.seal(t, trust.PayloadBundle, payload, d.seed)
	h := bundle.Hash(payload)
	s.mu.Lock()
	s.held[trust.Digest(h)] = &syncv1.HeldBundle{Proof: snap}
	s.head = &syncv1.Head{Epoch: 1, Version: version, Hash: h[:], Size: uint64(len(payload))}
	s.mu.Unlock()
	return snap
}

func (s *testSeed) publish(t testing.TB, msg []byte) {
	t.Helper()
	if err := s.node.Publish(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// mesh is a mocknet with a test seed and agents.
type mesh struct {
	t      *testing.T
	d      *domain
	mn     mocknet.Mocknet
	seed   *testSeed
	hosts  []host.Host
	agents []*node.Agent
	dirs   []string
	tune   func(*node.Config, *tuning.Replica)
	// ghosts resets streams mocknet leaves alive on closed connections (package memnet).
	ghosts memnet.Reaper
}

func fastP2P(c *p2p.Config) {
	c.MaintainInterval = 200 * time.Millisecond
	c.ScoreInspectInterval = 100 * time.Millisecond
}

func newMesh(t *testing.T, d *domain, agents int) *mesh {
	t.Helper()
	return newMeshWith(t, d, agents, nil)
}

// newMeshWith starts agents with tune applied to each agent's configuration.
func newMeshWith(t *testing.T, d *domain, agents int, tune func(*node.Config, *tuning.Replica)) *mesh {
	t.Helper()
	m := &mesh{t: t, d: d, mn: mocknet.New(), tune: tune}
	t.Cleanup(func() { _ = m.mn.Close() })
	reapCtx, stopReaping := context.WithCancel(context.Background())
	var reaper sync.WaitGroup
	reaper.Go(func() { m.ghosts.Run(reapCtx, 100*time.Millisecond) })
	t.Cleanup(func() { stopReaping(); reaper.Wait() })
	sh, err := m.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	m.ghosts.Watch(sh)
	m.seed = &testSeed{held: map[trust.Digest]*syncv1.HeldBundle{}, reports: make(chan *syncv1.NodeReport, 64)}
	cfg := p2p.Config{Domain: d.name, Host: sh, Role: p2p.RoleSeed, Validator: m.seed, Source: m.seed,
		OnReport: func(_ peer.ID, r *syncv1.NodeReport) {
			select {
			case m.seed.reports <- r:
			default:
			}
		}}
	fastP2P(&cfg)
	if m.seed.node, err = p2p.New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.seed.node.Close() })
	for range agents {
		h, err := m.mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		m.ghosts.Watch(h)
		m.hosts = append(m.hosts, h)
		m.dirs = append(m.dirs, t.TempDir())
	}
	if err := m.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	for i := range agents {
		m.agents = append(m.agents, m.start(i, []peer.AddrInfo{m.seedInfo()}))
	}
	return m
}

func (m *mesh) seedInfo() peer.AddrInfo {
	h := m.seed.node.Host()
	return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
}

func (m *mesh) start(i int, bootstrap []peer.AddrInfo) *node.Agent {
	m.t.Helper()
	cfg := node.Config{
		Root: m.d.root, DataDir: m.dirs[i], Host: m.hosts[i], Bootstrap: bootstrap, Clock: m.d.clock,
		SyncInterval: 500 * time.Millisecond, CheckInterval: 50 * time.Millisecond,
	}
	tu := tuning.Replica{P2P: fastP2P}
	if m.tune != nil {
		m.tune(&cfg, &tu)
	}
	a, err := node.New(context.Background(), cfg, tu)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = a.Close() })
	return a
}

// waitVersion waits until every agent given serves version.
func waitVersion(t *testing.T, version uint64, agents ...*node.Agent) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for i, a := range agents {
		for {
			ch := a.Changed()
			if b, ok := a.Current(); ok && b.Version >= version {
				break
			}
			select {
			case <-ch:
			case <-time.After(100 * time.Millisecond):
			case <-deadline:
				b, _ := a.Current()
				t.Fatalf("agent %d serves version %d after 20s, want %d (status %+v)", i, b.Version, version, a.Status())
			}
		}
	}
}

// waitMesh waits until the seed knows subscribers and every agent has a gossip mesh.
func (m *mesh) waitMesh() {
	m.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := len(m.seed.node.TopicPeers()) > 0 // a seed publishes without a mesh
		for _, a := range m.agents {
			ok = ok && len(a.Node().MeshPeers()) > 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatal("no gossip mesh after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
