package sim

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/trust"
)

// Result is what a run measured. Times are milliseconds of the run's clock.
type Result struct {
	Scenario string `json:"scenario"`
	// System is "meshkit" or the baseline's name ("xds").
	System string `json:"system"`
	Clock  string `json:"clock"`
	Agents int    `json:"agents"`
	// Publishes counted (versions published during the run).
	Publishes int `json:"publishes"`
	// DeliveredRatio is the share of (publish, agent up at the end) pairs where the agent
	// held that version or a newer one by the end of the run.
	DeliveredRatio float64 `json:"delivered_ratio"`
	// P50Ms, P90Ms, P99Ms, MaxMs are over every delivery of every publish.
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// PerPublish is the time until 50/90/99/100 % of the agents held each version.
	PerPublish []PublishResult `json:"per_publish"`
	// SeedEgressBytes is what the seed (or the hub) sent during the run, and per publish.
	SeedEgressBytes      uint64  `json:"seed_egress_bytes"`
	SeedEgressPerPublish float64 `json:"seed_egress_per_publish_bytes"`
	// BundleBytes is the size of the bundle published (the snapshot payload).
	BundleBytes int `json:"bundle_bytes"`
	// BytesPerAgent is what an agent received during the run, on average.
	BytesPerAgent float64 `json:"bytes_per_agent"`
	// ConvergeMs is the time from the last heal until every agent up held the newest
	// version published before it; -1 without a heal.
	ConvergeMs float64 `json:"converge_ms"`
	// Rejected counts messages the agents refused, by reason.
	Rejected map[string]uint64 `json:"rejected,omitempty"`
	// Regressions counts agents that ever served an older (epoch, version) after a newer one.
	Regressions int `json:"regressions"`
	// WallSeconds is how long the run took, and HeapBytesPerAgent the heap it held per agent.
	WallSeconds       float64 `json:"wall_seconds"`
	HeapBytesPerAgent float64 `json:"heap_bytes_per_agent"`
	// CPUSeconds is the process CPU time the measured part of the run used.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// PublishResult is one version's propagation.
type PublishResult struct {
	Version   uint64  `json:"version"`
	AtMs      float64 `json:"at_ms"`
	Delivered int     `json:"delivered"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"` // -1 when not every agent got it
}

// tracker records when each agent first held each version.
type tracker struct {
	mu       sync.Mutex
	start    time.Time
	held     []map[uint64]time.Duration // per agent: version → first time held (since start)
	last     []uint64
	regress  []bool
	pubAt    map[uint64]time.Duration
	pubOrder []uint64
}

func newTracker(agents int) *tracker {
	t := &tracker{held: make([]map[uint64]time.Duration, agents), last: make([]uint64, agents), regress: make([]bool, agents), pubAt: map[uint64]time.Duration{}}
	for i := range t.held {
		t.held[i] = map[uint64]time.Duration{}
	}
	return t
}

func (t *tracker) now() time.Duration { return time.Since(t.start) }

func (t *tracker) hold(agent int, version uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if version < t.last[agent] {
		t.regress[agent] = true
	}
	t.last[agent] = max(t.last[agent], version)
	if _, ok := t.held[agent][version]; !ok {
		t.held[agent][version] = t.now()
	}
}

func (t *tracker) published(version uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.pubAt[version]; !ok {
		t.pubAt[version] = t.now()
		t.pubOrder = append(t.pubOrder, version)
	}
}

// heldAt is when agent first held version v or newer; ok false if never.
func (t *tracker) heldAt(agent int, v uint64) (time.Duration, bool) {
	best, ok := time.Duration(0), false
	for ver, at := range t.held[agent] {
		if ver >= v && (!ok || at < best) {
			best, ok = at, true
		}
	}
	return best, ok
}

// timedPublisher records when the seed hands each version to gossip.
type timedPublisher struct {
	inner seed.Publisher
	t     *tracker
	mu    sync.Mutex
	size  int
}

func (p *timedPublisher) Publish(ctx context.Context, pub *seed.Publication) error {
	p.t.published(pub.Info.GetVersion())
	if len(pub.Info.GetVariants()) > 0 {
		p.mu.Lock()
		p.size = int(pub.Info.GetVariants()[0].GetSnapshotBytes())
		p.mu.Unlock()
	}
	return p.inner.Publish(ctx, pub)
}

// meshkitRun is one run of MeshKit: a seed and agents over the world.
type meshkitRun struct {
	sc     *Scenario
	opt    Options
	log    *slog.Logger
	w      *world
	dir    string
	root   *trust.Root
	signer *trust.PrivateKey
	t      *tracker

	seedStore  *boltstore.Store
	seedGossip *seed.Gossip
	seed       *seed.Seed
	pub        *timedPublisher
	generation int
	seedEgress uint64

	mu       sync.Mutex
	agents   []*node.Agent // nil while down
	bytesIn  uint64        // of agents stopped so far
	rejected map[string]uint64
	watchers sync.WaitGroup
	stop     context.CancelFunc
	ctx      context.Context
}

// Run runs the scenario with MeshKit's seed and agents.
func Run(ctx context.Context, sc *Scenario, opt Options) (*Result, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	dir, cleanup, err := dataDir(opt)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	rng := rand.New(rand.NewPCG(uint64(sc.Seed), 0x5eed))
	w, err := newWorld(sc, rng)
	if err != nil {
		return nil, err
	}
	defer w.mn.Close()
	rootKey, err := trust.GenerateKey(rngReader{rng})
	if err != nil {
		return nil, err
	}
	signer, err := trust.GenerateKey(rngReader{rng})
	if err != nil {
		return nil, err
	}
	root, err := simRoot(rootKey, signer)
	if err != nil {
		return nil, err
	}
	r := &meshkitRun{sc: sc, opt: opt, log: opt.Logger, w: w, dir: dir, root: root, signer: signer,
		t: newTracker(sc.Agents), agents: make([]*node.Agent, sc.Agents), rejected: map[string]uint64{}}
	r.ctx, r.stop = context.WithCancel(ctx)
	defer r.stop()
	return r.run(ctx)
}

func simRoot(rootKey, seedKey *trust.PrivateKey) (*trust.Root, error) {
	now := time.Now()
	msg, err := trust.BuildRoot(trust.RootSpec{Domain: "sim", Version: 1, IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(30 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1, SeedKeys: []trust.PublicKey{seedKey.Public()}, SeedThreshold: 1})
	if err != nil {
		return nil, err
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		return nil, err
	}
	if err := trust.Sign(env, rootKey); err != nil {
		return nil, err
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		return nil, err
	}
	return trust.VerifyRoot(b)
}

func (r *meshkitRun) run(ctx context.Context) (*Result, error) {
	wallStart := time.Now()
	var m0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	r.t.start = time.Now()
	if err := r.startSeed(); err != nil {
		return nil, err
	}
	for i := range r.sc.Agents {
		if err := r.startAgent(i); err != nil {
			return nil, err
		}
	}
	defer r.shutdown()
	// The initial state (version 1) is published before warm-up ends; measuring starts after.
	if err := r.publish(); err != nil {
		return nil, err
	}
	if err := sleepUntil(ctx, r.t.start, r.sc.Warmup.D()); err != nil {
		return nil, err
	}
	var m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m1)
	cpu0 := cpuTime()
	r.t.mu.Lock()
	r.t.start = time.Now()
	r.t.pubAt, r.t.pubOrder = map[uint64]time.Duration{}, nil
	for i := range r.t.held {
		r.t.held[i] = map[uint64]time.Duration{}
	}
	r.t.mu.Unlock()
	egress0, in0 := r.seedEgressNow(), r.agentBytesNow()
	var lastHeal time.Duration = -1
	var healTarget uint64
	for _, st := range timeline(r.sc) {
		if err := sleepUntil(ctx, r.t.start, st.at); err != nil {
			break
		}
		if r.opt.Progress != nil {
			r.opt.Progress(st.at, r.sc.Duration.D())
		}
		if err := r.do(st.ev); err != nil {
			return nil, fmt.Errorf("sim: at %s: %w", st.at, err)
		}
		if st.ev.Heal {
			lastHeal = r.t.now()
			r.t.mu.Lock()
			if n := len(r.t.pubOrder); n > 0 {
				healTarget = r.t.pubOrder[n-1]
			}
			r.t.mu.Unlock()
		}
	}
	end := r.sc.Duration.D()
	for at := time.Second; at < end; at += time.Second {
		if sleepUntil(ctx, r.t.start, at) != nil {
			break
		}
		if r.opt.Progress != nil {
			r.opt.Progress(at, end)
		}
	}
	_ = sleepUntil(ctx, r.t.start, end)
	cpu := cpuTime() - cpu0
	res := r.result(lastHeal, healTarget)
	res.SeedEgressBytes = r.seedEgressNow() - egress0
	if res.Publishes > 0 {
		res.SeedEgressPerPublish = float64(res.SeedEgressBytes) / float64(res.Publishes)
	}
	res.BytesPerAgent = float64(r.agentBytesNow()-in0) / float64(r.sc.Agents)
	res.WallSeconds = time.Since(wallStart).Seconds()
	res.HeapBytesPerAgent = float64(int64(m1.HeapInuse+m1.StackInuse)-int64(m0.HeapInuse+m0.StackInuse)) / float64(r.sc.Agents)
	res.CPUSeconds = cpu.Seconds()
	r.pub.mu.Lock()
	res.BundleBytes = r.pub.size
	r.pub.mu.Unlock()
	return res, nil
}

func (r *meshkitRun) do(e Event) error {
	switch {
	case e.Publish > 0:
		return r.publish()
	case e.Partition > 0:
		side := map[int]bool{0: true}
		perm := r.w.rng.Perm(r.sc.Agents)
		for _, a := range perm[:int(e.Partition*float64(r.sc.Agents))] {
			side[a+1] = true
		}
		r.w.partition(side)
	case e.Heal:
		return r.w.heal()
	case e.KillSeed:
		r.stopSeed()
	case e.RestartSeed:
		return r.startSeed()
	case e.KillAgents > 0:
		perm := r.w.rng.Perm(r.sc.Agents)
		for _, a := range perm[:int(e.KillAgents*float64(r.sc.Agents))] {
			r.stopAgent(a)
		}
	case e.RestartAgents:
		for i := range r.sc.Agents {
			r.mu.Lock()
			down := r.agents[i] == nil
			r.mu.Unlock()
			if down {
				if err := r.startAgent(i); err != nil {
					return err
				}
			}
		}
	case e.Forge > 0:
		return r.forge(e.Forge)
	}
	return nil
}

func (r *meshkitRun) startSeed() error {
	h, err := r.w.up(0)
	if err != nil {
		return err
	}
	dir := filepath.Join(r.dir, "seed")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if r.seedStore, err = boltstore.Open(dir, 2*time.Second); err != nil {
		return err
	}
	if r.seedGossip, err = seed.NewGossip(r.ctx, p2p.Config{Domain: "sim", Host: h, Logger: r.log}, 0); err != nil {
		return err
	}
	r.pub = &timedPublisher{inner: r.seedGossip, t: r.t, size: r.pubSize()}
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store, cfg.Logger, cfg.Publisher = "sim", 1, r.signer, r.seedStore, r.log, r.pub
	cfg.Debounce, cfg.MaxDelay = 5*time.Millisecond, 100*time.Millisecond
	r.seed, err = seed.New(r.ctx, cfg)
	return err
}

func (r *meshkitRun) pubSize() int {
	if r.pub == nil {
		return 0
	}
	r.pub.mu.Lock()
	defer r.pub.mu.Unlock()
	return r.pub.size
}

func (r *meshkitRun) stopSeed() {
	if r.seed == nil {
		return
	}
	_ = r.seed.Close()
	r.seedEgress += r.seedGossip.Node().Traffic().BytesOut
	_ = r.seedGossip.Close()
	_ = r.seedStore.Close()
	r.w.down(0)
	r.seed, r.seedGossip, r.seedStore = nil, nil, nil
}

func (r *meshkitRun) seedEgressNow() uint64 {
	e := r.seedEgress
	if r.seedGossip != nil {
		e += r.seedGossip.Node().Traffic().BytesOut
	}
	return e
}

func (r *meshkitRun) agentBytesNow() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.bytesIn
	for _, a := range r.agents {
		if a != nil {
			n += a.Node().Traffic().BytesIn
		}
	}
	return n
}

func (r *meshkitRun) startAgent(i int) error {
	h, err := r.w.up(i + 1)
	if err != nil {
		return err
	}
	a, err := node.New(r.ctx, node.Config{
		Root: r.root, DataDir: filepath.Join(r.dir, fmt.Sprintf("agent%d", i)), Host: h,
		Bootstrap: r.w.bootstrap(i + 1), Logger: r.log, SyncInterval: 10 * time.Second,
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.agents[i] = a
	r.mu.Unlock()
	r.watchers.Add(1)
	go r.watch(i, a)
	return nil
}

// watch records every version agent i serves until it stops.
func (r *meshkitRun) watch(i int, a *node.Agent) {
	defer r.watchers.Done()
	for {
		ch := a.Changed()
		if cur, ok := a.Current(); ok {
			r.t.hold(i, cur.Version)
		}
		select {
		case <-ch:
		case <-r.ctx.Done():
			return
		}
		r.mu.Lock()
		gone := r.agents[i] != a
		r.mu.Unlock()
		if gone {
			return
		}
	}
}

func (r *meshkitRun) stopAgent(i int) {
	r.mu.Lock()
	a := r.agents[i]
	r.agents[i] = nil
	if a != nil {
		r.bytesIn += a.Node().Traffic().BytesIn
		for k, v := range a.Status().Rejected {
			r.rejected[k] += v
		}
	}
	r.mu.Unlock()
	if a == nil {
		return
	}
	_ = a.Close()
	r.w.down(i + 1)
}

func (r *meshkitRun) shutdown() {
	for i := range r.sc.Agents {
		r.stopAgent(i)
	}
	r.stopSeed()
	r.stop()
	r.watchers.Wait()
}

// publish applies a new generation of the desired state: every route changes, so the
// change gossiped is about the size of the bundle.
func (r *meshkitRun) publish() error {
	if r.seed == nil {
		return nil // the seed is down: nothing can be published
	}
	r.generation++
	routes := max(r.sc.BundleBytes/72, 1)
	res := []*adminv1.Resource{{
		Metadata: &bundlev1.Metadata{Name: "api", Namespace: "sim"},
		Spec:     &adminv1.Resource_Cluster{Cluster: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 8080}}}},
	}}
	for k := range routes {
		res = append(res, &adminv1.Resource{
			Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("r%05d", k), Namespace: "sim"},
			Spec: &adminv1.Resource_Route{Route: &bundlev1.RouteSpec{Cluster: "api", PrefixRewrite: fmt.Sprintf("/g%d", r.generation),
				Match: &bundlev1.RouteMatch{Hosts: []string{fmt.Sprintf("r%05d.sim.example", k)}, PathPrefix: "/"}}},
		})
	}
	ctx := seed.WithPrincipal(r.ctx, &seed.Principal{Name: "sim", Scope: seed.ScopeAdmin, Tenants: []string{"*"}})
	_, err := r.seed.AdminServer().Apply(ctx, &adminv1.ApplyRequest{Resources: res})
	return err
}

// forge makes a malicious peer, linked to three agents, inject n bundles signed by a key
// the domain does not trust.
func (r *meshkitRun) forge(n int) error {
	h, err := r.w.mn.GenPeer()
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pb.Message) string { return string(m.Data) }))
	if err != nil {
		return err
	}
	topic, err := ps.Join(p2p.BundlesTopic("sim"))
	if err != nil {
		return err
	}
	defer topic.Close()
	sub, err := topic.Subscribe() // to have a mesh to publish into
	if err != nil {
		return err
	}
	defer sub.Cancel()
	for range 3 {
		j := 1 + r.w.rng.IntN(r.sc.Agents)
		if r.w.slots[j].host == nil {
			continue
		}
		if _, err := r.w.mn.LinkPeers(h.ID(), r.w.slots[j].id); err != nil {
			return err
		}
		if err := h.Connect(ctx, peer.AddrInfo{ID: r.w.slots[j].id, Addrs: r.w.slots[j].host.Addrs()}); err != nil {
			r.log.Warn("forger cannot connect", "agent", j, "err", err)
		}
	}
	stranger, err := trust.GenerateKey(rngReader{r.w.rng})
	if err != nil {
		return err
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	for k := range n {
		b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{SchemaVersion: 1, Domain: "sim", Epoch: 1, Version: 1_000_000 + uint64(k),
			IssuedAt: timestamppb.Now(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}}
		p, err := bundle.Encode(b)
		if err != nil {
			return err
		}
		env := trust.NewEnvelope(trust.PayloadBundle, p)
		if err := trust.Sign(env, stranger); err != nil {
			return err
		}
		data, err := trust.MarshalEnvelope(env)
		if err != nil {
			return err
		}
		if err := topic.Publish(pctx, data, pubsub.WithReadiness(pubsub.MinTopicSize(1))); err != nil {
			return fmt.Errorf("forge: %w", err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the forged messages be judged before the peer leaves
	return nil
}

// result computes the delivery figures from the tracker.
func (r *meshkitRun) result(lastHeal time.Duration, healTarget uint64) *Result {
	r.mu.Lock()
	var up []int
	for i, a := range r.agents {
		if a != nil {
			up = append(up, i)
			for k, v := range a.Status().Rejected {
				r.rejected[k] += v
			}
		}
	}
	rejected := r.rejected
	r.mu.Unlock()
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	res := &Result{Scenario: r.sc.Name, System: "meshkit", Clock: r.sc.Clock, Agents: r.sc.Agents, Publishes: len(r.t.pubOrder), ConvergeMs: -1, Rejected: rejected}
	var all []float64
	delivered := 0
	for _, v := range r.t.pubOrder {
		at := r.t.pubAt[v]
		var lat []float64
		for _, i := range up {
			if h, ok := r.t.heldAt(i, v); ok {
				lat = append(lat, ms(max(h-at, 0)))
			}
		}
		slices.Sort(lat)
		delivered += len(lat)
		all = append(all, lat...)
		pr := PublishResult{Version: v, AtMs: ms(at), Delivered: len(lat), P50Ms: percentile(lat, 0.5), P90Ms: percentile(lat, 0.9), P99Ms: percentile(lat, 0.99), MaxMs: -1}
		if len(lat) == len(up) && len(lat) > 0 {
			pr.MaxMs = lat[len(lat)-1]
		}
		res.PerPublish = append(res.PerPublish, pr)
	}
	slices.Sort(all)
	res.P50Ms, res.P90Ms, res.P99Ms = percentile(all, 0.5), percentile(all, 0.9), percentile(all, 0.99)
	if len(all) > 0 {
		res.MaxMs = all[len(all)-1]
	}
	if n := len(r.t.pubOrder) * len(up); n > 0 {
		res.DeliveredRatio = float64(delivered) / float64(n)
	}
	if lastHeal >= 0 && healTarget > 0 {
		worst := time.Duration(0)
		all := true
		for _, i := range up {
			h, ok := r.t.heldAt(i, healTarget)
			if !ok {
				all = false
				break
			}
			worst = max(worst, h-lastHeal)
		}
		if all {
			res.ConvergeMs = ms(max(worst, 0))
		}
	}
	for _, reg := range r.t.regress {
		if reg {
			res.Regressions++
		}
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
