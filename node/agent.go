package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/nodereport"
	"meshkit.dev/meshkit/p2p"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
	"meshkit.dev/meshkit/wasm"
)

// Defaults of Config.
const (
	DefaultStaleAfter    = time.Hour
	DefaultSyncInterval  = 30 * time.Second
	DefaultCheckInterval = 5 * time.Second
	// maxHeadsPerPeer bounds what one sync answer can make the agent consider.
	maxHeadsPerPeer = 64
	// syncPeers is how many peers one anti-entropy round asks.
	syncPeers = 4
	// fetchPeers is how many peers an announced bundle is fetched from before giving up.
	fetchPeers = 4
)

var (
	_ p2p.EncodedSource = (*Agent)(nil)
	_ p2p.Validator     = (*Agent)(nil)
)

// Config configures an Agent.
type Config struct {
	// Root is the domain's trusted root. Required; its domain is the agent's.
	Root *trust.Root
	// DataDir holds the last-known-good bundles (DataDir/lkg). Required.
	DataDir string
	// LKGCloseFiles closes the last-known-good slot files after each write instead of
	// keeping them open between writes (two per variant). For a process that hosts many
	// agents, like the simulator at 10,000, whose open-file limit cannot hold two each.
	LKGCloseFiles bool
	// Host is the libp2p host (p2p.NewHost; a mocknet host in tests). Required. The agent
	// does not own it: close it after the agent.
	Host host.Host
	// Bootstrap peers (seeds, or any agents) to join through.
	Bootstrap []peer.AddrInfo
	// Capabilities of the local data plane. The agent serves the richest variant whose
	// required capabilities it has; nil means every capability (the full variant).
	Capabilities []string
	// StaleAfter: with no new bundle for this long the agent reports stale. 0 means DefaultStaleAfter.
	StaleAfter time.Duration
	// SyncInterval is the period of anti-entropy rounds. 0 means DefaultSyncInterval.
	SyncInterval time.Duration
	// CheckInterval is how often staleness is evaluated. 0 means DefaultCheckInterval.
	CheckInterval time.Duration
	Clock         trust.Clock
	Logger        *slog.Logger
	// Registry receives the agent's metrics; nil means a private registry.
	Registry *prometheus.Registry
	// TuneP2P, when set, adjusts the p2p configuration (simulations, tests).
	TuneP2P func(*p2p.Config)
	// CostModel, when set, is slept for each bundle verified and applied, given its size:
	// for virtual-time simulations, where CPU work would otherwise cost no time at all.
	CostModel func(bytes int) time.Duration
	// Admission bounds the Wasm admission of extensions (wasm.Config defaults).
	Admission wasm.Config
	// ArtifactWait is how long a new bundle waits for its artifacts before it is offered
	// with the missing extensions handled by their failure policy. 0 means
	// DefaultArtifactWait.
	ArtifactWait time.Duration
	// ArtifactFetchTimeout bounds the fetch of one artifact; 0 means 5 minutes.
	ArtifactFetchTimeout time.Duration
	// MaxArtifactBytes bounds one artifact; 0 means 64 MiB.
	MaxArtifactBytes int64
}

func (c Config) artifactTimeout() time.Duration {
	if c.ArtifactFetchTimeout > 0 {
		return c.ArtifactFetchTimeout
	}
	return 5 * time.Minute
}

// heldBundle is the newest verified bundle of one variant.
type heldBundle struct {
	vb *trust.Verified // PayloadType is always PayloadBundle; Payload is the bundle
	// proof is the signed envelope: the bundle envelope itself, or the delta whose target
	// is vb.Payload (payload is then vb.Payload, sent alongside).
	proof     []byte
	withBody  bool
	at        time.Time // when it was accepted (or the LKG file was written)
	fromCache bool      // loaded from disk at start
	relayed   bool      // forwarded on gossip (see relayOnce)

	decodeOnce sync.Once // decoded lazily, once, for the southbound's per-resource changes
	bundle     *bundlev1.Bundle
	decodeErr  error

	encodeOnce sync.Once // wire() encoded once: every fetch served and the LKG file share it
	encoded    []byte
	encodeErr  error
}

// decoded returns the held bundle decoded; the result is shared and must not be modified.
func (h *heldBundle) decoded() (*bundlev1.Bundle, error) {
	h.decodeOnce.Do(func() { h.bundle, h.decodeErr = bundle.DecodeBundle(h.vb.Payload) })
	return h.bundle, h.decodeErr
}

func (h *heldBundle) wire() *syncv1.HeldBundle {
	hb := &syncv1.HeldBundle{Proof: h.proof}
	if h.withBody {
		hb.Payload = h.vb.Payload
	}
	return hb
}

// wireEncoded returns wire() encoded; the result is shared and must not be modified.
// A held bundle is immutable, so it is encoded once however many peers fetch it.
func (h *heldBundle) wireEncoded() ([]byte, error) {
	h.encodeOnce.Do(func() { h.encoded, h.encodeErr = proto.Marshal(h.wire()) })
	return h.encoded, h.encodeErr
}

// Agent is the per-host member of a domain: it verifies bundles from gossip and sync,
// keeps the newest of each variant, persists them as last-known-good, serves them to
// peers, and exposes health, metrics and status.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	clock    trust.Clock
	verifier *trust.Verifier
	lkg      *lkgStore
	node     *p2p.Node
	metrics  *metrics
	registry *prometheus.Registry
	started  time.Time

	ext *extensions

	mu   sync.Mutex // guards the following; Verify+apply+Commit run under it
	held map[string]*heldBundle
	// offered is what the data plane is served of each variant: the held bundle once its
	// artifacts are fetched and admitted, those that are not handled by failure policy.
	offered     map[string]*heldBundle
	dirty       map[string]bool
	changed     chan struct{} // closed and replaced on every change
	stale       string        // why the agent is stale, "" when fresh
	lastAccept  time.Time
	lastPersist error
	// bans are the peers anti-entropy does not ask, for claiming heads they did not deliver.
	bans     syncBans
	nacks    map[uint64]*syncv1.VersionNacks // data-plane NACKs by version
	accepted map[string]uint64               // by source
	rejected map[string]uint64               // by reason, for sync and announce fetches
	refusals reasonCounts                    // gossip refusals (counted where a.mu may or may not be held)

	persistKick chan struct{}
	syncKick    chan struct{}
	reportKick  chan struct{}
	republish   chan []byte  // proofs adopted by sync, to gossip once
	syncWith    chan peer.ID // new connections to ask for their heads
	notifiee    *network.NotifyBundle
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// New starts an agent. It serves its last-known-good bundles from the first moment,
// before any peer answers, then joins the domain's mesh and syncs with its peers.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	switch {
	case cfg.Root == nil:
		return nil, errors.New("node: Config.Root is required")
	case cfg.DataDir == "":
		return nil, errors.New("node: Config.DataDir is required")
	case cfg.Host == nil:
		return nil, errors.New("node: Config.Host is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("domain", cfg.Root.Domain()), clock: cfg.Clock, registry: cfg.Registry,
		held: map[string]*heldBundle{}, offered: map[string]*heldBundle{}, dirty: map[string]bool{}, changed: make(chan struct{}),
		accepted: map[string]uint64{}, rejected: map[string]uint64{}, nacks: map[uint64]*syncv1.VersionNacks{},
		persistKick: make(chan struct{}, 1), syncKick: make(chan struct{}, 1), reportKick: make(chan struct{}, 1), republish: make(chan []byte, 16), syncWith: make(chan peer.ID, 64), started: cfg.Clock.Now(),
	}
	var err error
	if a.verifier, err = trust.NewVerifier(trust.Config{Root: cfg.Root, Clock: cfg.Clock}); err != nil {
		return nil, err
	}
	if a.lkg, err = newLKGStore(filepath.Join(cfg.DataDir, "lkg"), cfg.LKGCloseFiles); err != nil {
		return nil, err
	}
	if a.metrics, err = newMetrics(cfg.Registry, a); err != nil {
		return nil, err
	}
	store, err := content.Open(filepath.Join(cfg.DataDir, "content"), content.Options{MaxBlobBytes: cfg.MaxArtifactBytes})
	if err != nil {
		return nil, err
	}
	a.ext = newExtensions(a, store)
	if err := a.loadLKG(); err != nil {
		a.ext.server.Close()
		return nil, err
	}
	if a.stale = a.staleReasonLocked(); a.stale != "" && len(a.held) > 0 {
		a.log.Warn("agent is stale", "reason", a.stale, "serving", "last-known-good") // an empty agent just waits for peers
	}

	pcfg := p2p.Config{
		Domain: cfg.Root.Domain(), Host: cfg.Host, Role: p2p.RoleAgent, Validator: a, Source: a,
		Bootstrap: cfg.Bootstrap, Logger: cfg.Logger,
	}
	if cfg.TuneP2P != nil {
		cfg.TuneP2P(&pcfg)
	}
	if a.node, err = p2p.New(ctx, pcfg); err != nil {
		a.ext.server.Close()
		return nil, err
	}
	// A new connection may bring a newer head: sync with it.
	a.notifiee = &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		select { // a new peer may hold something newer: ask it (and only it)
		case a.syncWith <- c.RemotePeer():
		default:
		}
		a.kickReport()
	}}
	cfg.Host.Network().Notify(a.notifiee)

	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(6)
	go func() { defer a.wg.Done(); a.ext.loop(runCtx) }()
	go a.persistLoop(runCtx)
	go a.syncLoop(runCtx)
	go a.checkLoop(runCtx)
	go a.reportLoop(runCtx)
	go a.republishLoop(runCtx)
	a.kickSync()
	return a, nil
}

// loadLKG verifies and adopts the bundles on disk. Expired ones are served (stale), as
// nothing newer is known; corrupt or forged ones are reported and never served.
func (a *Agent) loadLKG() error {
	lenient, err := trust.NewVerifier(trust.Config{Root: a.cfg.Root, Clock: a.clock, AllowExpired: true})
	if err != nil {
		return err
	}
	items, rep, err := a.lkg.load(lenient)
	if err != nil {
		return err
	}
	for _, r := range rep.Refused {
		a.log.Error("last-known-good file refused", "file", r)
		a.metrics.lkgRefused.Inc()
	}
	for _, v := range rep.Fallback {
		a.log.Warn("newest last-known-good copy refused; serving the previous one", "variant", v)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range items {
		if err := a.verifier.Commit(l.vb); err != nil {
			return fmt.Errorf("node: adopt last-known-good %s: %w", l.file, err)
		}
		h := &heldBundle{vb: l.vb, proof: l.held.GetProof(), withBody: len(l.held.GetPayload()) > 0, at: l.modified, fromCache: true}
		a.held[l.vb.Variant] = h
		a.ext.offerLocked(h)
		if l.modified.After(a.lastAccept) {
			a.lastAccept = l.modified
		}
		a.countAcceptLocked("lkg")
		a.log.Info("serving last-known-good", "variant", l.vb.Variant, "epoch", l.vb.Header.GetEpoch(), "version", l.vb.Header.GetVersion(), "expired", l.vb.Expired)
	}
	return nil
}

// Close stops the agent, flushing any bundle not yet persisted. It does not close the host.
func (a *Agent) Close() error {
	a.cfg.Host.Network().StopNotify(a.notifiee)
	// The content protocol handler stays on the host until its owner closes it (an agent
	// started again on the host replaces it): removing it here made identify push a
	// protocol change to every peer while connections were closing, and in virtual-time
	// runs a stream opened then was left without a reset.
	err := a.node.Close()
	a.cancel()
	a.wg.Wait() // the persist loop has flushed: the LKG files can close
	return errors.Join(err, a.lkg.close())
}

// Node is the agent's p2p node.
func (a *Agent) Node() *p2p.Node { return a.node }

// Changed returns a channel closed at the next change of what the agent holds.
func (a *Agent) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// Bundle is a verified bundle the agent serves.
type Bundle struct {
	Variant   string
	Epoch     uint64
	Version   uint64
	Hash      trust.Digest
	Payload   []byte // the encoded bundle: decode with bundle.DecodeBundle
	ExpiresAt time.Time
	Expired   bool
}

// Current returns the bundle the agent serves to its data plane: the richest variant it
// holds whose required capabilities Config.Capabilities cover. ok is false when it holds
// none.
func (a *Agent) Current() (Bundle, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.servingLocked()
	if h == nil {
		return Bundle{}, false
	}
	hdr := h.vb.Header
	exp := hdr.GetExpiresAt().AsTime()
	return Bundle{
		Variant: h.vb.Variant, Epoch: hdr.GetEpoch(), Version: hdr.GetVersion(), Hash: h.vb.Held,
		Payload: h.vb.Payload, ExpiresAt: exp, Expired: a.clock.Now().After(exp),
	}, true
}

// setOfferLocked makes h what the data plane is served of variant.
func (a *Agent) setOfferLocked(variant string, h *heldBundle) {
	a.offered[variant] = h
	close(a.changed)
	a.changed = make(chan struct{})
	a.kickReport() // the seeds learn at once what the agent serves (apply --wait=agents)
}

func (a *Agent) servingLocked() *heldBundle {
	offered := slices.Collect(maps.Values(a.offered))
	if i := richest(offered, a.cfg.Capabilities); i >= 0 {
		return offered[i]
	}
	return nil
}

// richest is trust.Richest over held bundles.
func richest(hs []*heldBundle, have []string) int {
	return trust.Richest(len(hs), func(i int) []string { return hs[i].vb.Header.GetRequiredCapabilities() },
		func(i int) string { return hs[i].vb.Variant }, have)
}

// Validate implements p2p.Validator: every gossip message is verified before it is used
// or forwarded. Forged, cross-domain, expired, malformed or oversized messages are
// rejected (the sender's score drops); stale ones and deltas whose base is missing are
// ignored (the latter starts a sync).
func (a *Agent) Validate(ctx context.Context, m p2p.Message) p2p.Verdict {
	if m.Local {
		return p2p.Accept
	}
	env, err := trust.DecodeEnvelope(m.Data, p2p.DefaultMaxGossipBytes)
	if err != nil {
		return a.refused(err, m.From, "gossip")
	}
	if env.GetPayloadType() == trust.PayloadAnnounce {
		return a.onAnnounce(ctx, m, env)
	}
	a.modelCost(len(m.Data))
	a.mu.Lock()
	defer a.mu.Unlock()
	vb, err := a.verifier.Verify(m.Data)
	if err != nil {
		if errors.Is(err, trust.ErrReplay) && a.relayOnceLocked(namedBundle(env)) {
			return p2p.Accept // authentic and current, got by sync and never relayed: peers still need it
		}
		return a.refused(err, m.From, "gossip")
	}
	if err := a.applyLocked(vb, m.Data); err != nil {
		return a.refused(err, m.From, "gossip")
	}
	a.held[vb.Variant].relayed = true
	a.countAcceptLocked("gossip")
	return p2p.Accept
}

// onAnnounce verifies the announce, fetches the body from the peer that forwarded it
// (or others), and accepts the announce for forwarding only once the body is verified and
// held: whoever receives it from us can fetch the body from us.
func (a *Agent) onAnnounce(ctx context.Context, m p2p.Message, env *trustv1.Envelope) p2p.Verdict {
	ann, err := a.verifier.VerifyAnnounce(m.Data)
	if err != nil {
		if errors.Is(err, trust.ErrReplay) && a.relayOnce(namedBundle(env)) {
			return p2p.Accept // we hold the body, so peers can fetch it from us
		}
		return a.refused(err, m.From, "gossip")
	}
	peers := []peer.ID{m.From}
	for _, p := range a.node.Peers() {
		if p != m.From && len(peers) < fetchPeers {
			peers = append(peers, p)
		}
	}
	for _, p := range peers {
		hb, err := a.node.Fetch(ctx, p, ann.Held[:])
		if err != nil {
			a.log.Debug("announced bundle not fetched", "peer", p, "err", err)
			continue
		}
		if err := a.acceptHeld(hb, &expected{held: ann.Held, epoch: ann.Header.GetEpoch(), version: ann.Header.GetVersion()}, "gossip"); err != nil {
			if errors.Is(err, trust.ErrReplay) && a.holds(ann.Held) {
				return p2p.Ignore // fetched meanwhile by another path
			}
			a.log.Warn("announced bundle refused", "peer", p, "reason", trust.Reason(err), "err", err)
			continue
		}
		return p2p.Accept
	}
	return p2p.Ignore
}

func (a *Agent) holds(d trust.Digest) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdsLocked(d)
}

// relayOnce reports whether the bundle named d is held and was never relayed (it came
// by sync or from disk), and marks it relayed: an authentic copy of the current bundle is
// forwarded once, so peers behind us get it, and any later copy is a replay, refused, so
// an attacker cannot make the domain flood it again.
func (a *Agent) relayOnce(d trust.Digest) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.relayOnceLocked(d)
}

func (a *Agent) relayOnceLocked(d trust.Digest) bool {
	for _, h := range a.held {
		if h.vb.Held == d && !h.relayed {
			h.relayed = true
			return true
		}
	}
	return false
}

func (a *Agent) holdsLocked(d trust.Digest) bool {
	for _, h := range a.held {
		if h.vb.Held == d {
			return true
		}
	}
	return false
}

// namedBundle is the hash of the bundle an authenticated envelope names: a snapshot's own
// payload hash, a delta's target, an announce's snapshot. Zero when it names none.
func namedBundle(env *trustv1.Envelope) trust.Digest {
	switch env.GetPayloadType() {
	case trust.PayloadBundle:
		return sha256.Sum256(env.GetPayload())
	case trust.PayloadDelta:
		d := &bundlev1.BundleDelta{}
		if proto.Unmarshal(env.GetPayload(), d) == nil && len(d.GetTargetHash()) == sha256.Size {
			return trust.Digest(d.GetTargetHash())
		}
	case trust.PayloadAnnounce:
		an := &bundlev1.Announce{}
		if proto.Unmarshal(env.GetPayload(), an) == nil && len(an.GetSnapshotHash()) == sha256.Size {
			return trust.Digest(an.GetSnapshotHash())
		}
	}
	return trust.Digest{}
}

// acceptHeld verifies and adopts a bundle fetched from a peer; when ann is set the bundle
// must be the announced one.
// expected is what a fetched bundle must be: the head a peer claimed, or what a signed
// announce named.
type expected struct {
	held           trust.Digest
	epoch, version uint64
}

func (a *Agent) acceptHeld(f *p2p.Fetched, want *expected, source string) error {
	hb := f.Held
	a.modelCost(len(hb.GetProof()) + len(hb.GetPayload()))
	a.mu.Lock()
	defer a.mu.Unlock()
	vb, err := a.verifier.VerifyHeld(hb.GetProof(), hb.GetPayload())
	if err != nil {
		a.countRefusalLocked(source, err)
		return err
	}
	if want != nil && (vb.Held != want.held || vb.Header.GetVersion() != want.version || vb.Header.GetEpoch() != want.epoch) {
		err := fmt.Errorf("%w: fetched bundle %s (epoch %d, v%d) is not the %s (epoch %d, v%d) it was fetched as", trust.ErrHashMismatch,
			vb.Held, vb.Header.GetEpoch(), vb.Header.GetVersion(), want.held, want.epoch, want.version)
		a.countRefusalLocked(source, err)
		return err
	}
	h := &heldBundle{vb: vb, proof: hb.GetProof(), withBody: len(hb.GetPayload()) > 0, relayed: source == "gossip"}
	if f.Encoded != nil && proto.Size(h.wire()) == len(f.Encoded) {
		// The peer sent exactly what wire() would encode (the same proof and payload, in
		// canonical form): keep its bytes for the LKG file and for serving fetches.
		h.encodeOnce.Do(func() { h.encoded = f.Encoded })
	}
	if err := a.adoptLocked(vb, h); err != nil {
		return err
	}
	if source == "sync" && len(h.proof) <= republishMax {
		// Peers around us may have missed it too (a healed partition): gossip the signed
		// proof once. Those holding its base apply it; the others start a sync.
		select {
		case a.republish <- h.proof:
			h.relayed = true
		default:
		}
	}
	a.countAcceptLocked(source)
	return nil
}

func (a *Agent) countAcceptLocked(source string) {
	a.accepted[source]++
	a.metrics.accepted.WithLabelValues(source).Inc()
}

func (a *Agent) countRefusalLocked(source string, err error) {
	reason := trust.Reason(err)
	a.rejected[reason]++
	a.metrics.rejected.WithLabelValues(source, reason).Inc()
}

// applyLocked adopts a verified snapshot, or applies a verified delta to the held base.
func (a *Agent) applyLocked(vb *trust.Verified, envelope []byte) error {
	if vb.PayloadType == trust.PayloadBundle {
		return a.adoptLocked(vb, &heldBundle{vb: vb, proof: envelope})
	}
	base := a.held[vb.Variant]
	if base == nil {
		return fmt.Errorf("%w: no bundle of variant %q held", trust.ErrBaseMismatch, vb.Variant)
	}
	// Applied to the held bytes: the target is decoded only if the southbound needs it.
	payload, err := bundle.ApplyDeltaView(base.vb.Payload, bundle.Digest(base.vb.Held), vb.Delta)
	if err != nil {
		return fmt.Errorf("%w: %v", trust.ErrBaseMismatch, err)
	}
	target := &trust.Verified{
		PayloadType: trust.PayloadBundle, Payload: payload, Header: vb.Header, Digest: vb.Held, Held: vb.Held,
		Variant: vb.Variant, Source: vb.Source, Role: vb.Role,
	}
	if err := a.verifier.Commit(vb); err != nil {
		return err
	}
	a.installLocked(target, &heldBundle{vb: target, proof: envelope, withBody: true})
	return nil
}

func (a *Agent) adoptLocked(commit *trust.Verified, h *heldBundle) error {
	if err := a.verifier.Commit(commit); err != nil {
		return err
	}
	a.installLocked(commit, h)
	return nil
}

func (a *Agent) installLocked(vb *trust.Verified, h *heldBundle) {
	now := a.clock.Now()
	h.at = now
	a.held[vb.Variant] = h
	a.lastAccept = now
	a.dirty[vb.Variant] = true
	close(a.changed)
	a.changed = make(chan struct{})
	a.ext.offerLocked(h)
	a.log.Info("bundle accepted", "variant", vb.Variant, "epoch", vb.Header.GetEpoch(), "version", vb.Header.GetVersion(), "hash", vb.Held.String())
	select {
	case a.persistKick <- struct{}{}:
	default:
	}
}

// refused counts a refusal and maps it to a gossip verdict. It may run with or without a.mu.
func (a *Agent) refused(err error, from peer.ID, source string) p2p.Verdict {
	reason := trust.Reason(err)
	a.metrics.rejected.WithLabelValues(source, reason).Inc()
	a.refusals.Add(reason)
	switch {
	case errors.Is(err, trust.ErrReplay), errors.Is(err, trust.ErrRollback):
		return p2p.Ignore // stale but valid: honest peers race
	case errors.Is(err, trust.ErrBaseMismatch):
		// A gap. The peer that forwarded the delta holds its target: sync with it first.
		select {
		case a.syncWith <- from:
		default:
			a.kickSync()
		}
		return p2p.Ignore
	case errors.Is(err, trust.ErrNotYetValid), errors.Is(err, trust.ErrRootExpired):
		return p2p.Ignore // a matter of this host's clock or root, not of the sender
	}
	a.log.Warn("gossip refused", "peer", from, "reason", reason, "err", err)
	return p2p.Reject
}

// Heads implements p2p.Source.
func (a *Agent) Heads() []*syncv1.Head {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*syncv1.Head, 0, len(a.held))
	for _, k := range slices.Sorted(maps.Keys(a.held)) {
		h := a.held[k]
		out = append(out, &syncv1.Head{
			RequiredCapabilities: h.vb.Header.GetRequiredCapabilities(), Epoch: h.vb.Header.GetEpoch(), Version: h.vb.Header.GetVersion(),
			Hash: h.vb.Held[:], Size: uint64(len(h.vb.Payload)), Source: h.vb.Source,
		})
	}
	return out
}

// Held implements p2p.Source.
func (a *Agent) Held(hash []byte) *syncv1.HeldBundle {
	if h := a.heldByHash(hash); h != nil {
		return h.wire()
	}
	return nil
}

// HeldEncoded is Held encoded (p2p serves fetches with it without marshalling again); the
// result is shared and must not be modified.
func (a *Agent) HeldEncoded(hash []byte) []byte {
	h := a.heldByHash(hash)
	if h == nil {
		return nil
	}
	b, err := h.wireEncoded()
	if err != nil {
		a.log.Error("held bundle not encoded", "hash", h.vb.Held.String(), "err", err)
		return nil
	}
	return b
}

// heldByHash returns the held bundle whose payload hashes to hash, or nil.
func (a *Agent) heldByHash(hash []byte) *heldBundle {
	if len(hash) != len(trust.Digest{}) {
		return nil
	}
	d := trust.Digest(hash)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range a.held {
		if h.vb.Held == d {
			return h
		}
	}
	return nil
}

func (a *Agent) kickSync() {
	select {
	case a.syncKick <- struct{}{}:
	default:
	}
}

// syncLoop runs anti-entropy: with four random peers at start, on a gap and every
// SyncInterval; with each new peer alone when it connects. An agent that holds nothing
// yet tries again after 1 s, doubling up to SyncInterval: one that joined between
// publishes (its peers had nothing when it connected, and gossip had gone by) would
// otherwise wait a whole SyncInterval for its first bundle.
func (a *Agent) syncLoop(ctx context.Context) {
	defer a.wg.Done()
	var empty time.Duration
	next := func() time.Duration {
		a.mu.Lock()
		none := len(a.held) == 0
		a.mu.Unlock()
		if none && empty < a.cfg.SyncInterval {
			empty = min(max(2*empty, time.Second), a.cfg.SyncInterval)
			return empty
		}
		return a.cfg.SyncInterval + time.Duration(rand.Int64N(int64(a.cfg.SyncInterval/4)+1))
	}
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-a.syncWith:
			a.syncWithPeers(ctx, []peer.ID{p})
			continue
		case <-a.syncKick:
		case <-t.C:
		}
		a.SyncOnce(ctx)
		t.Reset(next())
	}
}

// SyncOnce asks up to four peers for their heads and fetches every newer bundle. It
// returns how many bundles it adopted.
//
// Bootstrap peers (seeds, typically) are asked only when fewer than four others are
// connected: agents answer each other, and a seed's load does not grow with the fleet.
func (a *Agent) SyncOnce(ctx context.Context) int {
	peers := a.node.Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	slices.SortStableFunc(peers, func(x, y peer.ID) int { return cmpBool(a.isBootstrap(x), a.isBootstrap(y)) })
	return a.syncWithPeers(ctx, peers[:min(len(peers), syncPeers)])
}

func (a *Agent) isBootstrap(p peer.ID) bool {
	return slices.ContainsFunc(a.cfg.Bootstrap, func(b peer.AddrInfo) bool { return b.ID == p })
}

// cmpBool orders false before true.
func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

func (a *Agent) syncWithPeers(ctx context.Context, peers []peer.ID) int {
	var claims []claim
	for _, p := range peers {
		a.mu.Lock()
		banned := a.bans.banned(p, a.clock.Now())
		a.mu.Unlock()
		if banned {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		heads, err := a.node.Heads(qctx, p)
		cancel()
		if err != nil {
			a.log.Debug("sync: heads", "peer", p, "err", err)
			continue
		}
		for _, h := range heads[:min(len(heads), maxHeadsPerPeer)] {
			claims = append(claims, claim{from: p, head: h})
		}
	}
	variants, plan := planSync(a.verifier.State().Marks, claims, rand.Shuffle)
	adopted := 0
	for _, v := range variants {
		for _, c := range plan[v] {
			if m, have := a.verifier.State().Marks[v]; have && !newer(c.head.GetEpoch(), c.head.GetVersion(), m.Epoch, m.Version) {
				break // adopted from an earlier candidate, or delivered by gossip meanwhile
			}
			err := a.fetchClaim(ctx, c)
			if err == nil {
				adopted++
				break
			}
			if ctx.Err() != nil {
				return adopted
			}
			if errors.Is(err, trust.ErrReplay) || errors.Is(err, trust.ErrRollback) {
				break // what was claimed arrived another way first: the claim was true
			}
			if errors.Is(err, p2p.ErrNotFound) {
				// An honest peer moves on to a newer bundle between heads and fetch; a
				// quick "not held" costs nothing, so it is skipped without a ban.
				continue
			}
			a.falseClaim(c, err)
		}
	}
	return adopted
}

// fetchClaim fetches and adopts the bundle c claims, within one bounded attempt; the
// bundle must be exactly the head claimed.
func (a *Agent) fetchClaim(ctx context.Context, c claim) error {
	fctx, cancel := context.WithTimeout(ctx, fetchAttemptTimeout(c.head.GetSize()))
	defer cancel()
	hb, err := a.node.Fetch(fctx, c.from, c.head.GetHash())
	if err != nil {
		return err
	}
	if len(c.head.GetHash()) != len(trust.Digest{}) {
		return fmt.Errorf("%w: claimed head hash of %d bytes", trust.ErrMalformed, len(c.head.GetHash()))
	}
	return a.acceptHeld(hb, &expected{held: trust.Digest(c.head.GetHash()), epoch: c.head.GetEpoch(), version: c.head.GetVersion()}, "sync")
}

// falseClaim bans, for a time that grows with each offence, a peer whose claimed head it
// did not deliver: anti-entropy stops asking it first, so it cannot keep an agent off the
// newest bundle round after round.
func (a *Agent) falseClaim(c claim, err error) {
	a.mu.Lock()
	d := a.bans.strike(c.from, a.clock.Now())
	a.mu.Unlock()
	a.metrics.falseHeads.Inc()
	a.log.Warn("sync: a peer did not deliver the head it claimed; trying the next", "peer", c.from,
		"epoch", c.head.GetEpoch(), "version", c.head.GetVersion(), "banned_for", d, "err", err)
}

// persistLoop writes changed variants to the LKG store; on Close it flushes what is left.
//
// A failed write is retried with exponential backoff (persistRetryMin doubling up to
// persistRetryMax) rather than only when the next bundle arrives, which may be hours
// later; meanwhile the agent serves what it holds and says it is not persisting.
func (a *Agent) persistLoop(ctx context.Context) {
	defer a.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			a.persist()
			return
		case <-a.persistKick:
		case <-retry.C:
		}
		if a.persist() {
			backoff = 0
			retry.Stop()
			continue
		}
		backoff = min(max(2*backoff, persistRetryMin), persistRetryMax)
		retry.Reset(backoff)
	}
}

// Bounds of the backoff between retries of a failed last-known-good write.
const (
	persistRetryMin = time.Second
	persistRetryMax = time.Minute
)

// persist writes every changed variant and reports whether all writes succeeded.
func (a *Agent) persist() bool {
	a.mu.Lock()
	todo := map[string]*heldBundle{}
	for v := range a.dirty {
		todo[v] = a.held[v]
	}
	clear(a.dirty)
	a.mu.Unlock()
	var errs []error
	for v, h := range todo {
		if err := a.lkg.save(v, h); err != nil {
			errs = append(errs, err)
			a.metrics.lkgWriteFailures.Inc()
			a.log.Error("last-known-good not saved; retrying", "variant", v, "err", err)
			a.mu.Lock()
			a.dirty[v] = true // the newest held of v is written on the retry
			a.mu.Unlock()
		}
	}
	a.mu.Lock()
	a.lastPersist = errors.Join(errs...)
	a.mu.Unlock()
	return len(errs) == 0
}

// checkLoop evaluates staleness and logs its transitions once.
func (a *Agent) checkLoop(ctx context.Context) {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.CheckInterval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.evaluateStale()
			if n%12 == 0 {
				a.ext.gc() // free artifacts no held bundle references (after the store's grace)
			}
		}
	}
}

func (a *Agent) evaluateStale() {
	a.mu.Lock()
	defer a.mu.Unlock()
	reason := a.staleReasonLocked()
	if reason != a.stale {
		switch {
		case reason != "" && a.stale == "":
			serving := "nothing"
			if h := a.servingLocked(); h != nil {
				serving = fmt.Sprintf("last-known-good v%d", h.vb.Header.GetVersion())
			}
			a.log.Warn("agent is stale", "reason", reason, "serving", serving)
		case reason == "":
			a.log.Info("agent is fresh again")
		}
		a.stale = reason
	}
}

func (a *Agent) staleReasonLocked() string {
	h := a.servingLocked()
	now := a.clock.Now()
	switch {
	case h == nil:
		return "no bundle held"
	case now.After(h.vb.Header.GetExpiresAt().AsTime()):
		return fmt.Sprintf("bundle v%d expired at %s", h.vb.Header.GetVersion(), h.vb.Header.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	case now.Sub(a.lastAccept) > a.cfg.StaleAfter:
		return fmt.Sprintf("no new bundle for %s (stale after %s)", now.Sub(a.lastAccept).Truncate(time.Second), a.cfg.StaleAfter)
	}
	return ""
}

// addrStrings lists the host's dialable addresses with its peer ID, as bootstrap flags take them.
func addrStrings(h host.Host) []string {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// reasonCounts counts refusals by reason, safe for concurrent use.
type reasonCounts struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (r *reasonCounts) Add(reason string) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]uint64{}
	}
	r.m[reason]++
	r.mu.Unlock()
}

func (r *reasonCounts) snapshot(into map[string]uint64) {
	r.mu.Lock()
	for k, v := range r.m {
		into[k] += v
	}
	r.mu.Unlock()
}

// maxNackVersions bounds the versions whose NACKs are kept (the newest).
const maxNackVersions = 32

// recordNack counts a data-plane client's refusal of version.
func (a *Agent) recordNack(version uint64, nodeID, detail string) {
	a.mu.Lock()
	n := a.nacks[version]
	if n == nil {
		n = &syncv1.VersionNacks{Version: version}
		a.nacks[version] = n
		if len(a.nacks) > maxNackVersions {
			delete(a.nacks, slices.Min(slices.Collect(maps.Keys(a.nacks))))
		}
	}
	n.Count++
	if len(detail) > 512 {
		detail = detail[:512]
	}
	n.LastError = detail
	a.mu.Unlock()
	a.metrics.nacks.Inc()
	a.log.Warn("data plane refused a bundle", "node", nodeID, "version", version, "error", detail)
	a.kickReport()
}

func (a *Agent) kickReport() {
	select {
	case a.reportKick <- struct{}{}:
	default:
	}
}

// republishMax is the largest proof an agent gossips after adopting it by sync (the
// seed's own limit for gossiping a bundle inline).
const republishMax = 32 << 10

// republishLoop gossips proofs adopted by sync. The message ID is the content's hash, so
// every peer that already saw the envelope drops it unseen.
func (a *Agent) republishLoop(ctx context.Context) {
	defer a.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case proof := <-a.republish:
			if err := a.node.Publish(ctx, proof); err != nil && ctx.Err() == nil {
				a.log.Debug("republish failed", "err", err)
			}
		}
	}
}

// reportInterval is how often an agent reports to the seeds it is connected to, besides
// reporting every new NACK at once.
const reportInterval = time.Minute

// A kicked report (a new version served, a NACK) waits reportDelay plus up to
// reportSpread at random, and kicked reports are reportGap apart at least: a burst of
// versions, as after a partition heals or under a publish every 2 s, gives one report,
// sent once the fleet has converged rather than while it still syncs from the seeds, and
// a fleet that adopts a version together does not report in one instant.
const (
	reportDelay  = 2 * time.Second
	reportSpread = 3 * time.Second
	reportGap    = 10 * time.Second
)

// reportLoop tells the connected seeds what the agent serves and what its data plane
// refused (NACKs feed rollouts).
func (a *Agent) reportLoop(ctx context.Context) {
	defer a.wg.Done()
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportKick:
			wait := reportDelay + time.Duration(rand.Int64N(int64(reportSpread)))
			if next := last.Add(reportGap); time.Until(next) > wait {
				wait = time.Until(next)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		case <-t.C:
		}
		last = time.Now()
		r := a.report()
		for _, p := range a.node.ReportTargets() {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := a.node.Report(rctx, p, r); err != nil {
				a.log.Debug("report not delivered", "peer", p, "err", err)
			}
			cancel()
		}
	}
}

func (a *Agent) report() *syncv1.NodeReport {
	st := a.Status()
	r := &syncv1.NodeReport{ServingEpoch: st.Serving.Epoch, ServingVersion: st.Serving.Version, Stale: st.Stale, Extensions: a.ext.report(st.Extensions)}
	for _, n := range st.Nacks {
		r.Nacks = append(r.Nacks, &syncv1.VersionNacks{Version: n.Version, Count: n.Count, LastError: n.LastError})
	}
	nodereport.Clean(r) // NACK details come from data-plane clients: fit them to what seeds accept
	return r
}

func (a *Agent) modelCost(n int) {
	if a.cfg.CostModel != nil {
		time.Sleep(a.cfg.CostModel(n))
	}
}
