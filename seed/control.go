package seed

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/ca"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

// ControlPublisher floods a control message on the domain's topic and serves the newest
// over sync. A Publisher that implements it carries the control stream.
type ControlPublisher interface {
	PublishControl(ctx context.Context, envelope []byte) error
}

// CAGenerations opens and creates the generations of the domain CA the seed rotates
// through; ca.Dir keeps them in a directory.
type CAGenerations interface {
	Open(gen string) (*ca.Authority, error)
	Create(gen string, now time.Time) (*ca.Authority, error)
}

// Audit actions of the control stream.
const (
	actionRevoke     = "revoke"
	actionRootRotate = "root-rotate"
	actionSeedKey    = "seed-key-create"
	actionCARotate   = "ca-rotate"
	// actionControlPublish records each control version signed.
	actionControlPublish = "control-publish"
)

// DefaultCAOverlap is how long the next CA is in the trust bundle before it signs.
const DefaultCAOverlap = time.Hour

// maxRevocations bounds the seed's list, as agents bound what they accept.
const maxRevocations = trust.MaxRevocations

// ctlState is the seed's control stream: the root in force and its rotations, the seed
// keys, the CA generations and the revocations. Guarded by its own lock, taken after
// identity's, never before.
type ctlState struct {
	mu          sync.Mutex
	root        *trust.Root
	rotations   [][]byte // signed roots after the configured one's chain start, oldest first
	keys        []trust.Signer
	version     uint64
	revocations map[string]*identityv1.Revocation // by revocationKey
	index       *ca.Revoked                       // revocations indexed; nil after a change
	ca          *adminv1.CAState
	gens        map[string]*ca.Authority
	envelope    []byte // the newest signed control message
	signedAt    time.Time
}

func revocationKey(r *identityv1.Revocation) string {
	return r.GetSerial() + "|" + r.GetPeerId() + "|" + r.GetNode()
}

// newControl restores the control state from the store's records.
func (s *Seed) newControl(recs []*adminv1.IdentityRecord) error {
	cfg := s.cfg
	c := &ctlState{keys: append([]trust.Signer{cfg.Signer}, cfg.StandbyKeys...), revocations: map[string]*identityv1.Revocation{},
		ca: &adminv1.CAState{}, gens: map[string]*ca.Authority{}}
	if cfg.Root != nil {
		r, err := trust.VerifyRoot(cfg.Root)
		if err != nil {
			return fmt.Errorf("seed: Config.Root: %w", err)
		}
		if r.Domain() != cfg.Domain {
			return fmt.Errorf("seed: Config.Root is for domain %q, not %q", r.Domain(), cfg.Domain)
		}
		c.root = r
	}
	var stored [][]byte
	for _, rec := range recs {
		switch r := rec.GetRecord().(type) {
		case *adminv1.IdentityRecord_Root:
			stored = append(stored, r.Root)
		case *adminv1.IdentityRecord_Revocation:
			c.revocations[revocationKey(r.Revocation)] = r.Revocation
		case *adminv1.IdentityRecord_Control:
			c.version = r.Control.GetVersion()
		case *adminv1.IdentityRecord_Ca:
			c.ca = r.Ca
		}
	}
	if c.root != nil {
		for _, b := range stored { // stored oldest first: keys sort by version
			env, err := trust.DecodeEnvelope(b, 0)
			if err != nil {
				return fmt.Errorf("seed: stored root: %w", err)
			}
			m := &trustv1.DomainRoot{}
			if err := proto.Unmarshal(env.GetPayload(), m); err != nil {
				return fmt.Errorf("seed: stored root: %w", err)
			}
			c.rotations = append(c.rotations, b)
			if m.GetVersion() <= c.root.Version() {
				continue
			}
			next, err := c.root.VerifyNext(b)
			if err != nil {
				return fmt.Errorf("seed: stored root v%d: %w", m.GetVersion(), err)
			}
			c.root = next
		}
		if len(c.signersLocked()) == 0 {
			return fmt.Errorf("seed: root v%d lists none of this seed's keys in its seed role; start it with one of them", c.root.Version())
		}
	}
	if cfg.CA != nil {
		c.gens[""] = cfg.CA
		for _, g := range c.generations() {
			if g == "" {
				continue
			}
			if cfg.CAGenerations == nil {
				return fmt.Errorf("seed: the store names CA generation %q but Config.CAGenerations is not set", g)
			}
			a, err := cfg.CAGenerations.Open(g)
			if err != nil {
				return fmt.Errorf("seed: CA generation %q: %w", g, err)
			}
			c.gens[g] = a
		}
	}
	s.ctl = c
	s.sealer.SetSigners(c.signersLocked()...)
	if s.identity != nil {
		s.identity.setAuthority(c.gens[c.ca.GetActive()])
	}
	return nil
}

// generations are the CA generations in the trust bundle: active, next, retiring.
func (c *ctlState) generations() []string {
	out := []string{c.ca.GetActive()}
	if c.ca.GetNext() != "" {
		out = append(out, c.ca.GetNext())
	}
	for _, r := range c.ca.GetRetiring() {
		out = append(out, r.GetGeneration())
	}
	return out
}

// signersLocked are the seed's keys the root in force lists in its seed role (every key
// when the seed was given no root).
func (c *ctlState) signersLocked() []trust.Signer {
	if c.root == nil {
		return c.keys[:1]
	}
	listed := map[string]bool{}
	for _, k := range c.root.RoleKeys(trustv1.RoleType_ROLE_TYPE_SEED) {
		listed[k.ID] = true
	}
	var out []trust.Signer
	for _, k := range c.keys {
		if listed[k.KeyID()] {
			out = append(out, k)
		}
	}
	return out
}

// trustBundleLocked is the PEM of every CA generation's roots, without revoked ones.
func (c *ctlState) trustBundleLocked() []byte {
	var certs []*x509.Certificate
	for _, g := range c.generations() {
		a := c.gens[g]
		if a == nil {
			continue
		}
		for _, r := range a.Roots() {
			if !slices.ContainsFunc(certs, func(x *x509.Certificate) bool { return bytes.Equal(x.Raw, r.Raw) }) && !c.serialRevokedLocked(r.SerialNumber) {
				certs = append(certs, r)
			}
		}
	}
	return ca.EncodePEM(certs...)
}

func (c *ctlState) serialRevokedLocked(n *big.Int) bool {
	_, ok := c.indexLocked().Serial(n, time.Time{}) // revoked CAs stay out for good
	return ok
}

// TrustBundle is the PEM trust bundle the domain verifies leaves with: the active CA's
// roots, and while the CA rotates, the next or the retiring ones.
func (s *Seed) TrustBundle() []byte {
	if s.ctl == nil || s.identity == nil {
		return nil
	}
	s.ctl.mu.Lock()
	defer s.ctl.mu.Unlock()
	return s.ctl.trustBundleLocked()
}

// indexLocked is the revocations as ca.Revoked, built again after each change.
func (c *ctlState) indexLocked() *ca.Revoked {
	if c.index == nil {
		c.index = &ca.Revoked{}
		for _, r := range c.revocations {
			c.index.Add(r.GetSerial(), r.GetPeerId(), r.GetNode(), r.GetReason(), r.GetUntil().AsTime())
		}
	}
	return c.index
}

// CheckRevoked refuses a peer, or a chain (DER, leaf first) whose certificate or node the
// domain revoked. peerID is empty for a TLS client.
func (s *Seed) CheckRevoked(peerID string, chain [][]byte) error {
	if s.ctl == nil {
		return nil
	}
	s.ctl.mu.Lock()
	idx := s.ctl.indexLocked()
	s.ctl.mu.Unlock()
	if err := idx.Check(peerID, chain, s.cfg.Clock.Now()); err != nil {
		return refuse(ErrForbidden, "%v", err)
	}
	return nil
}

// revokedNode says why node or peer p may no longer enrol or be issued certificates.
func (s *Seed) revokedNode(node string, p peer.ID) error {
	if s.ctl == nil {
		return nil
	}
	s.ctl.mu.Lock()
	idx := s.ctl.indexLocked()
	s.ctl.mu.Unlock()
	pid := ""
	if p != "" {
		pid = p.String()
	}
	if err := idx.Party(node, pid, s.cfg.Clock.Now()); err != nil {
		return refuse(ErrForbidden, "%v", err)
	}
	return nil
}

// Revoke refuses a node, a certificate or a peer across the domain, audited as actor:
// the revocation is stored, then published on the control stream.
func (s *Seed) Revoke(ctx context.Context, actor string, req *adminv1.RevokeRequest) (*adminv1.RevokeResponse, error) {
	if s.identity == nil {
		return nil, refuse(ErrConflict, "this seed is not a certificate authority (start it with a CA)")
	}
	set := 0
	for _, v := range []string{req.GetNode(), req.GetSerial(), req.GetPeerId()} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return nil, refuse(ErrInvalid, "name exactly one of node, serial and peer_id")
	}
	if len(req.GetReason()) > 256 {
		return nil, refuse(ErrInvalid, "reason of %d bytes; at most 256", len(req.GetReason()))
	}
	now := s.cfg.Clock.Now()
	// Every leaf the seed issues lives Config.LeafLifetime, and it issues none to what is revoked:
	// after that, nothing the entry refuses is valid any more.
	rev := &identityv1.Revocation{Reason: req.GetReason(), Until: timestamppb.New(now.Add(s.cfg.LeafLifetime))}
	var subjects []string
	switch {
	case req.GetNode() != "":
		if err := ca.CheckNodeName(req.GetNode()); err != nil {
			return nil, refuse(ErrInvalid, "%v", err)
		}
		rev.Node = req.GetNode()
		if p := s.identity.peerOf(req.GetNode()); p != "" {
			rev.PeerId = p.String()
		}
		subjects = []string{"node " + rev.Node}
	case req.GetSerial() != "":
		n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(req.GetSerial()), "0x"), 16)
		if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
			return nil, refuse(ErrInvalid, "serial %q is not a positive hexadecimal number of at most 20 bytes", req.GetSerial())
		}
		rev.Serial = ca.NormalSerial(n.Text(16))
		if until, ok := s.caCertExpiry(n); ok {
			rev.Until = timestamppb.New(until) // an intermediate: refused until it expires
		}
		subjects = []string{"serial " + rev.Serial}
	default:
		p, err := peer.Decode(req.GetPeerId())
		if err != nil {
			return nil, refuse(ErrInvalid, "peer_id: %v", err)
		}
		rev.PeerId = p.String()
		subjects = []string{"peer " + rev.PeerId}
	}
	c := s.ctl
	c.mu.Lock()
	c.dropExpiredLocked(now)
	if len(c.revocations) >= maxRevocations {
		c.mu.Unlock()
		return nil, refuse(ErrUnavailable, "%d revocations are in force; the list is full until some expire", len(c.revocations))
	}
	c.mu.Unlock()
	if rev.Reason != "" {
		subjects = append(subjects, "reason "+rev.Reason)
	}
	// A revoked node or peer also loses its enrolment, so it cannot renew once the entry
	// has expired: coming back takes a new join token.
	unbound := s.identity.unbind(rev.GetNode(), rev.GetPeerId())
	ver, err := s.commitControl(ctx, actor, actionRevoke, subjects, func(c *ctlState) []*adminv1.IdentityRecord {
		c.revocations[revocationKey(rev)] = rev
		c.index = nil
		return append(unbound, &adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Revocation{Revocation: rev}})
	})
	if err != nil {
		return nil, err
	}
	s.log.Warn("revoked", "node", rev.Node, "serial", rev.Serial, "peer", rev.PeerId, "reason", rev.Reason)
	return &adminv1.RevokeResponse{Revocation: rev, ControlVersion: ver}, nil
}

// caCertExpiry is the expiry of the CA certificate with serial n, when one of the CA
// generations' chains holds it.
func (s *Seed) caCertExpiry(n *big.Int) (time.Time, bool) {
	s.ctl.mu.Lock()
	defer s.ctl.mu.Unlock()
	for _, a := range s.ctl.gens {
		for _, c := range append([]*x509.Certificate{a.Certificate()}, a.Chain()...) {
			if c.SerialNumber.Cmp(n) == 0 {
				return c.NotAfter, true
			}
		}
	}
	return time.Time{}, false
}

func (c *ctlState) dropExpiredLocked(now time.Time) {
	for k, r := range c.revocations {
		if now.After(r.GetUntil().AsTime()) {
			delete(c.revocations, k)
			c.index = nil
		}
	}
}

// commitControl changes the control state with change (under its lock), stores what
// change returns and an audit entry in one transaction, and publishes the new control
// message, whose version it returns (0 when the seed publishes no control stream). On a
// failed store nothing changes.
func (s *Seed) commitControl(ctx context.Context, actor, action string, subjects []string, change func(*ctlState) []*adminv1.IdentityRecord) (uint64, error) {
	c := s.ctl
	s.ctlPub.Lock()
	defer s.ctlPub.Unlock()
	c.mu.Lock()
	saved := c.snapshotLocked()
	recs := change(c)
	c.mu.Unlock()
	if err := s.recordIdentity(ctx, actor, action, subjects, recs...); err != nil {
		c.mu.Lock()
		c.restoreLocked(saved)
		c.mu.Unlock()
		return 0, err
	}
	s.kickControl()
	ver, _, err := s.publishControlLocked(ctx, s.cfg.Clock.Now(), true)
	if err != nil {
		// Stored: the control loop publishes it when it can.
		s.log.Warn("control message not published yet; will retry", "err", err)
	}
	return ver, nil
}

type ctlSnapshot struct {
	root        *trust.Root
	rotations   [][]byte
	keys        []trust.Signer
	version     uint64
	revocations map[string]*identityv1.Revocation
	ca          *adminv1.CAState
	gens        map[string]*ca.Authority
}

func (c *ctlState) snapshotLocked() ctlSnapshot {
	revs := make(map[string]*identityv1.Revocation, len(c.revocations))
	for k, v := range c.revocations {
		revs[k] = v
	}
	gens := make(map[string]*ca.Authority, len(c.gens))
	for k, v := range c.gens {
		gens[k] = v
	}
	return ctlSnapshot{root: c.root, rotations: slices.Clone(c.rotations), keys: slices.Clone(c.keys), version: c.version,
		revocations: revs, ca: proto.Clone(c.ca).(*adminv1.CAState), gens: gens}
}

func (c *ctlState) restoreLocked(v ctlSnapshot) {
	c.root, c.rotations, c.keys, c.version, c.revocations, c.ca, c.gens = v.root, v.rotations, v.keys, v.version, v.revocations, v.ca, v.gens
	c.index = nil
}

// kickControl wakes the control loop without blocking.
func (s *Seed) kickControl() {
	select {
	case s.ctlKick <- struct{}{}:
	default:
	}
}

// controlLoop signs and publishes the control message again at half its validity, and
// moves the CA's rotation on when it is due.
func (s *Seed) controlLoop(ctx context.Context) {
	defer s.wg.Done()
	for {
		now := s.cfg.Clock.Now()
		if err := s.maintainCA(ctx, now); err != nil {
			s.log.Error("CA rotation step failed; will retry", "err", err)
		}
		s.ctlPub.Lock()
		_, wait, err := s.publishControlLocked(ctx, now, false)
		s.ctlPub.Unlock()
		if err != nil {
			s.log.Warn("control message not published; will retry", "err", err)
			wait = 5 * time.Second
		}
		if due := s.nextCAStep(); !due.IsZero() {
			wait = min(wait, max(due.Sub(now), 0))
		}
		t := s.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.ctlKick:
			t.Stop()
		case <-t.Chan():
		}
	}
}

// publishControlLocked signs the control state as a new version when force is set or
// half the last one's validity has passed, stores the version, and floods it. It returns
// the version and when to look again. The caller holds s.ctlPub.
func (s *Seed) publishControlLocked(ctx context.Context, now time.Time, force bool) (uint64, time.Duration, error) {
	c := s.ctl
	pub, ok := s.pub.(ControlPublisher)
	if !ok || s.cfg.CASigner == nil || c.root == nil {
		return 0, time.Hour, nil
	}
	c.mu.Lock()
	if !force && c.envelope != nil && now.Before(c.signedAt.Add(s.cfg.BundleTTL/2)) {
		left, ver := c.signedAt.Add(s.cfg.BundleTTL/2).Sub(now), c.version
		c.mu.Unlock()
		return ver, left, nil
	}
	c.dropExpiredLocked(now)
	ver := c.version + 1
	ctl := &identityv1.Control{
		Header: &bundlev1.BundleHeader{
			SchemaVersion: trust.BundleSchemaVersion, Domain: s.cfg.Domain, Epoch: s.cfg.Epoch, Version: ver,
			IssuedAt: timestamppb.New(now.Truncate(time.Second)), ExpiresAt: timestamppb.New(now.Add(s.cfg.BundleTTL)),
		},
		Roots:       slices.Clone(c.rotations),
		TrustBundle: c.trustBundleLocked(),
	}
	for _, k := range slices.Sorted(maps.Keys(c.revocations)) {
		ctl.Revocations = append(ctl.Revocations, c.revocations[k])
	}
	c.mu.Unlock()
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(ctl)
	if err != nil {
		return 0, 0, fmt.Errorf("encode control message: %w", err)
	}
	env := trust.NewEnvelope(trust.PayloadControl, payload)
	if err := trust.Sign(env, s.cfg.CASigner); err != nil {
		return 0, 0, fmt.Errorf("sign control message: %w", err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		return 0, 0, fmt.Errorf("encode control envelope: %w", err)
	}
	// The version is stored before it is published: a restarted seed never signs another
	// message under it.
	if err := s.recordIdentity(ctx, "seed", actionControlPublish, []string{fmt.Sprintf("control v%d", ver)},
		&adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Control{Control: &adminv1.ControlVersion{Version: ver}}}); err != nil {
		return 0, 0, err
	}
	c.mu.Lock()
	c.version, c.envelope, c.signedAt = ver, b, now
	if c.ca.GetNext() != "" && c.ca.GetNextPublishedAt() == nil {
		c.ca.NextPublishedAt = timestamppb.New(now) // persisted with the next CA step
	}
	c.mu.Unlock()
	s.metrics.controlVersion.Set(float64(ver))
	if err := pub.PublishControl(ctx, b); err != nil {
		return ver, 5 * time.Second, fmt.Errorf("gossip control v%d: %w", ver, err)
	}
	return ver, s.cfg.BundleTTL / 2, nil
}

// RotateCA moves the CA's rotation on by one step, audited as actor:
//   - "prepare" makes the next CA generation and publishes its root in the trust bundle;
//   - "activate" makes it sign, once its root has been in the published trust bundle for
//     Config.CAOverlap, so every agent and data plane trusts it before it meets a leaf;
//     the old generation's root stays in the bundle until its last leaf has expired;
//   - "retire" drops the retiring generations whose leaves have all expired.
//
// The seed takes each step itself when it is due (prepare at half the active CA's life).
func (s *Seed) RotateCA(ctx context.Context, actor, step string) (*adminv1.RotateCAResponse, error) {
	if s.identity == nil || s.cfg.CAGenerations == nil {
		return nil, refuse(ErrConflict, "this seed does not rotate a CA (start it with a CA directory)")
	}
	s.caMu.Lock()
	defer s.caMu.Unlock()
	now := s.cfg.Clock.Now()
	var (
		ver uint64
		err error
	)
	switch step {
	case "prepare":
		ver, err = s.prepareCA(ctx, actor, now)
	case "activate":
		ver, err = s.activateCA(ctx, actor, now)
	case "retire":
		ver, err = s.retireCA(ctx, actor, now)
	default:
		return nil, refuse(ErrInvalid, "step %q: want prepare, activate or retire", step)
	}
	if err != nil {
		return nil, err
	}
	s.ctl.mu.Lock()
	st := proto.Clone(s.ctl.ca).(*adminv1.CAState)
	s.ctl.mu.Unlock()
	return &adminv1.RotateCAResponse{State: st, ControlVersion: ver}, nil
}

func (s *Seed) prepareCA(ctx context.Context, actor string, now time.Time) (uint64, error) {
	c := s.ctl
	c.mu.Lock()
	next := c.ca.GetNext()
	c.mu.Unlock()
	if next != "" {
		return 0, refuse(ErrConflict, "CA generation %q is prepared already; activate it first", next)
	}
	gen := "gen-" + now.UTC().Format("20060102t150405")
	a, err := s.cfg.CAGenerations.Create(gen, now)
	if err != nil {
		return 0, refuse(ErrUnavailable, "create CA generation %q: %v", gen, err)
	}
	return s.commitControl(ctx, actor, actionCARotate, []string{"prepare " + gen, "expires " + a.Certificate().NotAfter.UTC().Format(time.RFC3339)},
		func(c *ctlState) []*adminv1.IdentityRecord {
			c.gens[gen] = a
			c.ca.Next, c.ca.NextPublishedAt = gen, nil
			return []*adminv1.IdentityRecord{{Record: &adminv1.IdentityRecord_Ca{Ca: proto.Clone(c.ca).(*adminv1.CAState)}}}
		})
}

func (s *Seed) activateCA(ctx context.Context, actor string, now time.Time) (uint64, error) {
	c := s.ctl
	c.mu.Lock()
	next, published, active := c.ca.GetNext(), c.ca.GetNextPublishedAt(), c.ca.GetActive()
	a := c.gens[next]
	c.mu.Unlock()
	switch {
	case next == "":
		return 0, refuse(ErrConflict, "no CA generation is prepared; prepare one first")
	case published == nil:
		return 0, refuse(ErrConflict, "CA generation %q has not been published in the trust bundle yet", next)
	case now.Before(published.AsTime().Add(s.cfg.CAOverlap)):
		return 0, refuse(ErrConflict, "CA generation %q has been in the trust bundle for %s; it signs after %s, once every agent trusts it",
			next, now.Sub(published.AsTime()).Truncate(time.Second), s.cfg.CAOverlap)
	}
	ver, err := s.commitControl(ctx, actor, actionCARotate, []string{"activate " + next, "retire " + cmpOr(active, "first") + " after its leaves expire"},
		func(c *ctlState) []*adminv1.IdentityRecord {
			c.ca.Retiring = append(c.ca.Retiring, &adminv1.RetiringCA{Generation: active, Until: timestamppb.New(now.Add(s.cfg.LeafLifetime))})
			c.ca.Active, c.ca.Next, c.ca.NextPublishedAt = next, "", nil
			return []*adminv1.IdentityRecord{{Record: &adminv1.IdentityRecord_Ca{Ca: proto.Clone(c.ca).(*adminv1.CAState)}}}
		})
	if err != nil {
		return 0, err
	}
	s.identity.setAuthority(a)
	s.log.Info("CA generation activated", "generation", next, "previous", cmpOr(active, "first"))
	return ver, nil
}

func (s *Seed) retireCA(ctx context.Context, actor string, now time.Time) (uint64, error) {
	c := s.ctl
	c.mu.Lock()
	var done, waiting []string
	for _, r := range c.ca.GetRetiring() {
		if now.After(r.GetUntil().AsTime()) {
			done = append(done, cmpOr(r.GetGeneration(), "first"))
		} else {
			waiting = append(waiting, fmt.Sprintf("%s until %s", cmpOr(r.GetGeneration(), "first"), r.GetUntil().AsTime().UTC().Format(time.RFC3339)))
		}
	}
	c.mu.Unlock()
	if len(done) == 0 {
		if len(waiting) == 0 {
			return 0, refuse(ErrConflict, "no CA generation is retiring")
		}
		return 0, refuse(ErrConflict, "the retiring CA generations still have valid leaves: %s", strings.Join(waiting, ", "))
	}
	return s.commitControl(ctx, actor, actionCARotate, []string{"retire " + strings.Join(done, ", ")},
		func(c *ctlState) []*adminv1.IdentityRecord {
			c.ca.Retiring = slices.DeleteFunc(c.ca.Retiring, func(r *adminv1.RetiringCA) bool { return now.After(r.GetUntil().AsTime()) })
			return []*adminv1.IdentityRecord{{Record: &adminv1.IdentityRecord_Ca{Ca: proto.Clone(c.ca).(*adminv1.CAState)}}}
		})
}

// nextCAStep is when the CA's rotation is next due, or zero when it never is.
func (s *Seed) nextCAStep() time.Time {
	if s.identity == nil || s.cfg.CAGenerations == nil {
		return time.Time{}
	}
	c := s.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	var due []time.Time
	if c.ca.GetNext() == "" {
		if a := c.gens[c.ca.GetActive()]; a != nil && selfManaged(a) {
			cert := a.Certificate()
			due = append(due, cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore)/2))
		}
	} else if p := c.ca.GetNextPublishedAt(); p != nil {
		due = append(due, p.AsTime().Add(s.cfg.CAOverlap))
	}
	for _, r := range c.ca.GetRetiring() {
		due = append(due, r.GetUntil().AsTime().Add(time.Second))
	}
	if len(due) == 0 {
		return time.Time{}
	}
	return slices.MinFunc(due, func(a, b time.Time) int { return a.Compare(b) })
}

// selfManaged reports whether a is a root of its own (the seed can make its successor);
// an operator's intermediate is rotated by the operator.
func selfManaged(a *ca.Authority) bool {
	return slices.ContainsFunc(a.Roots(), func(r *x509.Certificate) bool { return bytes.Equal(r.Raw, a.Certificate().Raw) })
}

// maintainCA takes the CA rotation steps that are due.
func (s *Seed) maintainCA(ctx context.Context, now time.Time) error {
	due := s.nextCAStep()
	if due.IsZero() || now.Before(due) {
		return nil
	}
	s.ctl.mu.Lock()
	next, published, retiring := s.ctl.ca.GetNext(), s.ctl.ca.GetNextPublishedAt(), len(s.ctl.ca.GetRetiring()) > 0
	s.ctl.mu.Unlock()
	var err error
	switch {
	case next == "":
		_, err = s.RotateCA(ctx, "seed", "prepare")
	case published != nil && !now.Before(published.AsTime().Add(s.cfg.CAOverlap)):
		_, err = s.RotateCA(ctx, "seed", "activate")
	}
	if err == nil && retiring {
		if _, rerr := s.RotateCA(ctx, "seed", "retire"); rerr != nil && !isConflict(rerr) {
			err = rerr
		}
	}
	if isConflict(err) {
		return nil // not due after all: another step ran first
	}
	return err
}

func isConflict(err error) bool { return errors.Is(err, ErrConflict) }

// PrepareSeedKey makes a new seed signing key in Config.KeyDir (0600) and holds it as a
// standby key: the next root lists its public key, and the seed signs with it from the
// rotation on. The private key never leaves the seed.
func (s *Seed) PrepareSeedKey(ctx context.Context, actor string) (*adminv1.PrepareSeedKeyResponse, error) {
	if s.cfg.KeyDir == "" || s.ctl.root == nil {
		return nil, refuse(ErrConflict, "this seed keeps no key directory and root (start it with --root and its key in a directory it may write)")
	}
	k, err := trust.GenerateKey(nil)
	if err != nil {
		return nil, refuse(ErrInternal, "generate key: %v", err)
	}
	path := filepath.Join(s.cfg.KeyDir, StandbyKeyPrefix+k.KeyID()[:16]+".key")
	if err := trust.WriteKeyFiles(path, k); err != nil {
		return nil, refuse(ErrUnavailable, "write %s: %v", path, err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		return nil, refuse(ErrUnavailable, "read %s.pub: %v", path, err)
	}
	// Nothing the control stream carries changes until a root lists the key.
	if err := s.recordIdentity(ctx, actor, actionSeedKey, []string{"key " + k.KeyID()}); err != nil {
		_ = os.Remove(path)
		_ = os.Remove(path + ".pub")
		return nil, err
	}
	s.ctl.mu.Lock()
	s.ctl.keys = append(s.ctl.keys, k)
	s.ctl.mu.Unlock()
	return &adminv1.PrepareSeedKeyResponse{KeyId: k.KeyID(), PublicKey: pub}, nil
}

// StandbyKeyPrefix starts the file name of each seed key PrepareSeedKey makes.
const StandbyKeyPrefix = "seed-"

// RotateRoot adopts the next version of the domain root (verified against the root in
// force: TUF's thresholds of both) and publishes it on the control stream; from then on
// the seed signs with those of its keys the new root lists in the seed role.
func (s *Seed) RotateRoot(ctx context.Context, actor string, root []byte) (*adminv1.RotateRootResponse, error) {
	c := s.ctl
	if c.root == nil {
		return nil, refuse(ErrConflict, "this seed was started without its domain root; it cannot rotate it")
	}
	env, err := trust.DecodeEnvelope(root, 1<<20)
	if err != nil {
		return nil, refuse(ErrInvalid, "root: %v", err)
	}
	if root, err = trust.MarshalEnvelope(env); err != nil { // stored and carried in binary
		return nil, refuse(ErrInvalid, "root: %v", err)
	}
	c.mu.Lock()
	next, err := c.root.VerifyNext(root)
	if err == nil {
		saved := c.root
		c.root = next
		if len(c.signersLocked()) == 0 {
			err = fmt.Errorf("root v%d lists none of this seed's keys in its seed role: prepare a key (PrepareSeedKey) and list it", next.Version())
		}
		c.root = saved
	}
	c.mu.Unlock()
	if err != nil {
		return nil, refuse(ErrInvalid, "%v", err)
	}
	ver, err := s.commitControl(ctx, actor, actionRootRotate, []string{fmt.Sprintf("root v%d", next.Version()), "digest " + next.Digest().String()},
		func(c *ctlState) []*adminv1.IdentityRecord {
			c.root = next
			c.rotations = append(c.rotations, root)
			if n := len(c.rotations); n > trust.MaxControlRoots {
				c.rotations = c.rotations[n-trust.MaxControlRoots:]
			}
			return []*adminv1.IdentityRecord{{Record: &adminv1.IdentityRecord_Root{Root: root}}}
		})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	signers := c.signersLocked()
	c.mu.Unlock()
	s.sealer.SetSigners(signers...)
	ids := make([]string, len(signers))
	for i, k := range signers {
		ids[i] = k.KeyID()
	}
	// Republished under the new keys: agents that adopted the root refuse nothing the
	// seed signs from now on.
	s.mu.Lock()
	s.resign = true
	s.mu.Unlock()
	s.signal()
	s.log.Info("root rotated", "version", next.Version(), "signing_keys", ids)
	return &adminv1.RotateRootResponse{Version: next.Version(), SigningKeys: ids, ControlVersion: ver}, nil
}

// ControlStatus reports the control stream.
func (s *Seed) ControlStatus() *adminv1.ControlStatusResponse {
	c := s.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &adminv1.ControlStatusResponse{ControlVersion: c.version, Ca: proto.Clone(c.ca).(*adminv1.CAState), CaExpires: map[string]*timestamppb.Timestamp{}}
	if c.root != nil {
		out.RootVersion = c.root.Version()
	}
	for _, k := range slices.Sorted(maps.Keys(c.revocations)) {
		out.Revocations = append(out.Revocations, c.revocations[k])
	}
	for _, k := range c.signersLocked() {
		out.SigningKeys = append(out.SigningKeys, k.KeyID())
	}
	for g, a := range c.gens {
		out.CaExpires[cmpOr(g, "first")] = timestamppb.New(a.Certificate().NotAfter)
	}
	return out
}

// The control stream's admin API: each call changes the whole domain, so each needs an
// administrator of every tenant (ControlStatus: a reader of every tenant).

func (a *admin) Revoke(ctx context.Context, req *adminv1.RevokeRequest) (*adminv1.RevokeResponse, error) {
	p, err := authorizeAll(ctx, ScopeAdmin, "a revocation refuses a node of the whole domain")
	if err != nil {
		return nil, err
	}
	return a.s.Revoke(ctx, p.Name, req)
}

func (a *admin) PrepareSeedKey(ctx context.Context, _ *adminv1.PrepareSeedKeyRequest) (*adminv1.PrepareSeedKeyResponse, error) {
	p, err := authorizeAll(ctx, ScopeAdmin, "a seed key signs for the whole domain")
	if err != nil {
		return nil, err
	}
	return a.s.PrepareSeedKey(ctx, p.Name)
}

func (a *admin) RotateRoot(ctx context.Context, req *adminv1.RotateRootRequest) (*adminv1.RotateRootResponse, error) {
	p, err := authorizeAll(ctx, ScopeAdmin, "the root governs the whole domain")
	if err != nil {
		return nil, err
	}
	if len(req.GetRoot()) > 1<<20 {
		return nil, refuse(ErrInvalid, "root of %d bytes; at most 1 MiB", len(req.GetRoot()))
	}
	return a.s.RotateRoot(ctx, p.Name, req.GetRoot())
}

func (a *admin) RotateCA(ctx context.Context, req *adminv1.RotateCARequest) (*adminv1.RotateCAResponse, error) {
	p, err := authorizeAll(ctx, ScopeAdmin, "the CA signs for the whole domain")
	if err != nil {
		return nil, err
	}
	return a.s.RotateCA(ctx, p.Name, req.GetStep())
}

func (a *admin) ControlStatus(ctx context.Context, _ *adminv1.ControlStatusRequest) (*adminv1.ControlStatusResponse, error) {
	if _, err := authorizeAll(ctx, ScopeRead, "the control stream is the whole domain's"); err != nil {
		return nil, err
	}
	return a.s.ControlStatus(), nil
}
