package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jonboulle/clockwork"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/nodereport"
	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/p2p"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/replica"
	"meshkit.dev/meshkit/trust"
	"meshkit.dev/meshkit/wasm"
)

// Defaults of Config.
const (
	DefaultStaleAfter    = time.Hour
	DefaultSyncInterval  = replica.DefaultSyncInterval
	DefaultCheckInterval = 5 * time.Second
)

// Config configures an Agent.
type Config struct {
	// Root is the domain's trusted root. Required; its domain is the agent's.
	Root *trust.Root
	// DataDir holds the last-known-good bundles (DataDir/lkg). Required.
	DataDir string
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
	// Clock gives the time and the timers of every loop; nil means the system clock.
	Clock  clockwork.Clock
	Logger *slog.Logger
	// Registry receives the agent's metrics; nil means a private registry.
	Registry *prometheus.Registry
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
	// NodeName is the node this agent is in the domain CA's eyes: its data plane asks
	// for certificates under it (omnirelay.ca). Empty leaves the CA service unenrolled.
	NodeName string
	// JoinToken enrols the agent as NodeName once (meshkit token create); an agent
	// enrolled before does not need it again.
	JoinToken string
	// RequirePeerCertificates keeps the agent's mesh to peers that show a certificate of
	// the domain bound to their peer ID: others are not grafted, their gossip is dropped,
	// and sync and content refuse them. The agent shows its own once it has one.
	RequirePeerCertificates bool
}

func (c Config) artifactTimeout() time.Duration {
	if c.ArtifactFetchTimeout > 0 {
		return c.ArtifactFetchTimeout
	}
	return 5 * time.Minute
}

// heldBundle is a bundle of one stream as the replica holds it, or as the offer policy
// derived it for the data plane.
type heldBundle = replica.Held

// Agent is the per-host member of a domain. It composes the receive pipeline (a
// replica.Replica: verify, hold the newest of each stream, relay, sync, last-known-good),
// an offer policy (extension admission decides what of each held bundle the data plane
// is served), and the agent's own services: the southbound, reports to the seeds, health,
// metrics and status. Nothing else takes its lock.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	clock    clockwork.Clock
	rep      *replica.Replica
	metrics  *metrics
	registry *prometheus.Registry
	started  time.Time

	ext    *extensions
	id     *agentIdentity
	ctl    control       // the newest control message: trust bundle and revocations
	idKick chan struct{} // wakes the identity loop (capacity 1)
	// node is the replica's p2p node once it exists: the content server, which starts
	// before it, asks it who is admitted.
	node atomic.Pointer[p2p.Node]

	mu sync.Mutex // guards the following
	// offered is what the data plane is served of each variant: the held bundle once its
	// artifacts are fetched and admitted, those that are not handled by failure policy.
	offered map[string]*heldBundle
	changed chan struct{}                   // closed and replaced on every change
	stale   string                          // why the agent is stale, "" when fresh
	idWarn  string                          // the identity warning last logged
	nacks   map[uint64]*syncv1.VersionNacks // data-plane NACKs by version

	reportKick chan struct{}
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// New starts an agent. It serves its last-known-good bundles from the first moment,
// before any peer answers, then joins the domain's mesh and syncs with its peers. The
// optional tuning is the simulator's and the tests' seam (an internal package).
func New(ctx context.Context, cfg Config, tune ...tuning.Replica) (*Agent, error) {
	switch {
	case cfg.Root == nil:
		return nil, errors.New("node: Config.Root is required")
	case cfg.DataDir == "":
		return nil, errors.New("node: Config.DataDir is required")
	case cfg.Host == nil:
		return nil, errors.New("node: Config.Host is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("domain", cfg.Root.Domain()), clock: cfg.Clock, registry: cfg.Registry,
		offered: map[string]*heldBundle{}, changed: make(chan struct{}), nacks: map[uint64]*syncv1.VersionNacks{},
		reportKick: make(chan struct{}, 1), idKick: make(chan struct{}, 1), started: cfg.Clock.Now(),
	}
	var err error
	if a.metrics, err = newMetrics(cfg.Registry, a); err != nil {
		return nil, err
	}
	rm, err := replica.NewMetrics(cfg.Registry, "meshkit_agent")
	if err != nil {
		return nil, err
	}
	store, err := content.Open(filepath.Join(cfg.DataDir, "content"), content.Options{MaxBlobBytes: cfg.MaxArtifactBytes})
	if err != nil {
		return nil, err
	}
	a.ext = newExtensions(a, store)
	if a.id, err = loadIdentity(filepath.Join(cfg.DataDir, "identity")); err != nil {
		return nil, err
	}
	rcfg := replica.Config{
		Root: cfg.Root, Dir: filepath.Join(cfg.DataDir, "lkg"), Host: cfg.Host, Role: p2p.RoleAgent, Bootstrap: cfg.Bootstrap,
		PeersFile:    filepath.Join(cfg.DataDir, "peers.json"),
		SyncInterval: cfg.SyncInterval, Offer: a.ext, OnConnect: func(p peer.ID) {
			a.kickReport()
			if slices.Contains(a.seedPeers(), p) {
				a.kickIdentity()
			}
		}, OnAdmit: func(peer.ID) { a.kickReport() },
		Clock: cfg.Clock, Logger: a.log, Metrics: rm,
	}
	if cfg.RequirePeerCertificates {
		rcfg.Admission = peerCerts{a}
	}
	if len(tune) > 0 {
		rcfg.Tuning = tune[0]
	}
	if a.rep, err = replica.New(ctx, rcfg); err != nil {
		a.ext.server.Close()
		return nil, err
	}
	a.node.Store(a.rep.Node())
	view := a.rep.View()
	a.mu.Lock()
	a.stale = a.staleReasonLocked(view.LastAccept)
	reason := a.stale
	a.mu.Unlock()
	if reason != "" && len(view.Held) > 0 {
		a.log.Warn("agent is stale", "reason", reason, "serving", "last-known-good") // an empty agent just waits for peers
	}

	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(3)
	if cfg.NodeName != "" && (cfg.JoinToken != "" || a.id.get() != nil) {
		a.wg.Add(1)
		go a.identityLoop(runCtx)
	}
	go func() { defer a.wg.Done(); a.ext.loop(runCtx) }()
	go a.checkLoop(runCtx)
	go a.reportLoop(runCtx)
	return a, nil
}

// Close stops the agent, flushing any bundle not yet persisted. It does not close the host.
func (a *Agent) Close() error {
	err := a.rep.Close()
	a.cancel()
	a.wg.Wait()
	return err
}

// Node is the agent's p2p node.
func (a *Agent) Node() *p2p.Node { return a.rep.Node() }

// contentAllowed says whether a peer may fetch artifacts from this agent: with
// RequirePeerCertificates, admitted peers only, and nobody before the p2p node exists.
func (a *Agent) contentAllowed(p peer.ID) bool {
	if !a.cfg.RequirePeerCertificates {
		return true
	}
	n := a.node.Load()
	return n != nil && n.Admitted(p)
}

// Replica is the agent's receive pipeline: what it holds of each stream, served to peers.
func (a *Agent) Replica() *replica.Replica { return a.rep }

// SyncOnce runs one anti-entropy round and returns how many bundles it adopted.
func (a *Agent) SyncOnce(ctx context.Context) int { return a.rep.SyncOnce(ctx) }

// Changed returns a channel closed at the next change of what the agent holds or offers.
func (a *Agent) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// held notes a newly held bundle: waiters on Changed look again.
func (a *Agent) held() {
	a.mu.Lock()
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
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
	hdr := h.Verified.Header
	exp := hdr.GetExpiresAt().AsTime()
	return Bundle{
		Variant: h.Verified.Variant, Epoch: hdr.GetEpoch(), Version: hdr.GetVersion(), Hash: h.Verified.Held,
		Payload: h.Verified.Payload, ExpiresAt: exp, Expired: a.clock.Now().After(exp),
	}, true
}

// setOffer makes h what the data plane is served of its variant, unless a later install
// of the variant was offered already (offers arrive asynchronously, after admission).
func (a *Agent) setOffer(h *heldBundle) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := h.Key()
	if cur := a.offered[key]; cur != nil && cur.Seq > h.Seq {
		return
	}
	a.offered[key] = h
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
	return trust.Richest(len(hs), func(i int) []string { return hs[i].Verified.Header.GetRequiredCapabilities() },
		func(i int) string { return hs[i].Verified.Variant }, have)
}

// checkLoop evaluates staleness and logs its transitions once.
func (a *Agent) checkLoop(ctx context.Context) {
	defer a.wg.Done()
	t := a.clock.NewTicker(a.cfg.CheckInterval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			a.evaluateStale()
			a.warnIdentity()
			if n%12 == 0 {
				a.ext.gc() // free artifacts no held bundle references (after the store's grace)
			}
		}
	}
}

// evaluateStale updates why the agent is stale and logs a transition.
func (a *Agent) evaluateStale() {
	lastAccept := a.rep.View().LastAccept
	a.mu.Lock()
	defer a.mu.Unlock()
	reason := a.staleReasonLocked(lastAccept)
	if reason != a.stale {
		switch {
		case reason != "" && a.stale == "":
			serving := "nothing"
			if h := a.servingLocked(); h != nil {
				serving = fmt.Sprintf("last-known-good v%d", h.Verified.Header.GetVersion())
			}
			a.log.Warn("agent is stale", "reason", reason, "serving", serving)
		case reason == "":
			a.log.Info("agent is fresh again")
		}
		a.stale = reason
	}
}

// warnIdentity logs the own certificate's warning when it appears or changes kind.
func (a *Agent) warnIdentity() {
	st := a.identityStatus()
	warn := ""
	if st != nil && st.Warning != "" {
		warn, _, _ = strings.Cut(st.Warning, " in ") // "expires in 2h" changes every tick
	}
	a.mu.Lock()
	changed := warn != a.idWarn
	a.idWarn = warn
	a.mu.Unlock()
	if changed && warn != "" {
		a.log.Warn("agent certificate needs attention", "warning", st.Warning, "node", st.Node)
	}
}

func (a *Agent) staleReasonLocked(lastAccept time.Time) string {
	h := a.servingLocked()
	now := a.clock.Now()
	switch {
	case h == nil:
		return "no bundle held"
	case now.After(h.Verified.Header.GetExpiresAt().AsTime()):
		return fmt.Sprintf("bundle v%d expired at %s", h.Verified.Header.GetVersion(), h.Verified.Header.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	case now.Sub(lastAccept) > a.cfg.StaleAfter:
		return fmt.Sprintf("no new bundle for %s (stale after %s)", now.Sub(lastAccept).Truncate(time.Second), a.cfg.StaleAfter)
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
	t := a.clock.NewTicker(reportInterval)
	defer t.Stop()
	var last time.Time // when a report last went to a seed
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportKick:
			wait := reportDelay + time.Duration(rand.Int64N(int64(reportSpread)))
			if !last.IsZero() {
				wait = max(wait, reportGap-a.clock.Since(last))
			}
			select {
			case <-ctx.Done():
				return
			case <-a.clock.After(wait):
			}
		case <-t.Chan():
		}
		r := a.report()
		targets := a.rep.Node().ReportTargets()
		for _, p := range targets {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := a.rep.Node().Report(rctx, p, r); err != nil {
				a.log.Debug("report not delivered", "peer", p, "err", err)
			}
			cancel()
		}
		if len(targets) > 0 { // a report with no seed to take it (none admitted yet) does not hold back the next
			last = a.clock.Now()
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
