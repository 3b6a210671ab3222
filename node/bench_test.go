package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// BenchmarkPropagation measures publish → every agent holds the verified bundle, for 200
// agents in one process over go-libp2p mocknet links of 20 ms, every agent bootstrapped
// through the seed and linked to 8 random agents. Per publish it reports the p50 and p99
// over agents, and (over the run) the seed's upload and each agent's download per bundle
// as multiples of the bundle size. Each b.N iteration is one publish; run with
// -benchtime=20x for the README's figures:
//
//	go test ./node -run '^$' -bench Propagation -benchtime 20x
func BenchmarkPropagation(b *testing.B) {
	for _, tc := range []struct {
		name   string
		routes int // about 48 bytes each
	}{
		{"4KiB", 80},
		{"128KiB", 2700},
	} {
		b.Run(fmt.Sprintf("agents=200/bundle=%s", tc.name), func(b *testing.B) {
			benchPropagation(b, 200, tc.routes, 20*time.Millisecond)
		})
	}
}

func benchPropagation(b *testing.B, agents, routes int, latency time.Duration) {
	d := newDomain(b, "prod")
	clock := &fakeClock{Clock: clockwork.NewRealClock(), now: t0}
	mn := mocknet.New()
	defer mn.Close()
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: latency})
	sh, err := mn.GenPeer()
	if err != nil {
		b.Fatal(err)
	}
	hosts := make([]host.Host, agents)
	for i := range hosts {
		if hosts[i], err = mn.GenPeer(); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, h := range hosts {
		if _, err := mn.LinkPeers(sh.ID(), h.ID()); err != nil {
			b.Fatal(err)
		}
		for range 4 { // ~8 agent links each, both directions counted
			j := rng.IntN(agents)
			if j != i && len(mn.LinksBetweenPeers(h.ID(), hosts[j].ID())) == 0 {
				if _, err := mn.LinkPeers(h.ID(), hosts[j].ID()); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	seed := &testSeed{held: map[trust.Digest]*syncv1.HeldBundle{}}
	if seed.node, err = p2p.New(context.Background(), p2p.Config{Domain: "prod", Host: sh, Role: p2p.RoleSeed, Validator: seed, Source: seed}); err != nil {
		b.Fatal(err)
	}
	defer seed.node.Close()
	seedInfo := peer.AddrInfo{ID: sh.ID(), Addrs: sh.Addrs()}
	as := make([]*node.Agent, agents)
	for i, h := range hosts {
		// Every agent bootstraps through the seed and knows its linked agents.
		boot := []peer.AddrInfo{seedInfo}
		for _, p := range mn.Peers() {
			if p != h.ID() && p != sh.ID() && len(mn.LinksBetweenPeers(h.ID(), p)) > 0 {
				boot = append(boot, peer.AddrInfo{ID: p, Addrs: mn.Host(p).Addrs()})
			}
		}
		if as[i], err = node.New(context.Background(), node.Config{
			Root: d.root, DataDir: benchDir(b), Host: h, Bootstrap: boot, Clock: clock,
			SyncInterval: time.Hour, // measure gossip, not anti-entropy
		}); err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		for _, a := range as {
			_ = a.Close()
		}
	}()
	// Let connections and meshes settle (gossipsub grafts on its 1 s heartbeat).
	deadline := time.Now().Add(60 * time.Second)
	for {
		ready := len(seed.node.TopicPeers()) >= 4 // a seed publishes without a mesh
		for _, a := range as {
			ready = ready && len(a.Node().MeshPeers()) >= 4
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("meshes did not form in 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)

	var p50s, p99s, all []float64
	var size int
	seedOut0 := seed.node.Traffic().BytesOut
	var in0 uint64
	for _, a := range as {
		in0 += a.Node().Traffic().BytesIn
	}
	b.ResetTimer()
	for i := range b.N {
		v := uint64(i + 1)
		payload := d.payload(b, v, routes)
		size = len(payload)
		snap := seed.offer(b, d, v, payload)
		msg := snap
		if len(snap) > 32<<10 {
			msg = d.announce(b, payload)
		}
		lat := make([]float64, agents)
		var wg sync.WaitGroup
		start := time.Now()
		for k, a := range as {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ch := a.Changed()
					if cur, ok := a.Current(); ok && cur.Version >= v {
						lat[k] = float64(time.Since(start).Microseconds()) / 1000
						return
					}
					select {
					case <-ch:
					case <-time.After(30 * time.Second):
						lat[k] = -1
						return
					}
				}
			}()
		}
		seed.publish(b, msg)
		wg.Wait()
		b.StopTimer()
		slices.Sort(lat)
		if lat[0] < 0 {
			b.Fatalf("publish %d: an agent did not get the bundle in 30 s", v)
		}
		all = append(all, lat...)
		p50s = append(p50s, lat[len(lat)/2])
		p99s = append(p99s, lat[len(lat)*99/100])
		time.Sleep(1500 * time.Millisecond) // let gossip (IHAVE/IWANT) traffic of this publish finish
		b.StartTimer()
	}
	b.StopTimer()
	var in1 uint64
	for _, a := range as {
		in1 += a.Node().Traffic().BytesIn
	}
	slices.Sort(p50s)
	slices.Sort(p99s)
	n := float64(b.N)
	b.ReportMetric(p50s[len(p50s)/2], "p50-ms")
	b.ReportMetric(p99s[len(p99s)/2], "p99-ms")       // median over publishes of the per-publish p99
	b.ReportMetric(p99s[len(p99s)-1], "worst-p99-ms") // the worst publish
	slices.Sort(all)
	b.ReportMetric(all[len(all)*99/100], "pooled-p99-ms") // over every (publish, agent) delivery
	b.ReportMetric(float64(seed.node.Traffic().BytesOut-seedOut0)/n/float64(size), "seed-upload-x")
	b.ReportMetric(float64(in1-in0)/n/float64(agents)/float64(size), "agent-recv-x")
	b.ReportMetric(float64(size), "bundle-bytes")
}

// benchDir is an agent's data directory: on /dev/shm when it exists, since 200 agents
// fsyncing one shared disk is no deployment's shape (each agent has its own host) and the
// queueing it causes would be measured as propagation latency. MESHKIT_BENCH_TMP=DIR puts
// them elsewhere, e.g. /tmp to include that cost.
func benchDir(b *testing.B) string {
	root := os.Getenv("MESHKIT_BENCH_TMP")
	if st, err := os.Stat("/dev/shm"); root == "" && err == nil && st.IsDir() {
		root = "/dev/shm"
	}
	if root != "" {
		dir, err := os.MkdirTemp(root, "agent")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}
