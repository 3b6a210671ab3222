package replica

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/p2p"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// Defaults of Config.
const (
	DefaultSyncInterval = 30 * time.Second
	// fetchPeers is how many peers an announced bundle is fetched from before giving up.
	fetchPeers = 4
	// Bounds of the backoff between retries of a failed last-known-good write.
	persistRetryMin = time.Second
	persistRetryMax = time.Minute
)

// OfferPolicy decides what of each newly held bundle its role hands on: an agent's
// extension admission (and canary stages) sit behind it. Offer is called outside the
// replica's lock, possibly out of order (Held.Seq orders the calls); it must not block.
type OfferPolicy interface {
	Offer(h *Held)
}

// Config configures a Replica.
type Config struct {
	// Root is the domain's trusted root. Required.
	Root *trust.Root
	// Dir holds the last-known-good files. Required.
	Dir string
	// Host is the libp2p host; the replica does not own it. Required.
	Host host.Host
	// Role is the role announced on the mesh (p2p.RoleAgent for agents).
	Role p2p.Role
	// Bootstrap peers (seeds, or any agents) to join through; asked last in anti-entropy.
	Bootstrap []peer.AddrInfo
	// PeersFile keeps the peers the replica was connected to across restarts
	// (p2p.Config.PeersFile).
	PeersFile string
	// SyncInterval is the period of anti-entropy rounds. 0 means DefaultSyncInterval.
	SyncInterval time.Duration
	// Offer receives every newly held bundle. Required.
	Offer OfferPolicy
	// OnConnect, when set, is called for each new connection (outside every lock).
	OnConnect func(peer.ID)
	// Admission, when set, keeps the mesh to peers that show a certificate of the domain
	// (p2p.Admission).
	Admission p2p.Admission
	// OnAdmit, when set, is called when a peer is admitted (after the replica asks it for
	// its heads).
	OnAdmit func(peer.ID)
	Clock   clockwork.Clock
	Logger  *slog.Logger
	// Metrics counts what the replica accepts and refuses; nil counts nothing.
	Metrics *Metrics
	// Tuning is for the simulator and tests only (an internal package: nothing outside
	// this module can set it).
	Tuning tuning.Replica
}

// Replica drives a Core: it owns the p2p node, the last-known-good files, and the sync,
// persist and relay loops. It implements p2p.Validator and p2p.EncodedSource.
type Replica struct {
	cfg     Config
	log     *slog.Logger
	clock   clockwork.Clock
	lkg     *lkgStore
	node    *p2p.Node
	metrics *Metrics

	mu          sync.Mutex // guards core and lastPersist; every Step runs under it
	core        *Core
	lastPersist error
	// syncMu makes anti-entropy rounds one at a time: the core plans one round, and
	// SyncOnce may be called while the sync loop runs one.
	syncMu sync.Mutex

	persistKick chan struct{}
	syncKick    chan struct{}
	relay       chan []byte  // proofs adopted by sync, to gossip once
	syncWith    chan peer.ID // peers to ask alone (a new connection, a gap)
	notifiee    *network.NotifyBundle
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

var (
	_ p2p.EncodedSource = (*Replica)(nil)
	_ p2p.Validator     = (*Replica)(nil)
)

// New loads and offers the last-known-good bundles (served from the first moment, before
// any peer answers), then joins the domain's mesh and syncs with its peers.
func New(ctx context.Context, cfg Config) (*Replica, error) {
	switch {
	case cfg.Root == nil:
		return nil, errors.New("replica: Config.Root is required")
	case cfg.Dir == "":
		return nil, errors.New("replica: Config.Dir is required")
	case cfg.Host == nil:
		return nil, errors.New("replica: Config.Host is required")
	case cfg.Offer == nil:
		return nil, errors.New("replica: Config.Offer is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	r := &Replica{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock, metrics: cfg.Metrics,
		persistKick: make(chan struct{}, 1), syncKick: make(chan struct{}, 1), relay: make(chan []byte, 16), syncWith: make(chan peer.ID, 64),
	}
	var err error
	if r.metrics == nil {
		if r.metrics, err = NewMetrics(nil, ""); err != nil {
			return nil, err
		}
	}
	if r.core, err = NewCore(CoreConfig{Root: cfg.Root, Shuffle: rand.Shuffle}); err != nil {
		return nil, err
	}
	if r.lkg, err = newLKGStore(cfg.Dir, cfg.Tuning.CloseFiles); err != nil {
		return nil, err
	}
	if err := r.loadLKG(); err != nil {
		return nil, errors.Join(err, r.lkg.close())
	}
	pcfg := p2p.Config{
		Domain: cfg.Root.Domain(), Host: cfg.Host, Role: cfg.Role, Validator: r, Source: r,
		Bootstrap: cfg.Bootstrap, Logger: cfg.Logger, Admission: cfg.Admission, PeersFile: cfg.PeersFile,
		OnAdmit: func(p peer.ID) { // admitted after connecting: what a new connection would have done
			select {
			case r.syncWith <- p:
			default:
			}
			if cfg.OnAdmit != nil {
				cfg.OnAdmit(p)
			}
		},
	}
	if cfg.Tuning.P2P != nil {
		cfg.Tuning.P2P(&pcfg)
	}
	if r.node, err = p2p.New(ctx, pcfg); err != nil {
		return nil, errors.Join(err, r.lkg.close())
	}
	r.notifiee = &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		select { // a new peer may hold something newer: ask it (and only it)
		case r.syncWith <- c.RemotePeer():
		default:
		}
		if cfg.OnConnect != nil {
			cfg.OnConnect(c.RemotePeer())
		}
	}}
	cfg.Host.Network().Notify(r.notifiee)
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(3)
	go r.persistLoop(runCtx)
	go r.syncLoop(runCtx)
	go r.relayLoop(runCtx)
	r.kickSync()
	return r, nil
}

// loadLKG verifies and adopts the bundles on disk. Expired ones are served (stale), as
// nothing newer is known; corrupt or forged ones are reported and never served.
func (r *Replica) loadLKG() error {
	lenient, err := trust.NewVerifier(trust.Config{Root: r.cfg.Root, Clock: r.clock, AllowExpired: true})
	if err != nil {
		return err
	}
	items, rep, err := r.lkg.load(lenient)
	if err != nil {
		return err
	}
	for _, f := range rep.Refused {
		r.log.Error("last-known-good file refused", "file", f)
		r.metrics.lkgRefused.Inc()
	}
	for _, v := range rep.Fallback {
		r.log.Warn("newest last-known-good copy refused; serving the previous one", "variant", v)
	}
	r.step(Load{At: r.clock.Now(), Items: items})
	return nil
}

// Close stops the replica, flushing any bundle not yet persisted. It does not close the host.
func (r *Replica) Close() error {
	r.cfg.Host.Network().StopNotify(r.notifiee)
	// The content protocol handler stays on the host until its owner closes it (an agent
	// started again on the host replaces it): removing it here made identify push a
	// protocol change to every peer while connections were closing, and in virtual-time
	// runs a stream opened then was left without a reset.
	err := r.node.Close()
	r.cancel()
	r.wg.Wait() // the persist loop has flushed: the LKG files can close
	return errors.Join(err, r.lkg.close())
}

// Node is the replica's p2p node.
func (r *Replica) Node() *p2p.Node { return r.node }

// step runs one input through the core and carries out what does not need the network:
// counts, logs, offers, writes and relays. It returns the decisions.
func (r *Replica) step(in Input) []Output {
	r.mu.Lock()
	out := r.core.Step(in)
	r.mu.Unlock()
	for _, o := range out {
		switch o := o.(type) {
		case Accepted:
			r.metrics.accepted.WithLabelValues(string(o.Via)).Inc()
			vb := o.Held.Verified
			if o.Via == ViaLKG {
				r.log.Info("serving last-known-good", "variant", vb.Variant, "epoch", vb.Header.GetEpoch(), "version", vb.Header.GetVersion(), "expired", vb.Expired)
			} else {
				r.log.Info("bundle accepted", "variant", vb.Variant, "epoch", vb.Header.GetEpoch(), "version", vb.Header.GetVersion(), "hash", vb.Held.String())
			}
		case Refused:
			r.metrics.rejected.WithLabelValues(string(o.Via), o.Reason).Inc()
			if o.Via == ViaLKG {
				r.log.Error("last-known-good not adopted", "err", o.Err)
			}
		case Offer:
			r.cfg.Offer.Offer(o.Held)
		case Persist:
			select {
			case r.persistKick <- struct{}{}:
			default:
			}
		case Relay:
			select {
			case r.relay <- o.Proof:
			default:
				r.log.Debug("relay queue full; the proof reaches peers by their own sync")
			}
		case SyncWith:
			select {
			case r.syncWith <- o.Peer:
			default:
				r.kickSync()
			}
		case Ban:
			r.metrics.falseHeads.Inc()
			r.log.Warn("sync: a peer did not deliver the head it claimed; trying the next", "peer", o.Peer,
				"epoch", o.Want.Epoch, "version", o.Want.Version, "banned_for", o.For, "err", o.Err)
		}
	}
	return out
}

// Validate implements p2p.Validator: every gossip message is verified before it is used
// or forwarded. Forged, cross-domain, expired, malformed or oversized messages are
// rejected (the sender's score drops); stale ones and deltas whose base is missing are
// ignored (the latter starts a sync). An announce is accepted for forwarding only once its
// body is fetched, verified and held: whoever receives it from us can fetch it from us.
func (r *Replica) Validate(ctx context.Context, m p2p.Message) p2p.Verdict {
	if m.Local {
		return p2p.Accept
	}
	if r.cfg.Tuning.CostModel != nil && !isAnnounce(m.Data) {
		r.modelCost(len(m.Data)) // an announce costs its fetched body, below
	}
	out := r.step(Gossip{At: r.clock.Now(), From: m.From, Data: m.Data})
	if v, ok := verdictOf(out); ok {
		r.logRejected(out, v)
		return v
	}
	f, ok := fetchOf(out)
	if !ok {
		return p2p.Ignore
	}
	peers := []peer.ID{m.From}
	for _, p := range r.node.Peers() {
		if p != m.From && len(peers) < fetchPeers {
			peers = append(peers, p)
		}
	}
	for _, p := range peers {
		hb, err := r.node.Fetch(ctx, p, f.Want.Hash[:])
		if err != nil {
			r.log.Debug("announced bundle not fetched", "peer", p, "err", err)
			continue
		}
		r.modelCost(len(hb.Held.GetProof()) + len(hb.Held.GetPayload()))
		out := r.step(Fetched{At: r.clock.Now(), From: p, Via: ViaGossip, Want: f.Want, Held: hb.Held, Encoded: hb.Encoded})
		if v, ok := verdictOf(out); ok {
			return v
		}
		for _, o := range out {
			if rf, ok := o.(Refused); ok {
				r.log.Warn("announced bundle refused", "peer", p, "reason", rf.Reason, "err", rf.Err)
			}
		}
	}
	return p2p.Ignore
}

func (r *Replica) logRejected(out []Output, v p2p.Verdict) {
	if v != p2p.Reject {
		return
	}
	for _, o := range out {
		if rf, ok := o.(Refused); ok {
			r.log.Warn("gossip refused", "peer", rf.From, "reason", rf.Reason, "err", rf.Err)
		}
	}
}

func verdictOf(out []Output) (p2p.Verdict, bool) {
	for _, o := range out {
		if v, ok := o.(Verdict); ok {
			return v.Verdict, true
		}
	}
	return 0, false
}

func fetchOf(out []Output) (Fetch, bool) {
	for _, o := range out {
		if f, ok := o.(Fetch); ok {
			return f, true
		}
	}
	return Fetch{}, false
}

// Heads implements p2p.Source.
func (r *Replica) Heads() []*syncv1.Head {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.Heads()
}

// Held implements p2p.Source.
func (r *Replica) Held(hash []byte) *syncv1.HeldBundle {
	if h := r.heldByHash(hash); h != nil {
		return h.Wire()
	}
	return nil
}

// HeldEncoded is Held encoded (p2p serves fetches with it without marshalling again); the
// result is shared and must not be modified.
func (r *Replica) HeldEncoded(hash []byte) []byte {
	h := r.heldByHash(hash)
	if h == nil {
		return nil
	}
	b, err := h.WireEncoded()
	if err != nil {
		r.log.Error("held bundle not encoded", "hash", h.Verified.Held.String(), "err", err)
		return nil
	}
	return b
}

func (r *Replica) heldByHash(hash []byte) *Held {
	if len(hash) != len(trust.Digest{}) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.HeldByHash(trust.Digest(hash))
}

// Current returns the held bundle of a stream, or nil.
func (r *Replica) Current(key string) *Held {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.Current(key)
}

// Root is the domain root in force: the configured one, or the newest a control
// message's rotations led to.
func (r *Replica) Root() *trust.Root {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.Root()
}

// View is a snapshot of what a replica holds, for status pages.
type View struct {
	Held       []*Held
	LastAccept time.Time
	PersistErr error
	SyncBanned []string
	Accepted   map[string]uint64
	Rejected   map[string]uint64
}

// View returns a snapshot of the replica's state.
func (r *Replica) View() View {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := View{Held: r.core.Streams(), LastAccept: r.core.LastAccept(), PersistErr: r.lastPersist, SyncBanned: r.core.Banned(r.clock.Now())}
	v.Accepted, v.Rejected = r.core.Counts()
	return v
}

func (r *Replica) kickSync() {
	select {
	case r.syncKick <- struct{}{}:
	default:
	}
}

// syncLoop runs anti-entropy: with four random peers at start, on a gap and every
// SyncInterval; with each new peer alone when it connects. A replica that holds nothing
// yet tries again after 1 s, doubling up to SyncInterval: one that joined between
// publishes (its peers had nothing when it connected, and gossip had gone by) would
// otherwise wait a whole SyncInterval for its first bundle.
func (r *Replica) syncLoop(ctx context.Context) {
	defer r.wg.Done()
	interval := r.cfg.SyncInterval
	var empty time.Duration
	next := func() time.Duration {
		r.mu.Lock()
		none := !r.core.HoldsBundle()
		r.mu.Unlock()
		if none && empty < interval {
			empty = min(max(2*empty, time.Second), interval)
			return empty
		}
		return interval + time.Duration(rand.Int64N(int64(interval/4)+1))
	}
	t := r.clock.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-r.syncWith:
			r.sync(ctx, SyncRound{Peers: []peer.ID{p}, All: true})
			continue
		case <-r.syncKick:
		case <-t.Chan():
		}
		r.SyncOnce(ctx)
		t.Reset(next())
	}
}

// SyncOnce asks up to four peers for their heads and fetches every newer bundle. It
// returns how many bundles it adopted.
func (r *Replica) SyncOnce(ctx context.Context) int {
	boot := make([]peer.ID, 0, len(r.cfg.Bootstrap))
	for _, b := range r.cfg.Bootstrap {
		boot = append(boot, b.ID)
	}
	return r.sync(ctx, SyncRound{Peers: r.node.Peers(), Bootstrap: boot})
}

// sync carries out one anti-entropy round: the core decides whom to ask and what to
// fetch, one fetch at a time, each bounded by the claimed size.
func (r *Replica) sync(ctx context.Context, round SyncRound) int {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	round.At = r.clock.Now()
	out := r.step(round)
	var ask AskHeads
	for _, o := range out {
		if a, ok := o.(AskHeads); ok {
			ask = a
		}
	}
	var answers []Answer
	for _, p := range ask.Peers {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		heads, err := r.node.Heads(qctx, p)
		cancel()
		if err != nil {
			r.log.Debug("sync: heads", "peer", p, "err", err)
			continue
		}
		answers = append(answers, Answer{From: p, Heads: heads})
	}
	out = r.step(Heads{At: r.clock.Now(), Answers: answers})
	for {
		var f *Fetch
		for _, o := range out {
			switch o := o.(type) {
			case Fetch:
				f = &o
			case RoundDone:
				return o.Adopted
			}
		}
		if f == nil || ctx.Err() != nil {
			return 0
		}
		fctx, cancel := context.WithTimeout(ctx, fetchAttemptTimeout(f.Want.Size))
		hb, err := r.node.Fetch(fctx, f.From, f.Want.Hash[:])
		cancel()
		if ctx.Err() != nil {
			return 0
		}
		if err != nil {
			out = r.step(FetchFailed{At: r.clock.Now(), From: f.From, Want: f.Want, Err: err})
			continue
		}
		r.modelCost(len(hb.Held.GetProof()) + len(hb.Held.GetPayload()))
		out = r.step(Fetched{At: r.clock.Now(), From: f.From, Via: ViaSync, Want: f.Want, Held: hb.Held, Encoded: hb.Encoded})
	}
}

// persistLoop writes changed streams to the LKG store; on Close it flushes what is left.
//
// A failed write is retried with exponential backoff (persistRetryMin doubling up to
// persistRetryMax) rather than only when the next bundle arrives, which may be hours
// later; meanwhile the replica serves what it holds and says it is not persisting.
func (r *Replica) persistLoop(ctx context.Context) {
	defer r.wg.Done()
	retry := r.clock.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			r.persist()
			return
		case <-r.persistKick:
		case <-retry.Chan():
		}
		if r.persist() {
			backoff = 0
			retry.Stop()
			continue
		}
		backoff = min(max(2*backoff, persistRetryMin), persistRetryMax)
		retry.Reset(backoff)
	}
}

// persist writes every changed stream and reports whether all writes succeeded.
func (r *Replica) persist() bool {
	r.mu.Lock()
	todo := r.core.TakeDirty()
	r.mu.Unlock()
	var errs []error
	for k, h := range todo {
		if err := r.lkg.save(k, h); err != nil {
			errs = append(errs, err)
			r.metrics.lkgWriteFailures.Inc()
			r.log.Error("last-known-good not saved; retrying", "variant", k, "err", err)
			r.mu.Lock()
			r.core.MarkDirty(k) // the newest held of k is written on the retry
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	r.lastPersist = errors.Join(errs...)
	r.mu.Unlock()
	return len(errs) == 0
}

// relayLoop gossips proofs adopted by sync. The message ID is the content's hash, so
// every peer that already saw the envelope drops it unseen.
func (r *Replica) relayLoop(ctx context.Context) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case proof := <-r.relay:
			if err := r.node.Publish(ctx, proof); err != nil && ctx.Err() == nil {
				r.log.Debug("relay failed", "err", err)
			}
		}
	}
}

func isAnnounce(data []byte) bool {
	env, err := trust.DecodeEnvelope(data, p2p.DefaultMaxGossipBytes)
	return err == nil && env.GetPayloadType() == trust.PayloadAnnounce
}

func (r *Replica) modelCost(n int) {
	if r.cfg.Tuning.CostModel != nil {
		r.clock.Sleep(r.cfg.Tuning.CostModel(n))
	}
}

// Metrics are a replica's counters.
type Metrics struct {
	accepted         *prometheus.CounterVec
	rejected         *prometheus.CounterVec
	lkgRefused       prometheus.Counter
	lkgWriteFailures prometheus.Counter
	falseHeads       prometheus.Counter
}

// NewMetrics creates a replica's counters named PREFIX_bundles_accepted_total and so on,
// registered with reg when it is not nil.
func NewMetrics(reg prometheus.Registerer, prefix string) (*Metrics, error) {
	if prefix == "" {
		prefix = "meshkit_replica"
	}
	m := &Metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_bundles_accepted_total", Help: "Bundles verified and adopted, by source (gossip, sync, lkg).",
		}, []string{"source"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_bundles_rejected_total", Help: "Bundles, deltas and announces refused, by source and reason (bad_signature, rollback, replay, expired, ...).",
		}, []string{"source", "reason"}),
		lkgRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "_lkg_refused_total", Help: "Last-known-good files refused at start (corrupt, truncated or forged).",
		}),
		falseHeads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "_sync_false_heads_total", Help: "Heads a peer claimed in anti-entropy and did not deliver (the peer is then not asked for a while).",
		}),
		lkgWriteFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: prefix + "_lkg_write_failures_total", Help: "Last-known-good writes that failed; each is retried with backoff, and /readyz reports persisting: false meanwhile.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.accepted, m.rejected, m.lkgRefused, m.falseHeads, m.lkgWriteFailures} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
