package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"meshkit.dev/meshkit/internal/memnet"
)

// Options tune a run without changing the scenario.
type Options struct {
	Logger *slog.Logger
	// Progress, when set, is called about once a second with the simulated time done.
	Progress func(done, total time.Duration)
	// Dir holds the seeds' and agents' data; empty means a temporary directory (on
	// /dev/shm when it exists).
	Dir string
	// Settle, when set, is called after each host and node is created. Virtual-time runs
	// set it to synctest.Wait: a host must finish registering its protocols before the
	// next one dials it, or it never advertises gossipsub (a race the bubble exposes).
	Settle func()
	// CostModel is the CPU time an agent spends verifying and applying a bundle of n
	// bytes; virtual-time runs sleep it (CPU work costs no virtual time otherwise).
	CostModel func(n int) time.Duration
	// CPUProfile, when set, receives the CPU profile of the measured window (after
	// warm-up) of a wall-clock run (`meshkit sim --cpuprofile`).
	CPUProfile io.Writer
	// leaveLinked makes a partition leave that many of the links it should cut in place:
	// a leaky partition, for the test that the leak is seen.
	leaveLinked int
}

// MeasuredCost is the verify-and-apply cost measured by the trust benchmarks on this kind
// of machine: about 60 µs of Ed25519 plus 0.5 ns per byte hashed and decoded.
func MeasuredCost(n int) time.Duration {
	return 60*time.Microsecond + time.Duration(n)/2
}

func (o Options) settle() {
	if o.Settle != nil {
		o.Settle()
	}
}

// peerSlot is one simulated machine: its identity and address survive restarts.
type peerSlot struct {
	key    crypto.PrivKey
	id     peer.ID
	addr   ma.Multiaddr
	region int
	host   host.Host // nil while down
}

// world is the simulated network: the mocknet, every slot, and which links exist.
type world struct {
	sc    *Scenario
	mn    mocknet.Mocknet
	rng   *rand.Rand
	slots []*peerSlot // [0] is the seed, then the agents
	// links are the intended links (i < j); cut are those a partition removed.
	links map[[2]int]bool
	cut   map[[2]int]bool
	// live are the mocknet links up now, with their base latency, for the shaper.
	live map[[2]int]liveLink
	// ghosts resets the streams mocknet leaves alive on closed connections.
	ghosts memnet.Reaper
	mu     sync.Mutex
}

type liveLink struct {
	l    mocknet.Link
	base time.Duration
}

func newWorld(sc *Scenario, rng *rand.Rand) (*world, error) {
	w := &world{sc: sc, mn: mocknet.New(), rng: rng, links: map[[2]int]bool{}, cut: map[[2]int]bool{}, live: map[[2]int]liveLink{}}
	n := sc.Agents + 1
	regionOf := regionAssignment(sc, rng)
	for i := range n {
		key, _, err := crypto.GenerateEd25519Key(rngReader{rng})
		if err != nil {
			return nil, err
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, err
		}
		addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", (i>>16)&255, (i>>8)&255, i&255))
		if err != nil {
			return nil, err
		}
		region := 0
		if i > 0 {
			region = regionOf[i-1]
		}
		w.slots = append(w.slots, &peerSlot{key: key, id: id, addr: addr, region: region})
	}
	// Every agent is linked to the seed (it bootstraps there) and to Degree/2 random agents
	// (so about Degree agent links each, counting both directions).
	for i := 1; i < n; i++ {
		w.links[[2]int{0, i}] = true
		for range max(sc.Degree/2, 1) {
			if sc.Agents < 2 {
				break
			}
			j := 1 + rng.IntN(sc.Agents)
			if j != i {
				w.links[pair(i, j)] = true
			}
		}
	}
	return w, nil
}

func pair(i, j int) [2]int {
	if i > j {
		i, j = j, i
	}
	return [2]int{i, j}
}

func regionAssignment(sc *Scenario, rng *rand.Rand) []int {
	out := make([]int, sc.Agents)
	if len(sc.Regions) == 0 {
		return out
	}
	perm := rng.Perm(sc.Agents)
	at := 0
	for r, reg := range sc.Regions {
		k := int(reg.Share*float64(sc.Agents) + 0.5)
		if r == len(sc.Regions)-1 {
			k = sc.Agents - at
		}
		for _, p := range perm[at:min(at+k, sc.Agents)] {
			out[p] = r
		}
		at = min(at+k, sc.Agents)
	}
	return out
}

// rngReader makes keys reproducible from the scenario's seed.
type rngReader struct{ r *rand.Rand }

func (r rngReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}

// up creates slot i's host (with its fixed identity) and links it to every slot that is
// up and that it should reach.
func (w *world) up(i int) (host.Host, error) {
	s := w.slots[i]
	h, err := w.mn.AddPeer(s.key, s.addr)
	if err != nil {
		return nil, err
	}
	w.ghosts.Watch(h)
	w.mu.Lock()
	s.host = h
	w.mu.Unlock()
	for j, o := range w.slots {
		if j == i || o.host == nil || !w.links[pair(i, j)] || w.isCut(pair(i, j)) {
			continue
		}
		if err := w.link(i, j); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (w *world) isCut(p [2]int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cut[p]
}

func (w *world) link(i, j int) error {
	l, err := w.mn.LinkPeers(w.slots[i].id, w.slots[j].id)
	if err != nil {
		return err
	}
	lat := w.sc.Link.Latency.D()
	if w.slots[i].region != w.slots[j].region && w.sc.InterRegionLatency > 0 {
		lat = w.sc.InterRegionLatency.D()
	}
	l.SetOptions(mocknet.LinkOptions{Latency: lat, Bandwidth: w.sc.Link.Bandwidth})
	w.mu.Lock()
	w.live[pair(i, j)] = liveLink{l: l, base: lat}
	w.mu.Unlock()
	return nil
}

// shape draws every live link's latency again each Resample interval, until ctx ends:
// uniform over base ± jitter, plus one RTO with probability loss. mocknet reads a link's
// latency on every write and delivers a stream's writes in order, so a late write holds
// back those behind it, as head-of-line blocking on a real stream does.
func (w *world) shape(ctx context.Context, rng *rand.Rand) {
	t := time.NewTicker(w.sc.Link.resample())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.reshape(rng)
	}
}

// reshape is one draw of shape.
func (w *world) reshape(rng *rand.Rand) {
	cfg := w.sc.Link
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ll := range w.live {
		lat := ll.base
		if cfg.Jitter > 0 {
			lat += time.Duration(rng.Int64N(2*int64(cfg.Jitter)+1)) - cfg.Jitter.D()
			lat = max(lat, 0)
		}
		if cfg.Loss > 0 && rng.Float64() < cfg.Loss {
			lat += cfg.rto(ll.base)
		}
		ll.l.SetOptions(mocknet.LinkOptions{Latency: lat, Bandwidth: cfg.Bandwidth})
	}
}

// down removes slot i's host from the network.
func (w *world) down(i int) {
	w.mu.Lock()
	h := w.slots[i].host
	w.slots[i].host = nil
	w.mu.Unlock()
	if h == nil {
		return
	}
	w.mu.Lock()
	for j := range w.slots {
		delete(w.live, pair(i, j))
	}
	w.mu.Unlock()
	for j := range w.slots {
		_ = w.mn.UnlinkPeers(w.slots[i].id, w.slots[j].id)
	}
	_ = h.Close()
}

// partition cuts the links between side (with the seed) and the rest, then closes every
// connection across the cut until none is left: a dial under way when its link goes can
// still connect, and mocknet adds a new connection to its two ends one after the other
// (a one-sided connection still carries gossip). It sweeps at most sweepFor (or until ctx
// ends), then returns the pairs still connected (0 when the cut is clean).
func (w *world) partition(ctx context.Context, side map[int]bool, leaveLinked int) int {
	w.mu.Lock()
	var cut [][2]int
	for p := range w.links {
		if side[p[0]] != side[p[1]] {
			cut = append(cut, p)
		}
	}
	if leaveLinked > 0 { // links between agents, which carry their gossip mesh
		slices.SortFunc(cut, func(a, b [2]int) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
		cut = slices.DeleteFunc(cut, func(p [2]int) bool {
			if p[0] != 0 && leaveLinked > 0 {
				leaveLinked--
				return true
			}
			return false
		})
	}
	for _, p := range cut {
		w.cut[p] = true
		delete(w.live, p)
	}
	w.mu.Unlock()
	for _, p := range cut {
		_ = w.mn.UnlinkPeers(w.slots[p[0]].id, w.slots[p[1]].id)
	}
	// Clean means no connection across the cut at two checks a sweepPause apart (a dial
	// begun before the cut lands within that).
	left := 0
	for deadline, clean := time.Now().Add(sweepFor), 0; clean < 2 && time.Now().Before(deadline); {
		left = w.disconnect(cut)
		w.ghosts.Reap()
		if left == 0 {
			clean++
		} else {
			clean = 0
		}
		if sleepUntil(ctx, time.Now(), sweepPause) != nil {
			break
		}
	}
	return left
}

const (
	sweepFor   = 5 * time.Second
	sweepPause = 100 * time.Millisecond
)

// disconnect closes both ends' connections for every pair and returns how many pairs
// had one.
func (w *world) disconnect(pairs [][2]int) int {
	n := 0
	for _, p := range pairs {
		w.mu.Lock()
		a, b := w.slots[p[0]].host, w.slots[p[1]].host
		w.mu.Unlock()
		if a == nil || b == nil {
			continue
		}
		if a.Network().Connectedness(b.ID()) == network.Connected || b.Network().Connectedness(a.ID()) == network.Connected {
			n++
		}
		_ = w.mn.DisconnectPeers(a.ID(), b.ID())
		_ = w.mn.DisconnectPeers(b.ID(), a.ID())
	}
	return n
}

// heal restores every cut link between slots that are up.
func (w *world) heal() error {
	w.mu.Lock()
	cut := w.cut
	w.cut = map[[2]int]bool{}
	w.mu.Unlock()
	for p := range cut {
		if w.slots[p[0]].host != nil && w.slots[p[1]].host != nil {
			if err := w.link(p[0], p[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// bootstrap is what slot i is told to join through: the seed, as in a deployment.
func (w *world) bootstrap(int) []peer.AddrInfo {
	s := w.slots[0]
	return []peer.AddrInfo{{ID: s.id, Addrs: []ma.Multiaddr{s.addr}}}
}

// neighbours are the agents slot i is linked to and that are up: it connects to them
// itself (its topology), rather than learning them from the seed.
func (w *world) neighbours(i int) []peer.AddrInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []peer.AddrInfo
	for j, s := range w.slots {
		if j != 0 && j != i && s.host != nil && w.links[pair(i, j)] && !w.cut[pair(i, j)] {
			out = append(out, peer.AddrInfo{ID: s.id, Addrs: []ma.Multiaddr{s.addr}})
		}
	}
	return out
}

// connect dials h's neighbours; one that is down is found again by the agent's redial
// loop. A libp2p Connect returns once identify has run over the link (a few round trips),
// so on the wall clock the dials run at once: one after another, starting 1,000 agents took
// minutes. In virtual time they stay one after another, as the virtual runs were validated
// (there a dial costs no wall time).
func (d *driver) connect(ctx context.Context, h host.Host, peers []peer.AddrInfo) {
	if d.opt.Settle != nil {
		for _, pi := range peers {
			_ = h.Connect(ctx, pi)
		}
		return
	}
	var wg sync.WaitGroup
	for _, pi := range peers {
		wg.Go(func() { _ = h.Connect(ctx, pi) })
	}
	wg.Wait()
}

// timeline expands the scenario's events into single steps in time order.
type step struct {
	at time.Duration
	ev Event
}

func timeline(sc *Scenario) []step {
	var out []step
	for _, e := range sc.Events {
		if e.Publish > 0 {
			for k := range e.Publish {
				one := e
				one.Publish = 1
				out = append(out, step{at: e.At.D() + time.Duration(k)*e.Every.D(), ev: one})
			}
			continue
		}
		out = append(out, step{at: e.At.D(), ev: e})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// dataDir returns a directory for the run's state.
func dataDir(opt Options) (string, func(), error) {
	if opt.Dir != "" {
		return opt.Dir, func() {}, os.MkdirAll(opt.Dir, 0o700)
	}
	root := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		root = "/dev/shm"
	}
	d, err := os.MkdirTemp(root, "meshkit-sim-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { _ = os.RemoveAll(d) }, nil
}

var errStopped = errors.New("sim: run stopped")

// sleepUntil waits until start+at or ctx's end.
func sleepUntil(ctx context.Context, start time.Time, at time.Duration) error {
	d := time.Until(start.Add(at))
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errStopped
	}
}

// system is what a run drives: MeshKit, or a baseline, over the same world.
type system interface {
	name() string
	// start brings the seed (or hub) and every agent up.
	start() error
	// do carries out an event other than partition and heal (the driver does those).
	do(e Event) error
	shutdown()
	seedEgressNow() uint64
	agentBytesNow() uint64
	// perAgentBytes is what each agent received so far (running incarnations only).
	perAgentBytes() []uint64
	refusals() map[string]uint64
	up() []int
	bundleBytes() int
	// serving counts the agents up and, of them, those serving their data plane any
	// configuration now (from the seed, peers or their last-known-good copy).
	serving() (up, serving int)
}

// driver owns what every run shares: the world, the tracker, the timeline.
type driver struct {
	sc  *Scenario
	opt Options
	log *slog.Logger
	w   *world
	dir string
	t   *tracker
	ctl *tracker // control messages: revocations, root and CA rotations
}

// wallGCPercent is the GOGC of wall-clock runs (unless GOGC is set). Every simulated
// node shares one Go heap, which the runtime collects each time it doubles: with 1,000
// agents that was every other publish, and each collection slowed every agent at once
// (those publishes' p99 doubled). Separate agent processes collect their own small heaps
// (Go's minimum heap goal is 4 MiB, about 30 publishes of garbage for an agent) on their
// own cores. A larger goal brings the shared heap closer to that; it applies to the
// hub-and-spoke baseline's run alike.
const wallGCPercent = 400

// drive builds the world, lets mk build the system on it, plays the timeline and
// measures.
func drive(ctx context.Context, sc *Scenario, opt Options, mk func(*driver) (system, error)) (*Result, error) {
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
	defer func() {
		// Let what the shutdown started (closing streams, last requests) finish before the
		// network goes: mocknet can leave a stream opened while its connection closes
		// without a reset, which a virtual-time bubble reports as a deadlock.
		opt.settle()
		_ = w.mn.Close()
		opt.settle()
	}()
	if opt.Settle == nil && os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(wallGCPercent))
	}
	d := &driver{sc: sc, opt: opt, log: opt.Logger, w: w, dir: dir, t: newTracker(sc.Agents), ctl: newTracker(sc.Agents)}
	sys, err := mk(d)
	if err != nil {
		return nil, err
	}
	wallStart := time.Now()
	m0 := heapInUse()
	start := time.Now()
	d.t.begin(start)
	d.ctl.begin(start)
	if err := sys.start(); err != nil {
		sys.shutdown()
		return nil, err
	}
	defer sys.shutdown()
	// Once everything is up, the run always ends by itself: warm-up, duration and a minute.
	ctx, cancel := context.WithTimeout(ctx, sc.Warmup.D()+sc.Duration.D()+time.Minute)
	defer cancel()
	// Streams closed connections left alive are reset all along, not only when a partition
	// sweeps: one left to a killed or churned agent would hold its peer's gossip writer on
	// a dead pipe (package memnet).
	var reaper sync.WaitGroup
	reapCtx, stopReaping := context.WithCancel(ctx)
	reaper.Go(func() { w.ghosts.Run(reapCtx, time.Second) })
	defer reaper.Wait()
	defer stopReaping()
	if sc.Link.shaped() {
		var shaper sync.WaitGroup
		shapeCtx, stopShaping := context.WithCancel(ctx)
		shaper.Go(func() { w.shape(shapeCtx, rand.New(rand.NewPCG(uint64(sc.Seed), 0x5a9e))) })
		defer shaper.Wait()
		defer stopShaping()
	}
	start = time.Now()
	d.t.begin(start)
	d.ctl.begin(start)
	// The initial state (version 1) is published during warm-up; measuring starts after.
	if err := sys.do(Event{Publish: 1}); err != nil {
		return nil, err
	}
	if err := sleepUntil(ctx, start, sc.Warmup.D()); err != nil {
		return nil, err
	}
	heap := heapInUse() - m0
	var prof *cpuWindow
	if opt.Settle == nil { // wall clock: profile the window to measure the server's CPU
		warmHeap()
		prof = startCPUWindow()
		defer func() {
			if prof != nil {
				_, _ = prof.stop(nil)
			}
		}()
	}
	cpu0 := cpuTime()
	start = time.Now()
	d.t.reset(start)
	d.ctl.reset(start)
	egress0, in0 := sys.seedEgressNow(), sys.agentBytesNow()
	lastHeal, healTarget := time.Duration(-1), uint64(0)
	end := sc.Duration.D()
	next := time.Second
	servMin, servSum, servN := 1.0, 0.0, 0
	certifier, _ := sys.(interface{ certified() (up, valid int) })
	certMin, certSum, certN, certLast := 1.0, 0.0, 0, 0.0
	sampleCert := func() {
		if certifier == nil {
			return
		}
		if up, valid := certifier.certified(); up > 0 {
			certLast = float64(valid) / float64(up)
			certMin, certSum, certN = min(certMin, certLast), certSum+certLast, certN+1
		}
	}
	sample := func() {
		if up, serving := sys.serving(); up > 0 {
			r := float64(serving) / float64(up)
			servMin, servSum, servN = min(servMin, r), servSum+r, servN+1
		}
		sampleCert()
	}
	progress := func(upTo time.Duration) {
		for ; next <= upTo && next < end; next += time.Second {
			if sleepUntil(ctx, start, next) != nil {
				return
			}
			sample()
			if opt.Progress != nil {
				opt.Progress(next, end)
			}
		}
	}
	for _, st := range timeline(sc) {
		progress(st.at)
		if err := sleepUntil(ctx, start, st.at); err != nil {
			break
		}
		var err error
		switch {
		case st.ev.Partition > 0:
			side := map[int]bool{0: true}
			for _, a := range w.rng.Perm(sc.Agents)[:int(st.ev.Partition*float64(sc.Agents))] {
				side[a+1] = true
			}
			var off []int
			for a := range sc.Agents {
				if !side[a+1] {
					off = append(off, a)
				}
			}
			d.t.cutOff(off)
			if left := w.partition(ctx, side, opt.leaveLinked); left > 0 {
				d.log.Warn("connections still cross the partition", "pairs", left)
			}
		case st.ev.Heal:
			d.t.healed()
			err = w.heal()
			lastHeal, healTarget = time.Since(start), d.t.newest()
		case st.ev.Publish > 0, st.ev.Revoke > 0, st.ev.RotateRoot, st.ev.RotateCA != "":
			asServer(func() { err = sys.do(st.ev) }) // publishing is the server's work
		default:
			err = sys.do(st.ev)
		}
		if err != nil {
			return nil, fmt.Errorf("sim: %s at %s: %w", sys.name(), st.at, err)
		}
	}
	progress(end)
	_ = sleepUntil(ctx, start, end)
	sampleCert()
	if opt.Progress != nil {
		opt.Progress(end, end)
	}
	res := d.t.result(sys.up(), lastHeal, healTarget)
	res.Scenario, res.System, res.Clock, res.Agents = sc.Name, sys.name(), sc.Clock, sc.Agents
	res.Rejected = sys.refusals()
	if res.Trust = d.ctl.trust(sys.up()); res.Trust != nil {
		if ts, ok := sys.(interface{ roots() (uint64, int) }); ok {
			res.Trust.RootVersion, res.Trust.AgentsOnRoot = ts.roots()
		}
	}
	res.SeedEgressBytes = sys.seedEgressNow() - egress0
	if res.Publishes > 0 {
		res.SeedEgressPerPublish = float64(res.SeedEgressBytes) / float64(res.Publishes)
	}
	res.BytesPerAgent = float64(sys.agentBytesNow()-in0) / float64(sc.Agents)
	res.BundleBytes = sys.bundleBytes()
	res.AgentBytes = sys.perAgentBytes()
	res.ServingMin, res.ServingAvg = servMin, -1
	if servN > 0 {
		res.ServingAvg = servSum / float64(servN)
	}
	if certN > 0 {
		res.Identity = &IdentityResult{CertifiedMin: certMin, CertifiedAvg: certSum / float64(certN), CertifiedEnd: certLast}
	}
	res.CPUSeconds = (cpuTime() - cpu0).Seconds()
	res.ServerCPUSeconds = -1
	if prof != nil {
		p := prof
		prof = nil
		if res.ServerCPUSeconds, err = p.stop(opt.CPUProfile); err != nil {
			return nil, err
		}
	}
	res.WallSeconds = time.Since(wallStart).Seconds()
	res.HeapBytesPerAgent = float64(heap) / float64(sc.Agents)
	return res, nil
}

// warmHeap faults in the memory the shared heap will grow into before its next
// collection, then frees it, so that the measured window reuses resident memory.
//
// A real agent is its own process: its small heap reaches its peak within minutes and is
// reused from then on. The simulator's one heap for every node starts the window far
// below its collection goal (wallGCPercent), so everything allocated in the window was
// memory never touched before, and a first touch is a page fault, which costs far more
// in a virtual machine than the allocation. That cost grew with each publish as the heap
// grew (1,000 agents, 4 KiB: per-publish p99 from 395 to 590 ms over six publishes) and
// is an artefact of simulating many processes in one. Call it right after a collection
// (heapInUse): it allocates up to the goal that collection set, but never more than half
// the memory the machine has available (a goal five times a large live heap may be more
// than the run would ever reach).
func warmHeap() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	const chunk = 32 << 20
	want := int64(m.NextGC) - int64(m.HeapAlloc) - 2*chunk // stay under the goal: no collection meanwhile
	want = min(want, availableMemory()/2)
	keep := make([][]byte, 0, max(want/chunk, 0))
	for n := int64(0); n < want; n += chunk {
		b := make([]byte, chunk)
		for i := 0; i < len(b); i += os.Getpagesize() {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	runtime.KeepAlive(keep)
	runtime.GC()
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
