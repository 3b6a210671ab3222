package node_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m,
		// libp2p's and gossipsub's process-wide helpers outlive any one host.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/host/resource-manager.(*resourceManager).background"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
	)
}

// TestBundlesReachEveryAgentInEveryForm: a snapshot, a delta and an announced (large)
// bundle each reach every agent, which ends up holding byte-identical, verified content.
//
// Periodic sync is off, and every agent connects to the seed and two other agents only:
// what arrives after the mesh formed arrived by gossip, relayed by agents.
func TestBundlesReachEveryAgentInEveryForm(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 8, func(c *node.Config, tu *tuning.Replica) {
		c.SyncInterval = time.Hour
		tu.P2P = func(p *p2p.Config) { p.MaintainInterval = time.Hour } // no new connections, so no sync
	})
	for i := range m.agents {
		for _, j := range []int{(i + 1) % len(m.agents), (i + 3) % len(m.agents)} {
			if err := m.hosts[i].Connect(context.Background(), peer.AddrInfo{ID: m.hosts[j].ID(), Addrs: m.hosts[j].Addrs()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.waitMesh()
	p1 := d.payload(t, 1, 3)
	m.seed.publish(t, m.seed.offer(t, d, 1, p1))
	waitVersion(t, 1, m.agents...)

	p2 := d.payload(t, 2, 4)
	m.seed.offer(t, d, 2, p2)
	m.seed.publish(t, d.delta(t, p1, p2))
	waitVersion(t, 2, m.agents...)
	checkHeldEncoded(t, m.agents, p2) // a delta's result: the delta's envelope and the bundle

	p3 := d.payload(t, 3, 2000) // ~94 KiB: above the 64 KiB gossip limit
	if len(p3) <= 64<<10 {
		t.Fatalf("fixture bundle is %d bytes; the test needs one above the gossip limit", len(p3))
	}
	m.seed.offer(t, d, 3, p3)
	m.seed.publish(t, d.announce(t, p3))
	waitVersion(t, 3, m.agents...)

	// Each new connection also starts a sync round, which can race gossip for a version;
	// most versions must still have arrived by gossip.
	var byGossip uint64
	for i, a := range m.agents {
		b, _ := a.Current()
		if b.Hash != trust.Digest(bundle.Hash(p3)) || string(b.Payload) != string(p3) {
			t.Fatalf("agent %d holds %s, want %s", i, b.Hash, bundle.Hash(p3))
		}
		st := a.Status()
		if st.Accepted["gossip"]+st.Accepted["sync"] != 3 || st.Accepted["gossip"] == 0 {
			t.Errorf("agent %d accepted %v; want three versions, some by gossip", i, st.Accepted)
		}
		byGossip += st.Accepted["gossip"]
	}
	if byGossip < uint64(2*len(m.agents)) {
		t.Errorf("%d of %d acceptances came by gossip", byGossip, 3*len(m.agents))
	}
	checkHeldEncoded(t, m.agents, p3) // a snapshot's envelope alone
}

// checkHeldEncoded: what every agent serves to a fetch from its cached encoding is the
// bundle it holds, and it serves nothing for a bundle it does not hold.
func checkHeldEncoded(t *testing.T, agents []*node.Agent, payload []byte) {
	t.Helper()
	h := bundle.Hash(payload)
	for i, a := range agents {
		want := a.Replica().Held(h[:])
		if want == nil {
			t.Fatalf("agent %d does not hold %x", i, h[:6])
		}
		got := &syncv1.HeldBundle{}
		if err := proto.Unmarshal(a.Replica().HeldEncoded(h[:]), got); err != nil || !proto.Equal(got, want) {
			t.Fatalf("agent %d serves proof %d B, payload %d B (%v); holds proof %d B, payload %d B",
				i, len(got.GetProof()), len(got.GetPayload()), err, len(want.GetProof()), len(want.GetPayload()))
		}
		other := bundle.Hash([]byte("not held"))
		if b := a.Replica().HeldEncoded(other[:]); b != nil {
			t.Fatalf("agent %d serves %d bytes for a bundle it does not hold", i, len(b))
		}
	}
}

// TestAgentServesLKGBeforeAnyPeer: restarted with no network at all, an agent serves the
// bundle it held (a delta's result, proved by the delta's signature) immediately.
func TestAgentServesLKGBeforeAnyPeer(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMesh(t, d, 2)
	p1, p2 := d.payload(t, 1, 3), d.payload(t, 2, 5)
	m.seed.publish(t, m.seed.offer(t, d, 1, p1))
	waitVersion(t, 1, m.agents...)
	m.seed.offer(t, d, 2, p2)
	m.seed.publish(t, d.delta(t, p1, p2))
	waitVersion(t, 2, m.agents...)
	if err := m.agents[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.mn.UnlinkPeers(m.hosts[0].ID(), m.seed.node.ID()); err != nil {
		t.Fatal(err)
	}
	_ = m.mn.UnlinkPeers(m.hosts[0].ID(), m.hosts[1].ID())

	h, err := m.mn.GenPeer() // a fresh host with no links: no peer can answer
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: m.dirs[0], Host: h, Clock: d.clock, Bootstrap: []peer.AddrInfo{m.seedInfo()}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, ok := a.Current()
	if !ok || b.Version != 2 || b.Hash != trust.Digest(bundle.Hash(p2)) {
		t.Fatalf("after restart serves v%d %s (ok=%v), want v2 %s", b.Version, b.Hash, ok, bundle.Hash(p2))
	}
	st := a.Status()
	if !st.Serving.FromLKG || st.Stale {
		t.Fatalf("status %+v: want serving from LKG, fresh", st)
	}
	rr := httptest.NewRecorder()
	a.Handler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rr.Code != http.StatusOK {
		t.Fatalf("/readyz = %d with an LKG held", rr.Code)
	}
}

// TestEmptyAgentSyncsSoon: an agent that joined before anything was published, and for
// which gossip has gone by, fetches the current bundle within seconds, not after a whole
// SyncInterval.
func TestEmptyAgentSyncsSoon(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 1, func(c *node.Config, tu *tuning.Replica) { c.SyncInterval = time.Hour })
	waitFor(t, "agent connected to the seed", func() bool { return m.agents[0].Status().Peers > 0 })
	m.seed.offer(t, d, 1, d.payload(t, 1, 3)) // held by the seed, never gossiped
	waitVersion(t, 1, m.agents...)
	if got := m.agents[0].Status().Accepted["sync"]; got != 1 {
		t.Fatalf("accepted by sync %d, want 1", got)
	}
}

// TestCorruptLKGIsNeverServed: a truncated newest file falls back to the previous copy;
// with both corrupt the agent serves nothing and says why.
func TestCorruptLKGIsNeverServed(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMesh(t, d, 1)
	p1, p2 := d.payload(t, 1, 3), d.payload(t, 2, 5)
	m.seed.publish(t, m.seed.offer(t, d, 1, p1))
	waitVersion(t, 1, m.agents...)
	// v1 must be on disk before v2 arrives, or the persister coalesces them into one write.
	waitFor(t, "v1 persisted", func() bool {
		files, _ := filepath.Glob(filepath.Join(m.dirs[0], "lkg", "*.bundle"))
		return len(files) == 1
	})
	m.seed.publish(t, m.seed.offer(t, d, 2, p2))
	waitVersion(t, 2, m.agents...)
	if err := m.agents[0].Close(); err != nil {
		t.Fatal(err)
	}
	// v1 went to slot 0 and v2 to slot 1: truncate the newest.
	files, _ := filepath.Glob(filepath.Join(m.dirs[0], "lkg", "*.bundle"))
	if len(files) != 2 || !strings.HasSuffix(files[1], ".1.bundle") {
		t.Fatalf("lkg files %v, want the two slots of one variant", files)
	}
	b, _ := os.ReadFile(files[1])
	if err := os.WriteFile(files[1], b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	restart := func(bootstrap ...peer.AddrInfo) *node.Agent {
		h, err := m.mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if len(bootstrap) > 0 {
			if _, err := m.mn.LinkPeers(h.ID(), bootstrap[0].ID); err != nil {
				t.Fatal(err)
			}
		}
		a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: m.dirs[0], Host: h, Clock: d.clock, Bootstrap: bootstrap})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		return a
	}
	a := restart()
	if b, ok := a.Current(); !ok || b.Version != 1 {
		t.Fatalf("with the newest copy truncated: serves v%d (ok=%v), want the previous v1", b.Version, ok)
	}
	_ = a.Close()

	// Restarted on v1 from slot 0, the agent fetches v2 from the seed again: the write must
	// go to the torn slot 1, never over slot 0, the only good copy while it is written.
	served, _ := os.ReadFile(files[0])
	a = restart(m.seedInfo())
	waitVersion(t, 2, a)
	_ = a.Close() // flushes the write
	if now, _ := os.ReadFile(files[0]); !bytes.Equal(now, served) {
		t.Fatal("the v2 write went over the slot the agent was serving v1 from")
	}
	a = restart()
	if b, ok := a.Current(); !ok || b.Version != 2 {
		t.Fatalf("after v2 was written again: serves v%d (ok=%v), want v2", b.Version, ok)
	}
	_ = a.Close()

	// Flip one byte of the signed content in both copies: signatures no longer verify.
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-3] ^= 0x01
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a = restart()
	if b, ok := a.Current(); ok {
		t.Fatalf("with both copies tampered the agent serves v%d", b.Version)
	}
	st := a.Status()
	if !st.Stale || !strings.Contains(st.StaleReason, "no bundle") {
		t.Fatalf("status %+v: want stale with no bundle", st)
	}
	rr := httptest.NewRecorder()
	a.Handler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rr.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with nothing held, want 503", rr.Code)
	}
}

// TestStalenessIsReportedOnceAndServingContinues: an expired bundle keeps being served,
// reported stale in status and metrics.
func TestStalenessIsReportedOnceAndServingContinues(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMesh(t, d, 1)
	m.seed.publish(t, m.seed.offer(t, d, 1, d.payload(t, 1, 3)))
	waitVersion(t, 1, m.agents...)
	a := m.agents[0]
	if st := a.Status(); st.Stale {
		t.Fatalf("fresh bundle reported stale: %s", st.StaleReason)
	}
	d.clock.Advance(2 * time.Hour) // past StaleAfter (1h), before expiry (24h)
	if st := a.Status(); !st.Stale || !strings.Contains(st.StaleReason, "no new bundle") {
		t.Fatalf("after 2h without a bundle: %+v", st)
	}
	d.clock.Advance(24 * time.Hour)
	st := a.Status()
	if !st.Stale || !strings.Contains(st.StaleReason, "expired") || st.Serving.Version != 1 {
		t.Fatalf("after expiry: %+v; want stale (expired) and still serving v1", st)
	}
	rr := httptest.NewRecorder()
	a.Handler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rr.Body.String(), "meshkit_agent_stale 1") || !strings.Contains(rr.Body.String(), "meshkit_agent_bundle_version 1") {
		t.Fatalf("metrics do not report stale v1:\n%s", rr.Body.String())
	}
}

// TestFailedLKGWriteIsRetried: the agent's LKG directory stops accepting writes. The agent
// keeps serving the bundle it accepted, says in /status, /readyz and its metrics that it
// is not persisting, and once the directory is back it writes the bundle by itself, with
// no new bundle to prompt it.
func TestFailedLKGWriteIsRetried(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMesh(t, d, 1)
	a, lkgDir := m.agents[0], filepath.Join(m.dirs[0], "lkg")
	if err := os.Rename(lkgDir, lkgDir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lkgDir, nil, 0o600); err != nil { // a file where the directory was
		t.Fatal(err)
	}
	p1 := d.payload(t, 1, 3)
	m.seed.publish(t, m.seed.offer(t, d, 1, p1))
	waitVersion(t, 1, a)
	waitFor(t, "a failed LKG write", func() bool { return a.Status().PersistErr != "" })
	get := func(path string) (int, string) {
		rr := httptest.NewRecorder()
		a.Handler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
		return rr.Code, rr.Body.String()
	}
	if code, body := get("/readyz"); code != http.StatusOK || !strings.Contains(body, `"persisting":false`) || !strings.Contains(body, "not a directory") {
		t.Fatalf("/readyz while writes fail = %d %s", code, body)
	}
	if _, body := get("/metrics"); !regexp.MustCompile(`meshkit_agent_lkg_write_failures_total [1-9]`).MatchString(body) {
		t.Fatalf("metrics do not count the failed write:\n%s", body)
	}
	if err := os.Remove(lkgDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lkgDir+".away", lkgDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried LKG write", func() bool { return a.Status().PersistErr == "" })
	if code, body := get("/readyz"); code != http.StatusOK || !strings.Contains(body, `"persisting":true`) {
		t.Fatalf("/readyz after the retry = %d %s", code, body)
	}
	files, _ := filepath.Glob(filepath.Join(lkgDir, "*.bundle"))
	var held bool
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, p1) {
			held = true
		}
	}
	if !held {
		t.Fatalf("no LKG file holds v1 after the retry (%v)", files)
	}
}
