package node_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
	"meshkit.dev/meshkit/trust"
)

// BenchmarkWatchFanout opens 1,000 OmniRelay watch streams on an agent (50 client
// connections × 20 streams, loopback TCP) and measures, per bundle the agent accepts, the
// time until every stream has received it (p50/p99 over streams, median over bundles).
// It also reports the memory the idle streams hold (heap + stacks of client and server
// together, so an upper bound on the agent's share):
//
//	go test ./node -run '^$' -bench WatchFanout -benchtime 20x
func BenchmarkWatchFanout(b *testing.B) {
	const conns, perConn = 50, 20
	streams := conns * perConn
	d := newDomain(b, "prod")
	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		b.Fatal(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: b.TempDir(), Host: h, Clock: d.clock})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	sb := a.NewSouthbound(node.SouthboundConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = sb.Serve(ln) }()
	defer sb.Close()
	give := func(v uint64) {
		if a.Replica().Validate(context.Background(), p2pMessage(d.seal(b, trust.PayloadBundle, d.payload(b, v, 80), d.seed))) != p2p.Accept {
			b.Fatalf("v%d refused", v)
		}
	}
	give(1)

	memBefore := heapAndStacks()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type rcv struct {
		version string
		at      time.Time
	}
	got := make([]chan rcv, streams)
	var wg sync.WaitGroup
	var clients []*grpc.ClientConn
	for c := range conns {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, conn)
		cl := controlpb.NewControlPlaneWatchClient(conn)
		for s := range perConn {
			i := c*perConn + s
			got[i] = make(chan rcv, 4)
			w, err := cl.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: fmt.Sprint("n", i), Capabilities: &controlpb.CapabilitySet{Items: []string{"core/v1"}}})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Recv(); err != nil { // the current state
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					r, err := w.Recv()
					if err != nil {
						return
					}
					got[i] <- rcv{r.GetVersion(), time.Now()}
				}
			}()
		}
	}
	defer func() {
		cancel()
		wg.Wait()
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	perStream := float64(heapAndStacks()-memBefore) / float64(streams)

	var p50s, p99s []float64
	b.ResetTimer()
	for i := range b.N {
		v := uint64(i + 2)
		start := time.Now()
		give(v)
		lat := make([]float64, streams)
		for k := range got {
			r := <-got[k]
			if r.version != fmt.Sprint(v) {
				b.Fatalf("stream %d got version %s, want %d", k, r.version, v)
			}
			lat[k] = float64(r.at.Sub(start).Microseconds()) / 1000
		}
		slices.Sort(lat)
		p50s = append(p50s, lat[len(lat)/2])
		p99s = append(p99s, lat[len(lat)*99/100])
	}
	b.StopTimer()
	slices.Sort(p50s)
	slices.Sort(p99s)
	b.ReportMetric(p50s[len(p50s)/2], "p50-ms")
	b.ReportMetric(p99s[len(p99s)/2], "p99-ms")
	b.ReportMetric(p99s[len(p99s)-1], "worst-p99-ms")
	b.ReportMetric(perStream/1024, "KiB/idle-stream")
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

func p2pMessage(data []byte) p2p.Message { return p2p.Message{Data: data} }
