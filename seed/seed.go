package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/ca"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/publish"
	"meshkit.dev/meshkit/trust"
)

// Clock gives the time and the timers of the publish loop; inject one in tests.
type Clock = clockwork.Clock

// Config configures a Seed. New calls validate.
type Config struct {
	// Domain is the control domain this seed publishes for. Required.
	Domain string
	// Epoch is this seed's term; every bundle carries it. Required, at least 1.
	Epoch uint64
	// Signer signs bundles and deltas; its key must be in the domain root's seed role.
	Signer trust.Signer
	// CheckpointKeys are the keys, besides Signer's own, whose signature the seed accepts
	// at start on the newest stored bundles, whose headers checkpoint the audit log: the
	// root's seed role, so that a seed restarted with a rotated key still checks what its
	// previous key signed. A stored bundle signed by none of them refuses the start.
	CheckpointKeys []trust.PublicKey
	// Artifacts, when set, checks the artifact of every Extension an apply adds or changes
	// (StoreAdmission: held by the registry, and admitted like agents admit it); an
	// Extension it refuses is refused with its reason.
	Artifacts ArtifactChecker
	// CA, when set, makes the seed the domain's certificate authority: agents enrol with
	// join tokens and ask for certificates over the identity protocol (HandleIdentity).
	CA *ca.Authority
	// CAGenerations, when set with CA, lets the seed rotate its CA: it makes the next
	// generation at half the active one's life (or on RotateCA) and switches after
	// CAOverlap. The store remembers which generation signs.
	CAGenerations CAGenerations
	// LeafLifetime is the lifetime of every leaf the seed issues (0 means
	// ca.DefaultLifetime, 12 h): a CA generation that stops signing at T has no leaf left
	// after T + LeafLifetime, and neither has a revoked node.
	LeafLifetime time.Duration
	// CAOverlap is how long a prepared CA's root is in the published trust bundle before
	// the CA signs; 0 means DefaultCAOverlap.
	CAOverlap time.Duration
	// Root is the domain root (its signed envelope) the seed was started with. With it
	// and CASigner the seed publishes the control stream: the root's rotations, the trust
	// bundle and the revocations.
	Root []byte
	// CASigner signs the control stream; its key must be in the root's CA role.
	CASigner trust.Signer
	// StandbyKeys are further seed keys the seed holds: it signs with each key of its own
	// the root in force lists in its seed role.
	StandbyKeys []trust.Signer
	// KeyDir is where PrepareSeedKey writes the seed keys it makes; empty refuses it.
	KeyDir string
	// TrustDomain is the SPIFFE trust domain of the CA's leaves; empty means Domain.
	TrustDomain string
	// IdentityRate is how many identity calls one peer may make a second (bursts of 20);
	// 0 means DefaultIdentityRate.
	IdentityRate float64
	// Store is the durable state. Required.
	Store Store
	// Publisher receives every publication; nil keeps them in a MemPublisher.
	Publisher Publisher
	// Clock; nil means the system clock.
	Clock Clock
	// Logger; nil discards.
	Logger *slog.Logger
	// Debounce: a publish waits this long after the last change (default 100ms)…
	Debounce time.Duration
	// …but never longer than MaxDelay after the first pending change (default 1s).
	MaxDelay time.Duration
	// BundleTTL is how long a bundle is valid (default 24h); the seed republishes after
	// half of it so agents never hold an expired bundle while the seed is up.
	BundleTTL time.Duration
	// ReadOnly makes a view of the store for a seed that does not lead: it loads and
	// verifies the state as a seed does, serves reads, refuses writes (naming the leader
	// Leadership reports), publishes nothing and runs no loop. Its epoch is the store's.
	ReadOnly bool
	// OnDiverged, when set, is called (once per refused commit) when the store refuses a
	// commit because it moved on without this seed (ErrDiverged): the seed on etcd steps
	// down, and the next term loads the store again.
	OnDiverged func(error)
	// Leadership, when set, reports the domain's election in Status (seeds on etcd).
	Leadership func() *adminv1.Leadership
	// Registry receives the seed's metrics and is served on /metrics; nil means a new one.
	Registry *prometheus.Registry
}

// DefaultConfig returns the defaults for the optional fields.
func DefaultConfig() Config {
	return Config{Debounce: 100 * time.Millisecond, MaxDelay: time.Second, BundleTTL: 24 * time.Hour}
}

func (c *Config) validate() error {
	def := DefaultConfig()
	if c.Debounce == 0 {
		c.Debounce = def.Debounce
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = def.MaxDelay
	}
	if c.BundleTTL == 0 {
		c.BundleTTL = def.BundleTTL
	}
	if c.CAOverlap == 0 {
		c.CAOverlap = DefaultCAOverlap
	}
	if c.LeafLifetime == 0 {
		c.LeafLifetime = ca.DefaultLifetime
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.OnDiverged != nil && c.Store != nil {
		c.Store = divergence{Store: c.Store, fn: c.OnDiverged}
	}
	var errs []error
	if err := trust.ValidDomain(c.Domain); err != nil {
		errs = append(errs, err)
	}
	if c.Epoch < 1 {
		errs = append(errs, errors.New("seed: Config.Epoch must be at least 1"))
	}
	if c.Signer == nil {
		errs = append(errs, errors.New("seed: Config.Signer is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("seed: Config.Store is required"))
	}
	if c.LeafLifetime < 10*time.Second || c.LeafLifetime > ca.MaxLifetime {
		errs = append(errs, fmt.Errorf("seed: Config.LeafLifetime %s; between 10s and %s", c.LeafLifetime, ca.MaxLifetime))
	}
	if c.Debounce < 0 || c.MaxDelay < c.Debounce || c.BundleTTL < time.Minute {
		errs = append(errs, errors.New("seed: need 0 <= Debounce <= MaxDelay and BundleTTL >= 1m"))
	}
	return errors.Join(errs...)
}

// Seed holds one domain's desired state, serves the admin API and publishes bundles.
type Seed struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	db      *memdb.MemDB
	pub     Publisher
	mem     *MemPublisher // set when cfg.Publisher was nil

	kick chan struct{} // non-blocking signal: state changed
	stop context.CancelFunc
	done chan struct{} // closed when the publish loop has exited

	mu        sync.Mutex // guards the following; held by writers for a whole write
	auditHead *adminv1.AuditEntry
	stateHash string
	count     int // resources in the desired state
	// order is the desired state's records in id order, as memdb holds them; a write
	// replaces it (never modifies it), so a publish may hold it without the lock.
	order    []*record
	meta     Meta
	latest   map[string]Published
	compiled map[string]*publish.Compiled // newest published bundles by variant, for deltas
	pending  time.Time                    // when the oldest unpublished change was made; zero when none
	pubHash  string                       // state hash of the newest publication
	pubAt    time.Time
	resign   bool // the signing keys changed: the next publish happens even if nothing else did
	// changed holds the keys written since the newest publication, so the next one is
	// patched from it (publish.Sealer.Seal); changedAll means a change can alter how other
	// resources compile (an Extension, ExtensionBinding or KillSwitch), or nothing was
	// published by this process yet: the next publication is encoded whole.
	changed    map[bundle.Key]bool
	changedAll bool
	// chains is, per variant, what the store holds after its newest stored snapshot.
	chains  map[string]chainLen
	lastErr error
	history []*adminv1.Publication // oldest first

	sealer *publish.Sealer // owned by the publish loop goroutine

	identity *identity // nil unless Config.CA is set

	ctl     *ctlState
	ctlPub  sync.Mutex // one control publish at a time, in version order
	caMu    sync.Mutex // one CA rotation step at a time
	ctlKick chan struct{}
	wg      sync.WaitGroup // the control loop
}

// New loads the store and starts the publish loop. Close stops it.
func New(ctx context.Context, cfg Config) (*Seed, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	loaded, err := cfg.Store.Load(ctx)
	if err != nil {
		return nil, err
	}
	if loaded.Meta.Domain != "" && loaded.Meta.Domain != cfg.Domain {
		return nil, fmt.Errorf("seed: data directory belongs to domain %q, not %q", loaded.Meta.Domain, cfg.Domain)
	}
	if cfg.ReadOnly {
		cfg.Epoch = max(cfg.Epoch, loaded.Meta.Epoch)
	}
	if loaded.Meta.Epoch > cfg.Epoch {
		return nil, fmt.Errorf("seed: data directory has published at epoch %d; this seed's epoch %d is older", loaded.Meta.Epoch, cfg.Epoch)
	}
	s := &Seed{
		cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), done: make(chan struct{}), ctlKick: make(chan struct{}, 1),
		auditHead: loaded.AuditHead, meta: loaded.Meta, history: loaded.History, chains: map[string]chainLen{},
		compiled: map[string]*publish.Compiled{}, sealer: publish.NewSealer(cfg.Signer),
		changed: map[bundle.Key]bool{}, changedAll: true,
	}
	s.meta.Domain = cfg.Domain
	if s.metrics, err = newMetrics(cfg.Registry); err != nil {
		return nil, err
	}
	if s.identity, err = newIdentity(cfg, loaded.Identity); err != nil {
		return nil, err
	}
	if err := s.newControl(loaded.Identity); err != nil {
		return nil, err
	}
	if s.pub = cfg.Publisher; s.pub == nil {
		s.mem = NewMemPublisher(len(loaded.History) + 100)
		s.pub = s.mem
	}
	if s.db, err = memdb.NewMemDB(schema()); err != nil {
		return nil, fmt.Errorf("seed: memdb: %w", err)
	}
	txn := s.db.Txn(true)
	for _, r := range loaded.Resources {
		rec, err := newRecord(r)
		if err != nil {
			txn.Abort()
			return nil, fmt.Errorf("seed: stored resource: %w", err)
		}
		if err := txn.Insert(tableResources, rec); err != nil {
			txn.Abort()
			return nil, fmt.Errorf("seed: memdb insert: %w", err)
		}
	}
	txn.Commit()
	recs := s.snapshot().records()
	s.stateHash, s.count, s.order = stateHash(recs), len(recs), recs
	// The whole log is verified, link by link, before anything is served from the store:
	// its head against the stored state, and its entries against the checkpoints that the
	// newest published bundles (signed with this seed's key) carry.
	entries, err := cfg.Store.Audit(ctx, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("seed: read the audit log: %w", err)
	}
	head, err := VerifyChain(entries)
	if err != nil {
		return nil, err
	}
	if head.GetHash() != s.auditHead.GetHash() {
		return nil, fmt.Errorf("%w: the log ends at entry %d, the store's head is entry %d", ErrAuditChain, head.GetSeq(), s.auditHead.GetSeq())
	}
	if err := s.checkAuditHead(); err != nil {
		return nil, err
	}
	if err := checkCheckpoints(entries, loaded.Latest, checkpointKeys(cfg)); err != nil {
		return nil, err
	}
	if s.latest, err = s.restoreLatest(loaded.Latest); err != nil {
		return nil, err
	}
	if err := s.loadCompiled(); err != nil {
		return nil, err
	}
	if n := len(s.history); n > 0 {
		s.pubAt = s.history[n-1].GetPublishedAt().AsTime()
		s.pubHash = s.auditPublishedHash()
	}
	if (s.meta.Version == 0 && len(recs) > 0) || (s.meta.Version > 0 && s.pubHash != s.stateHash) {
		s.pending = cfg.Clock.Now() // unpublished changes survived a restart
	}
	if s.meta.Version > 0 && s.meta.Epoch < cfg.Epoch {
		// A new term (a failover, or --epoch raised): publish at once, so every agent moves
		// to this epoch and the old leader's bundles can no longer be replayed over it.
		s.pending, s.resign = cfg.Clock.Now(), true
	}
	s.metrics.resources.Set(float64(len(recs)))
	s.metrics.version.Set(float64(s.meta.Version))
	if r, ok := s.pub.(Restorer); ok && len(s.latest) > 0 && len(s.history) > 0 {
		r.Restore(s.restoredPublication())
	}
	if cfg.ReadOnly {
		s.stop = func() {}
		close(s.done)
		return s, nil
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.publishLoop(loopCtx)
	s.wg.Add(1)
	go s.controlLoop(loopCtx)
	if !s.pending.IsZero() {
		s.signal()
	}
	return s, nil
}

// checkAuditHead refuses to start when the stored state is not what the audit log says:
// the state and the log are written in one transaction, so a mismatch means tampering.
func (s *Seed) checkAuditHead() error {
	if s.auditHead == nil {
		if s.stateHash != stateHash(nil) {
			return fmt.Errorf("%w: resources are stored but the audit log is empty", ErrAuditChain)
		}
		return nil
	}
	if entryHash(s.auditHead) != s.auditHead.GetHash() {
		return fmt.Errorf("%w: the newest entry (%d) was altered", ErrAuditChain, s.auditHead.GetSeq())
	}
	if s.auditHead.GetAfterHash() != s.stateHash {
		return fmt.Errorf("%w: stored state %s is not the state %s the newest entry (%d) recorded", ErrAuditChain, s.stateHash, s.auditHead.GetAfterHash(), s.auditHead.GetSeq())
	}
	return nil
}

// checkpointKeys are cfg.CheckpointKeys and the signer's own public key, when it tells it
// (a trust.PrivateKey does; a KMS signer may not).
func checkpointKeys(cfg Config) []trust.PublicKey {
	keys := slices.Clone(cfg.CheckpointKeys)
	for _, s := range append([]trust.Signer{cfg.Signer}, cfg.StandbyKeys...) {
		if k, ok := s.(interface{ Public() trust.PublicKey }); ok {
			keys = append(keys, k.Public())
		}
	}
	return keys
}

// auditPublishedHash is the state the newest publish compiled, when the audit head is that
// publish; otherwise unknown, so the next publish happens. It is the entry's StateHash,
// not its AfterHash: a write that lands while a publish compiles is in the state the
// publish entry is committed on (AfterHash) but not in the bundles it signed.
func (s *Seed) auditPublishedHash() string {
	if s.auditHead != nil && s.auditHead.GetAction() == actionPublish {
		return s.auditHead.GetStateHash()
	}
	return ""
}

// Close stops the publish loop and waits for it. It does not close the Store.
func (s *Seed) Close() error {
	s.stop()
	<-s.done
	s.wg.Wait()
	return nil
}

func (s *Seed) snapshot() snapshot { return snapshot{txn: s.db.Txn(false)} }

// signal wakes the publish loop without ever blocking.
func (s *Seed) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// MemPublisher returns the in-memory publisher when no Publisher was configured.
func (s *Seed) MemPublisher() *MemPublisher { return s.mem }

// restoredPublication is the newest publication as the store kept it (without announces).
func (s *Seed) restoredPublication() *Publication {
	return publicationOf(s.history[len(s.history)-1], s.latest)
}

// publicationOf is a publication record with its variants' envelopes (no announces).
func publicationOf(info *adminv1.Publication, latest map[string]Published) *Publication {
	p := &Publication{Info: info}
	for _, key := range slices.Sorted(maps.Keys(latest)) {
		l := latest[key]
		var caps []string
		if key != "" {
			caps = strings.Split(key, ",")
		}
		p.Variants = append(p.Variants, PublishedVariant{RequiredCapabilities: caps, Snapshot: l.Snapshot, Delta: l.Delta})
	}
	return p
}
