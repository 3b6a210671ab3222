package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// xdsProtocol carries the baseline's gRPC connections over the simulated links.
const xdsProtocol = protocol.ID("/meshkit-sim/xds/1")

// allNodes puts every client in one snapshot group, as a hub serving one fleet does.
type allNodes struct{}

func (allNodes) ID(*corev3.Node) string { return "all" }

// xdsRun is the hub-and-spoke baseline: go-control-plane's snapshot cache and ADS server
// on the seed's machine, every agent an ADS client that ACKs as Envoy does, all over the
// same simulated links as MeshKit.
type xdsRun struct {
	d     *driver
	sc    *Scenario
	log   *slog.Logger
	ctx   context.Context
	stop  context.CancelFunc
	cache cachev3.SnapshotCache

	hubOut, hubIn atomic.Uint64
	hub           *grpc.Server
	hubLn         *streamListener
	generation    int
	size          int

	mu      sync.Mutex
	clients []*xdsClient // nil while down
	clBytes atomic.Uint64
	wg      sync.WaitGroup
}

type xdsClient struct {
	cancel context.CancelFunc
	conn   *grpc.ClientConn
	in     atomic.Uint64
	// serving is set by the first response: an Envoy starts with no configuration and
	// keeps none across a restart.
	serving atomic.Bool
}

// RunBaseline runs the scenario with a hub-and-spoke control plane instead of MeshKit.
// The only baseline is "xds" (go-control-plane).
func RunBaseline(ctx context.Context, sc *Scenario, opt Options, name string) (*Result, error) {
	if name != "xds" {
		return nil, fmt.Errorf("sim: unknown baseline %q (xds)", name)
	}
	return drive(ctx, sc, opt, func(d *driver) (system, error) {
		r := &xdsRun{d: d, sc: sc, log: d.log, clients: make([]*xdsClient, sc.Agents), cache: cachev3.NewSnapshotCache(true, allNodes{}, nil)}
		r.ctx, r.stop = context.WithCancel(ctx)
		return r, nil
	})
}

func (r *xdsRun) name() string { return "xds" }

func (r *xdsRun) start() error {
	if err := r.startHub(); err != nil {
		return err
	}
	for i := range r.sc.Agents {
		if err := r.startClient(i); err != nil {
			return err
		}
	}
	return nil
}

func (r *xdsRun) startHub() (err error) {
	asServer(func() { err = r.startHubLabelled() })
	return err
}

func (r *xdsRun) startHubLabelled() error {
	h, err := r.d.w.up(0)
	if err != nil {
		return err
	}
	r.hubLn = newStreamListener(h.ID().String(), &r.hubIn, &r.hubOut)
	h.SetStreamHandler(xdsProtocol, r.hubLn.handle)
	r.hub = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(r.hub, serverv3.NewServer(r.ctx, r.cache, nil))
	ln := r.hubLn
	srv := r.hub
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func (r *xdsRun) stopHub() {
	if r.hub == nil {
		return
	}
	r.hub.Stop()
	_ = r.hubLn.Close()
	r.d.w.down(0)
	r.hub = nil
}

func (r *xdsRun) startClient(i int) error {
	h, err := r.d.w.up(i + 1)
	if err != nil {
		return err
	}
	hubID := r.d.w.slots[0].id
	c := &xdsClient{}
	conn, err := grpc.NewClient("passthrough:///hub", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			s, err := h.NewStream(ctx, hubID, xdsProtocol)
			if err != nil {
				return nil, err
			}
			var discard atomic.Uint64
			return &streamConn{Stream: s, in: &c.in, out: &discard}, nil
		}))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.ctx)
	c.cancel, c.conn = cancel, conn
	r.mu.Lock()
	r.clients[i] = c
	r.mu.Unlock()
	r.wg.Add(1)
	go r.runClient(ctx, i, conn)
	return nil
}

// runClient is one Envoy-like ADS client: subscribe to clusters, ACK every response,
// reconnect after a second when the stream breaks.
func (r *xdsRun) runClient(ctx context.Context, i int, conn *grpc.ClientConn) {
	defer r.wg.Done()
	nodeID := &corev3.Node{Id: fmt.Sprintf("agent-%d", i), Cluster: "sim"}
	for ctx.Err() == nil {
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err == nil {
			err = stream.Send(&discoveryv3.DiscoveryRequest{Node: nodeID, TypeUrl: resourcev3.ClusterType})
		}
		for err == nil {
			var resp *discoveryv3.DiscoveryResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			if v, perr := strconv.ParseUint(resp.GetVersionInfo(), 10, 64); perr == nil {
				r.d.t.hold(i, v)
				r.mu.Lock()
				if c := r.clients[i]; c != nil {
					c.serving.Store(true)
				}
				r.mu.Unlock()
			}
			err = stream.Send(&discoveryv3.DiscoveryRequest{Node: nodeID, TypeUrl: resourcev3.ClusterType,
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *xdsRun) stopClient(i int) {
	r.mu.Lock()
	c := r.clients[i]
	r.clients[i] = nil
	r.mu.Unlock()
	if c == nil {
		return
	}
	c.cancel()
	_ = c.conn.Close()
	r.clBytes.Add(c.in.Load())
	r.d.w.down(i + 1)
}

func (r *xdsRun) do(e Event) error {
	switch {
	case e.Publish > 0:
		return r.publish()
	case e.KillSeed:
		r.stopHub()
	case e.RestartSeed:
		return r.startHub()
	case e.KillAgents > 0:
		for _, a := range r.d.w.rng.Perm(r.sc.Agents)[:int(e.KillAgents*float64(r.sc.Agents))] {
			r.stopClient(a)
		}
	case e.RestartAgents:
		for i := range r.sc.Agents {
			r.mu.Lock()
			down := r.clients[i] == nil
			r.mu.Unlock()
			if down {
				if err := r.startClient(i); err != nil {
					return err
				}
			}
		}
	case e.Forge > 0:
		// A hub has no peers to forge for; its clients trust the server's TLS identity.
	}
	return nil
}

// publish sets a snapshot of clusters about the scenario's bundle size, every one of them
// changed (as MeshKit's publish changes every route).
func (r *xdsRun) publish() error {
	if r.hub == nil {
		return nil
	}
	r.generation++
	var res []types.Resource
	size := 0
	for k := 0; size < r.sc.BundleBytes; k++ {
		c := &clusterv3.Cluster{Name: fmt.Sprintf("c%05d.sim", k), ConnectTimeout: durationpb.New(time.Duration(r.generation) * time.Millisecond),
			AltStatName: fmt.Sprintf("g%d", r.generation)}
		size += proto.Size(c) + 4
		res = append(res, c)
	}
	r.size = size
	snap, err := cachev3.NewSnapshot(strconv.Itoa(r.generation), map[resourcev3.Type][]types.Resource{resourcev3.ClusterType: res})
	if err != nil {
		return err
	}
	r.d.t.published(uint64(r.generation))
	return r.cache.SetSnapshot(r.ctx, "all", snap)
}

func (r *xdsRun) shutdown() {
	for i := range r.sc.Agents {
		r.stopClient(i)
	}
	r.stopHub()
	r.stop()
	r.wg.Wait()
}

func (r *xdsRun) seedEgressNow() uint64 { return r.hubOut.Load() }
func (r *xdsRun) agentBytesNow() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.clBytes.Load()
	for _, c := range r.clients {
		if c != nil {
			n += c.in.Load()
		}
	}
	return n
}

func (r *xdsRun) perAgentBytes() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.clients))
	for i, c := range r.clients {
		if c != nil {
			out[i] = c.in.Load()
		}
	}
	return out
}
func (r *xdsRun) refusals() map[string]uint64 { return nil }
func (r *xdsRun) bundleBytes() int            { return r.size }

func (r *xdsRun) serving() (up, serving int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.clients {
		if c != nil {
			up++
			if c.serving.Load() {
				serving++
			}
		}
	}
	return up, serving
}

func (r *xdsRun) up() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for i, c := range r.clients {
		if c != nil {
			out = append(out, i)
		}
	}
	return out
}
