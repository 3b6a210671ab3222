package seed

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/publish"
	"meshkit.dev/meshkit/trust"
)

// Publication is one published version with its signed envelopes.
type Publication = publish.Publication

// PublishedVariant is one capability variant of a publication.
type PublishedVariant = publish.Variant

// Publisher receives every publication after it is durably recorded. The peer-to-peer
// publisher (gossipsub) implements it; MemPublisher keeps them in memory.
type Publisher interface {
	Publish(ctx context.Context, p *Publication) error
}

// MemPublisher keeps the newest publications in memory.
type MemPublisher struct {
	mu      sync.Mutex // guards pubs and control
	keep    int
	pubs    []*Publication // oldest first
	control []byte         // the newest control envelope
	cond    chan struct{}  // closed and replaced on every publish
}

var (
	_ Publisher        = (*MemPublisher)(nil)
	_ ControlPublisher = (*MemPublisher)(nil)
)

// PublishControl records the newest control message.
func (m *MemPublisher) PublishControl(_ context.Context, envelope []byte) error {
	m.mu.Lock()
	m.control = envelope
	m.mu.Unlock()
	return nil
}

// Control returns the newest control envelope, or nil.
func (m *MemPublisher) Control() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.control
}

// NewMemPublisher keeps the newest keep publications.
func NewMemPublisher(keep int) *MemPublisher {
	return &MemPublisher{keep: max(keep, 1), cond: make(chan struct{})}
}

// Publish records p.
func (m *MemPublisher) Publish(_ context.Context, p *Publication) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pubs = append(m.pubs, p)
	if len(m.pubs) > m.keep {
		m.pubs = slices.Delete(m.pubs, 0, len(m.pubs)-m.keep)
	}
	close(m.cond)
	m.cond = make(chan struct{})
	return nil
}

// History returns the kept publications, oldest first.
func (m *MemPublisher) History() []*Publication {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pubs)
}

// WaitVersion blocks until a publication of at least version exists or ctx ends.
func (m *MemPublisher) WaitVersion(ctx context.Context, version uint64) (*Publication, error) {
	for {
		m.mu.Lock()
		if n := len(m.pubs); n > 0 && m.pubs[n-1].Info.GetVersion() >= version {
			p := m.pubs[n-1]
			m.mu.Unlock()
			return p, nil
		}
		wait := m.cond
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wait:
		}
	}
}

const actionPublish = "publish"

// publishLoop is the one goroutine that compiles and publishes. Changes signal it; it
// waits until Debounce passes without another change (at most MaxDelay after the first),
// so a burst of writes becomes one bundle. It also republishes after half the bundle TTL.
func (s *Seed) publishLoop(ctx context.Context) {
	defer close(s.done)
	retry := time.Duration(0)
	for {
		s.mu.Lock()
		refreshIn := s.cfg.BundleTTL / 2
		if !s.pubAt.IsZero() {
			refreshIn = s.pubAt.Add(s.cfg.BundleTTL / 2).Sub(s.cfg.Clock.Now())
		}
		s.mu.Unlock()
		if retry > 0 {
			refreshIn = min(refreshIn, retry)
		}
		refresh := s.cfg.Clock.NewTimer(max(refreshIn, 0))
		force := false
		select {
		case <-ctx.Done():
			refresh.Stop()
			return
		case <-s.kick:
			refresh.Stop()
			if !s.debounce(ctx) {
				return
			}
		case <-refresh.Chan():
			force = retry == 0
		}
		if err := s.publishOnce(ctx, force); err != nil {
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			s.metrics.publishErrors.Inc()
			s.log.Error("publish failed; will retry", "err", err)
			retry = min(max(retry*2, 500*time.Millisecond), 30*time.Second)
			continue
		}
		retry = 0
	}
}

// debounce waits for a quiet period; false when ctx ended.
func (s *Seed) debounce(ctx context.Context) bool {
	deadline := s.cfg.Clock.Now().Add(s.cfg.MaxDelay)
	for {
		wait := min(s.cfg.Debounce, deadline.Sub(s.cfg.Clock.Now()))
		if wait <= 0 {
			return true
		}
		t := s.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-s.kick:
			t.Stop()
		case <-t.Chan():
			return true
		}
	}
}

// publishOnce compiles the current desired state into signed variants and publishes them.
// Compilation and signing run without the write lock, on a memdb snapshot, so the admin
// API is never blocked by a publish; only the durable record takes the lock.
func (s *Seed) publishOnce(ctx context.Context, force bool) error {
	s.mu.Lock() // the snapshot, its hash and the audit head must match: writers update them under mu
	recs, hash := s.order, s.stateHash
	auditSeq, auditHead := s.auditHead.GetSeq(), s.auditHead.GetHash()
	meta, prev, pendingSince := s.meta, s.compiled, s.pending
	unchanged := hash == s.pubHash && meta.Version > 0
	force = force || s.resign
	s.resign = false // set again below if this publish fails
	changed, changedAll := s.changed, s.changedAll
	s.changed, s.changedAll = map[bundle.Key]bool{}, false
	s.mu.Unlock()
	resign := force
	committed := false
	defer func() {
		s.mu.Lock()
		if resign {
			s.resign = true
		}
		if !committed { // the next publication is patched from the newest committed one
			for k := range changed {
				s.changed[k] = true
			}
			s.changedAll = s.changedAll || changedAll
		}
		s.mu.Unlock()
	}()
	if changedAll {
		changed = nil
	}
	if unchanged && !force {
		s.mu.Lock()
		if s.stateHash == hash {
			s.pending = time.Time{}
		}
		s.mu.Unlock()
		return nil
	}

	now := s.cfg.Clock.Now().UTC().Truncate(time.Millisecond)
	version := meta.Version + 1
	hdr := bundle.Header{Domain: s.cfg.Domain, Epoch: s.cfg.Epoch, Version: version, IssuedAt: now, ExpiresAt: now.Add(s.cfg.BundleTTL),
		AuditSeq: auditSeq, AuditHead: auditHead}
	variants := Compile(hdr, objects(recs))
	pub := &Publication{Info: &adminv1.Publication{Epoch: s.cfg.Epoch, Version: version, PublishedAt: timestamppb.New(now)}}
	latest := map[string]Published{}
	stored := map[string]Published{}
	chains := map[string]chainLen{}
	compiled := map[string]*publish.Compiled{}
	var subjects []string
	for _, v := range variants {
		pv, cv, err := s.sealer.Seal(v, prev[variantKey(v)], changed)
		if err != nil {
			return err
		}
		key := variantKey(v)
		latest[key] = Published{Snapshot: pv.Snapshot, Delta: pv.Delta}
		stored[key] = latest[key]
		if c := s.chains[key]; storeDelta(c, pv, prev[key] != nil) {
			stored[key] = Published{Delta: pv.Delta} // the store appends it to the chain
			chains[key] = chainLen{n: c.n + 1, bytes: c.bytes + len(pv.Delta)}
		}
		compiled[key] = cv
		pub.Variants = append(pub.Variants, pv)
		pub.Info.Variants = append(pub.Info.Variants, &adminv1.Variant{
			RequiredCapabilities: pv.RequiredCapabilities, Hash: bundle.Hash(cv.Payload).String(),
			SnapshotBytes: uint64(len(pv.Snapshot)), DeltaBytes: uint64(len(pv.Delta)),
		})
		subjects = append(subjects, fmt.Sprintf("%s %s", key, bundle.Hash(cv.Payload)))
		s.metrics.bundleBytes.WithLabelValues(key).Set(float64(len(pv.Snapshot)))
	}

	s.mu.Lock()
	entry := chain(s.auditHead, &adminv1.AuditEntry{
		Time: timestamppb.New(now), Actor: "seed", Action: actionPublish, Subjects: subjects,
		BeforeHash: s.stateHash, AfterHash: s.stateHash, StateHash: hash, Version: version,
	})
	pub.Info.AuditSeq = entry.GetSeq()
	newMeta := Meta{Domain: s.cfg.Domain, Epoch: s.cfg.Epoch, Version: version}
	if err := s.cfg.Store.Commit(ctx, &Tx{Audit: entry, Publication: pub.Info, Latest: stored, Meta: &newMeta}); err != nil {
		s.mu.Unlock()
		return err
	}
	committed = true
	s.auditHead, s.meta, s.latest, s.compiled, s.chains = entry, newMeta, latest, compiled, chains
	s.pubHash, s.pubAt, s.lastErr = hash, now, nil
	s.history = append(s.history, pub.Info)
	if len(s.history) > 100 {
		s.history = s.history[len(s.history)-100:]
	}
	s.mu.Unlock()

	// Pending clears only once the publisher has the publication, so Status never reports
	// as published what no agent could have received yet.
	if err := s.pub.Publish(ctx, pub); err != nil {
		s.mu.Lock()
		s.pubHash = "" // recorded but not delivered: the retry must publish again
		s.mu.Unlock()
		return fmt.Errorf("seed: publisher: %w", err)
	}
	s.mu.Lock()
	if s.stateHash == hash {
		s.pending = time.Time{}
	} else {
		s.signal() // changes arrived while compiling: publish again
	}
	s.mu.Unlock()
	if !pendingSince.IsZero() {
		s.metrics.publishLatency.Observe(s.cfg.Clock.Since(pendingSince).Seconds())
	}
	s.metrics.version.Set(float64(version))
	s.metrics.publishes.Inc()
	s.log.Info("published", "domain", s.cfg.Domain, "epoch", s.cfg.Epoch, "version", version, "variants", len(variants), "state", hash)
	resign = false
	return nil
}

// chainLen is how many deltas, of how many bytes, a variant's stored chain holds.
type chainLen struct{ n, bytes int }

// Chain bounds: a publish stores its delta instead of its snapshot while the variant's
// chain has fewer than maxChain deltas and they add up to less than a quarter of the
// snapshot, so a restart rebuilds the newest version from at most maxChain small deltas.
const maxChain = 32

// storeDelta says whether a variant's publication is stored as its delta alone.
func storeDelta(c chainLen, pv PublishedVariant, hadPrev bool) bool {
	return hadPrev && pv.Delta != nil && c.n < maxChain && (c.bytes+len(pv.Delta))*4 < len(pv.Snapshot)
}

// restoreLatest rebuilds each variant's newest snapshot from what the store holds.
func (s *Seed) restoreLatest(stored map[string]Stored) (map[string]Published, error) {
	latest, chains, err := rebuild(s.sealer, stored)
	if err != nil {
		return nil, err
	}
	s.chains = chains
	return latest, nil
}

// rebuild turns what a store holds of each variant (a snapshot and the deltas after it)
// into its newest envelopes: the deltas applied in order, each checked against the hash
// it promises, and the result sealed again (Ed25519 signs deterministically: the same
// keys give the same envelope).
func rebuild(sealer *publish.Sealer, stored map[string]Stored) (map[string]Published, map[string]chainLen, error) {
	out := make(map[string]Published, len(stored))
	chains := map[string]chainLen{}
	for key, st := range stored {
		if len(st.Chain) == 0 {
			out[key] = Published{Snapshot: st.Snapshot, Delta: st.Delta}
			continue
		}
		env, err := trust.DecodeEnvelope(st.Snapshot, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("seed: stored bundle %q: %w", key, err)
		}
		payload := env.GetPayload()
		c := chainLen{}
		for i, raw := range st.Chain {
			denv, err := trust.DecodeEnvelope(raw, 0)
			if err != nil {
				return nil, nil, fmt.Errorf("seed: stored delta %d of %q: %w", i+1, key, err)
			}
			view, err := bundle.DecodeDeltaView(denv.GetPayload())
			if err != nil {
				return nil, nil, fmt.Errorf("seed: stored delta %d of %q: %w", i+1, key, err)
			}
			if payload, err = bundle.ApplyDeltaView(payload, bundle.Hash(payload), view); err != nil {
				return nil, nil, fmt.Errorf("%w: stored delta %d of %q does not apply: %v", ErrAuditChain, i+1, key, err)
			}
			c.n, c.bytes = c.n+1, c.bytes+len(raw)
		}
		snap, err := sealer.SealBundle(payload)
		if err != nil {
			return nil, nil, err
		}
		out[key] = Published{Snapshot: snap, Delta: st.Chain[len(st.Chain)-1]}
		chains[key] = c
	}
	return out, chains, nil
}

// PublicationFrom is the newest publication a store holds (info, its newest history
// record, and what it stores of each variant), snapshots rebuilt and sealed with signer:
// what a seed that does not lead serves over sync (Restorer), as its leader published it.
func PublicationFrom(info *adminv1.Publication, stored map[string]Stored, signer trust.Signer) (*Publication, error) {
	latest, _, err := rebuild(publish.NewSealer(signer), stored)
	if err != nil {
		return nil, err
	}
	return publicationOf(info, latest), nil
}

// loadCompiled decodes the stored newest envelopes so the first publish after a restart
// can still produce deltas.
func (s *Seed) loadCompiled() error {
	for key, p := range s.latest {
		env, err := trust.DecodeEnvelope(p.Snapshot, 0)
		if err != nil {
			return fmt.Errorf("seed: stored bundle %q: %w", key, err)
		}
		b, err := bundle.DecodeBundle(env.GetPayload())
		if err != nil {
			return fmt.Errorf("seed: stored bundle %q: %w", key, err)
		}
		s.compiled[key] = &publish.Compiled{Bundle: b, Payload: env.GetPayload()}
	}
	return nil
}

// pickVariant returns the key of the variant a node advertising caps gets: the one with
// the most required capabilities that are all advertised; "" when none fits. Empty caps
// pick the full variant.
func pickVariant(latest map[string]Published, compiled map[string]*publish.Compiled, caps []string) string {
	keys := slices.Collect(maps.Keys(latest))
	if len(caps) == 0 {
		caps = nil // the full variant
	}
	i := trust.Richest(len(keys), func(i int) []string { return compiled[keys[i]].Bundle.GetHeader().GetRequiredCapabilities() },
		func(i int) string { return keys[i] }, caps)
	if i < 0 {
		return ""
	}
	return keys[i]
}
