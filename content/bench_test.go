package content

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// BenchmarkArtifactSpread: a 10 MiB artifact reaches 100 agents over mocknet links of
// 20 ms and 50 MB/s, each agent connected to 8 others and to the seed, all starting at
// once (as when a bundle referencing it arrives).
//
//   - p2p: agents fetch from one another, the seed only when no peer has it (after a
//     jittered 0-4 s) and one agent at a time, as agents and seeds do.
//   - hub: every agent pulls from the seed, as from a central registry.
//
// Reported: seed egress in MiB and ×artifact, and the time until all agents hold it
// (median and slowest). mocknet shapes each link, not a node's uplink, so the hub's
// time is optimistic: a real seed's uplink would be shared by all 100 transfers.
func BenchmarkArtifactSpread(b *testing.B) {
	const agents, size = 100, 10 << 20
	for _, mode := range []string{"p2p", "hub"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				egress, times := spread(b, mode, agents, size)
				sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
				b.ReportMetric(float64(egress)/(1<<20), "seed-MiB")
				b.ReportMetric(float64(egress)/size, "seed-x")
				b.ReportMetric(times[len(times)/2].Seconds(), "p50-s")
				b.ReportMetric(times[len(times)-1].Seconds(), "all-s")
			}
		})
	}
}

func spread(b *testing.B, mode string, agents, size int) (int64, []time.Duration) {
	b.StopTimer()
	mn := mocknet.New()
	defer mn.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	dir := os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir = "/dev/shm"
	}
	base, err := os.MkdirTemp(dir, "spread-*")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(base)
	blob := make([]byte, size)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	stores := make([]*Store, agents+1)
	for i := range stores {
		if _, err := mn.GenPeer(); err != nil {
			b.Fatal(err)
		}
		if stores[i], err = Open(fmt.Sprintf("%s/%d", base, i), Options{}); err != nil {
			b.Fatal(err)
		}
	}
	hs := mn.Hosts()
	if err := mn.LinkAll(); err != nil {
		b.Fatal(err)
	}
	for i := range hs {
		for j := i + 1; j < len(hs); j++ {
			for _, l := range mn.LinksBetweenPeers(hs[i].ID(), hs[j].ID()) {
				l.SetOptions(mocknet.LinkOptions{Latency: 20 * time.Millisecond, Bandwidth: 50 << 20})
			}
		}
	}
	c, err := stores[0].PutBytes(ctx, blob)
	if err != nil {
		b.Fatal(err)
	}
	seedLimit := SeedSlots
	if mode == "hub" {
		seedLimit = 0
	}
	seed := Serve(hs[0], "bench", stores[0], ServerConfig{MaxConcurrent: seedLimit})
	defer seed.Close()
	for i := 1; i <= agents; i++ {
		defer Serve(hs[i], "bench", stores[i], ServerConfig{}).Close()
		if err := connect(ctx, hs[i], hs[0]); err != nil {
			b.Fatal(err)
		}
		for range 4 { // about 8 agent peers each, counting both directions
			j := 1 + rng.IntN(agents)
			if j != i {
				_ = connect(ctx, hs[i], hs[j])
			}
		}
	}
	b.StartTimer()
	times := make([]time.Duration, agents)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 1; i <= agents; i++ {
		wg.Go(func() {
			f := NewFetcher(hs[i], "bench", stores[i], FetchConfig{})
			src := Sources{Fallback: []peer.ID{hs[0].ID()}}
			src.Peers = func() []peer.ID {
				var out []peer.ID
				for _, p := range hs[i].Network().Peers() {
					if p != hs[0].ID() {
						out = append(out, p)
					}
				}
				return out
			}
			if mode == "hub" {
				src = Sources{Peers: func() []peer.ID { return []peer.ID{hs[0].ID()} }}
			}
			fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			if err := f.Fetch(fctx, c, int64(size), src); err != nil {
				b.Error(err)
			}
			times[i-1] = time.Since(start)
		})
	}
	wg.Wait()
	b.StopTimer()
	defer b.StartTimer()
	return seed.ServedBytes(), times
}

func connect(ctx context.Context, a, b host.Host) error {
	return a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()})
}
