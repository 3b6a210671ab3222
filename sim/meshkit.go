package sim

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/ca"
	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/trust"
)

// timedPublisher records when the seed hands each version to gossip.
type timedPublisher struct {
	inner *seed.Gossip
	t     *tracker
	ctl   *tracker
	mu    sync.Mutex
	size  int
}

// PublishControl records when the seed signs each control message.
func (p *timedPublisher) PublishControl(ctx context.Context, envelope []byte) error {
	env, err := trust.DecodeEnvelope(envelope, 0)
	if err != nil {
		return err
	}
	view := &bundlev1.HeaderView{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(env.GetPayload(), view); err != nil {
		return err
	}
	p.ctl.published(view.GetHeader().GetVersion())
	return p.inner.PublishControl(ctx, envelope)
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

// simCAOverlap is how long the simulated CA's next generation is trusted before it signs.
const simCAOverlap = 2 * time.Second

// meshkitRun is one run of MeshKit: a seed and agents over the world.
type meshkitRun struct {
	d      *driver
	sc     *Scenario
	log    *slog.Logger
	w      *world
	dir    string
	root   *trust.Root
	signer *trust.PrivateKey
	t      *tracker
	// The domain's trust: the root key signs rotations; the CA role key the control
	// stream; rootBytes is root v1, newestRoot the newest in force and seedKeys the keys
	// it lists.
	rootKey, caRole *trust.PrivateKey
	rootBytes       []byte
	newestRoot      *trust.Root
	seedKeys        []trust.PublicKey
	// closeLKG has agents close their LKG files after each write (see closeLKGFiles).
	closeLKG bool

	seedStore  *boltstore.Store
	seedGossip *seed.Gossip
	seed       *seed.Seed
	// With identity: the seed's PeerIdentity loop (stopped with the seed), and each
	// agent's join token, made once.
	stopPeerID func()
	tokens     []string
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
	return drive(ctx, sc, opt, func(d *driver) (system, error) {
		rootKey, err := trust.GenerateKey(rngReader{d.w.rng})
		if err != nil {
			return nil, err
		}
		signer, err := trust.GenerateKey(rngReader{d.w.rng})
		if err != nil {
			return nil, err
		}
		caRole, err := trust.GenerateKey(rngReader{d.w.rng})
		if err != nil {
			return nil, err
		}
		rb, err := simRoot(rootKey, caRole, 1, rootKey, signer.Public())
		if err != nil {
			return nil, err
		}
		root, err := trust.VerifyRoot(rb)
		if err != nil {
			return nil, err
		}
		r := &meshkitRun{d: d, sc: sc, log: d.log, w: d.w, dir: d.dir, root: root, signer: signer, t: d.t,
			rootKey: rootKey, caRole: caRole, rootBytes: rb, newestRoot: root, seedKeys: []trust.PublicKey{signer.Public()},
			agents: make([]*node.Agent, sc.Agents), rejected: map[string]uint64{}, tokens: make([]string, sc.Agents),
			closeLKG: closeLKGFiles(sc.Agents, openFileLimit())}
		r.ctx, r.stop = context.WithCancel(ctx)
		return r, nil
	})
}

// simRoot is version v of the sim domain's root: rootKey its root key (one key signs
// every version, the previous one's and its own), caRole its CA role.
func simRoot(rootKey, caRole *trust.PrivateKey, v uint64, signer *trust.PrivateKey, seedKeys ...trust.PublicKey) ([]byte, error) {
	now := time.Now()
	msg, err := trust.BuildRoot(trust.RootSpec{Domain: "sim", Version: v, IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(30 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1, SeedKeys: seedKeys, SeedThreshold: 1,
		CAKeys: []trust.PublicKey{caRole.Public()}, CAThreshold: 1})
	if err != nil {
		return nil, err
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		return nil, err
	}
	if err := trust.Sign(env, signer); err != nil {
		return nil, err
	}
	return trust.MarshalEnvelope(env)
}

func (r *meshkitRun) name() string { return "meshkit" }

func (r *meshkitRun) start() error {
	if err := r.startSeed(); err != nil {
		return err
	}
	for i := range r.sc.Agents {
		if err := r.startAgent(i); err != nil {
			return err
		}
	}
	return nil
}

func (r *meshkitRun) bundleBytes() int { return r.pubSize() }

func (r *meshkitRun) do(e Event) error {
	switch {
	case e.Publish > 0:
		return r.publish()
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
	case e.Revoke > 0:
		return r.revoke(e.Revoke)
	case e.RotateRoot:
		return r.rotateRoot()
	case e.RotateCA != "":
		return r.rotateCA(e.RotateCA)
	}
	return nil
}

// revoke revokes n random agents' peers, one control message each.
func (r *meshkitRun) revoke(n int) error {
	if r.seed == nil {
		return nil
	}
	for _, i := range r.w.rng.Perm(r.sc.Agents)[:n] {
		id, err := peer.IDFromPrivateKey(r.w.slots[i+1].key)
		if err != nil {
			return err
		}
		resp, err := r.seed.Revoke(r.ctx, "sim", &adminv1.RevokeRequest{PeerId: id.String(), Reason: "sim"})
		if err != nil {
			return err
		}
		r.d.ctl.label(resp.GetControlVersion(), "revoke")
	}
	return nil
}

// rotateRoot has the seed make a key and puts in force the next root, listing it and
// the newest key before it: the seed signs with both, so agents on either root verify.
func (r *meshkitRun) rotateRoot() error {
	if r.seed == nil {
		return nil
	}
	k, err := r.seed.PrepareSeedKey(r.ctx, "sim")
	if err != nil {
		return err
	}
	kf, err := trust.ParseKeyPEM(k.GetPublicKey())
	if err != nil {
		return err
	}
	keys := append(r.seedKeys[len(r.seedKeys)-1:], kf.Public)
	rb, err := simRoot(r.rootKey, r.caRole, r.newestRoot.Version()+1, r.rootKey, keys...)
	if err != nil {
		return err
	}
	resp, err := r.seed.RotateRoot(r.ctx, "sim", rb)
	if err != nil {
		return err
	}
	if r.newestRoot, err = r.newestRoot.VerifyNext(rb); err != nil {
		return err
	}
	r.seedKeys = keys
	r.d.ctl.label(resp.GetControlVersion(), fmt.Sprintf("rotate_root v%d", resp.GetVersion()))
	return nil
}

// rotateCA takes one step of the CA's rotation.
func (r *meshkitRun) rotateCA(step string) error {
	if r.seed == nil {
		return nil
	}
	resp, err := r.seed.RotateCA(r.ctx, "sim", step)
	if err != nil {
		return err
	}
	r.d.ctl.label(resp.GetControlVersion(), "rotate_ca "+step)
	return nil
}

// certified counts the agents up and those holding a valid certificate of their own.
func (r *meshkitRun) certified() (up, valid int) {
	if !r.sc.Identity {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for _, a := range r.agents {
		if a == nil {
			continue
		}
		up++
		if now.Before(a.CertificateExpiry()) {
			valid++
		}
	}
	return up, valid
}

// roots are the newest root version and how many agents up hold it.
func (r *meshkitRun) roots() (uint64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.agents {
		if a != nil && a.RootVersion() == r.newestRoot.Version() {
			n++
		}
	}
	return r.newestRoot.Version(), n
}

func (r *meshkitRun) startSeed() (err error) {
	asServer(func() { err = r.startSeedLabelled() })
	return err
}

func (r *meshkitRun) startSeedLabelled() error {
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
	r.d.opt.settle()
	// The seed keeps the peers it knew across restarts, as meshkit seed does (DATA/peers.json).
	pcfg := p2p.Config{Domain: "sim", Host: h, Logger: r.log, PeersFile: filepath.Join(dir, "peers.json")}
	var pi *seed.PeerIdentity
	if r.sc.Identity {
		pi = &seed.PeerIdentity{}
		pcfg.OnIdentity, pcfg.Admission = pi.HandleIdentity, pi
	}
	if r.seedGossip, err = seed.NewGossip(r.ctx, pcfg, r.d.sc.InlineMax); err != nil {
		return err
	}
	r.d.opt.settle()
	r.pub = &timedPublisher{inner: r.seedGossip, t: r.t, ctl: r.d.ctl, size: r.pubSize()}
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store, cfg.Logger, cfg.Publisher = "sim", 1, r.signer, r.seedStore, r.log, r.pub
	cfg.Debounce, cfg.MaxDelay = 5*time.Millisecond, 100*time.Millisecond
	// The seed is the domain's CA and signs its control stream; its keys are kept in
	// keys/ so that a restarted seed signs with the ones rotations added.
	td := spiffeid.RequireTrustDomainFromString("sim")
	if cfg.CA, err = ca.LoadOrCreate(filepath.Join(dir, "ca"), td, time.Now()); err != nil {
		return err
	}
	cfg.CAGenerations, cfg.CAOverlap = ca.Dir{Path: filepath.Join(dir, "ca"), TrustDomain: td}, simCAOverlap
	cfg.Root, cfg.CASigner, cfg.KeyDir = r.rootBytes, r.caRole, filepath.Join(dir, "keys")
	if err := os.MkdirAll(cfg.KeyDir, 0o700); err != nil {
		return err
	}
	standby, err := filepath.Glob(filepath.Join(cfg.KeyDir, seed.StandbyKeyPrefix+"*.key"))
	if err != nil {
		return err
	}
	for _, p := range standby {
		kf, err := trust.LoadKeyFile(p)
		if err != nil {
			return err
		}
		cfg.StandbyKeys = append(cfg.StandbyKeys, kf.Private)
	}
	cfg.LeafLifetime = r.sc.LeafLifetime.D()
	if r.seed, err = seed.New(r.ctx, cfg); err != nil || pi == nil {
		return err
	}
	pi.Attach(r.seed)
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	go func() { defer close(done); pi.Run(ctx, r.seedGossip.Node()) }()
	r.stopPeerID = func() { cancel(); <-done }
	return nil
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
	if r.stopPeerID != nil {
		r.stopPeerID()
		r.stopPeerID = nil
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
	r.d.opt.settle()
	cfg := node.Config{
		Root: r.root, DataDir: filepath.Join(r.dir, fmt.Sprintf("agent%d", i)), Host: h,
		Bootstrap: r.w.bootstrap(i + 1), Logger: r.log,
	}
	if r.sc.Identity {
		// Enrolled as an operator would: a join token each, made while the seed is up.
		if r.tokens[i] == "" && r.seed != nil {
			tok, err := r.seed.CreateJoinToken(r.ctx, "sim", fmt.Sprintf("agent%d", i), time.Hour)
			if err != nil {
				return err
			}
			r.tokens[i] = tok.GetToken()
		}
		cfg.NodeName, cfg.JoinToken, cfg.RequirePeerCertificates = fmt.Sprintf("agent%d", i), r.tokens[i], true
	}
	a, err := node.New(r.ctx, cfg, tuning.Replica{CostModel: r.d.opt.CostModel, CloseFiles: r.closeLKG})
	if err != nil {
		return err
	}
	r.d.opt.settle()
	r.d.connect(r.ctx, h, r.w.neighbours(i+1))
	r.d.opt.settle()
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
		if v := a.ControlVersion(); v > 0 {
			r.d.ctl.hold(i, v)
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
	_, err := r.seed.Apply(r.ctx, "sim", res)
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
	grafted := make(chan struct{}, 1)
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pb.Message) string { return string(m.Data) }), pubsub.WithRawTracer(graftTracer{c: grafted}))
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
	// Publishing before gossipsub has a stream to a peer loses the message: wait until an
	// agent joins the forger's mesh.
	select {
	case <-grafted:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("forge: no agent joined the forger's mesh in 10 s")
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

// up lists the agents running now.
func (r *meshkitRun) serving() (up, serving int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.agents {
		if a != nil {
			up++
			if _, ok := a.Current(); ok {
				serving++
			}
		}
	}
	return up, serving
}

func (r *meshkitRun) up() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for i, a := range r.agents {
		if a != nil {
			out = append(out, i)
		}
	}
	return out
}

// refusals sums what every agent (running or stopped) refused, by reason.
func (r *meshkitRun) refusals() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := maps.Clone(r.rejected)
	for _, a := range r.agents {
		if a != nil {
			for k, v := range a.Status().Rejected {
				out[k] += v
			}
		}
	}
	return out
}

func (r *meshkitRun) perAgentBytes() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.agents))
	for i, a := range r.agents {
		if a != nil {
			out[i] = a.Node().Traffic().BytesIn
		}
	}
	return out
}

// graftTracer signals the first GRAFT of the forger's mesh.
type graftTracer struct {
	p2p.NopTracer
	c chan struct{}
}

func (g graftTracer) Graft(peer.ID, string) {
	select {
	case g.c <- struct{}{}:
	default:
	}
}
