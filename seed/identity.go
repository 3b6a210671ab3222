package seed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/ca"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
)

// Limits of join tokens.
const (
	DefaultJoinTokenTTL = time.Hour
	MaxJoinTokenTTL     = 7 * 24 * time.Hour
	// maxPendingTokens bounds the unused tokens kept: each is one operator action.
	maxPendingTokens = 10_000
	// Each peer may make DefaultIdentityRate identity calls a second (Config.IdentityRate),
	// in bursts of identityBurst:
	// a renewal wave stays far below it, and a peer that floods the CA (every refusal of an
	// enrolled peer is an audited, fsynced write) is told to back off instead.
	DefaultIdentityRate = 5
	identityBurst       = 20
	// maxLimiters bounds the per-peer limiters kept; when full, an idle one makes room.
	maxLimiters = 50_000
)

// Audit actions of identity.
const (
	actionTokenCreate = "token-create"
	actionEnrol       = "enrol"
	actionIssue       = "issue"
	actionRefuse      = "refuse-csr"
)

// identity is the seed's side of the domain CA: join tokens by hash, and the node each
// enrolled peer is. Guarded by its own lock; audit and store writes go through the seed.
type identity struct {
	policy ca.Policy
	auth   *ca.Authority
	rate   rate.Limit

	mu       sync.Mutex
	tokens   map[string]*adminv1.JoinToken // by sha256 hex
	byPeer   map[peer.ID]string
	limiters map[peer.ID]*rate.Limiter
}

// allow spends one of from's identity calls, or says how long until it has one.
func (id *identity) allow(from peer.ID, now time.Time) (bool, time.Duration) {
	id.mu.Lock()
	defer id.mu.Unlock()
	l := id.limiters[from]
	if l == nil {
		if len(id.limiters) >= maxLimiters {
			for p, other := range id.limiters {
				if other.TokensAt(now) >= identityBurst { // idle: forgetting it loses nothing
					delete(id.limiters, p)
					break
				}
			}
			if len(id.limiters) >= maxLimiters {
				return false, time.Second
			}
		}
		l = rate.NewLimiter(id.rate, identityBurst)
		id.limiters[from] = l
	}
	if l.AllowN(now, 1) {
		return true, 0
	}
	return false, time.Duration(float64(time.Second) * (1 - l.TokensAt(now)) / float64(id.rate))
}

func newIdentity(cfg Config, recs []*adminv1.IdentityRecord) (*identity, error) {
	if cfg.CA == nil {
		return nil, nil
	}
	tdName := cfg.TrustDomain
	if tdName == "" {
		tdName = cfg.Domain
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("seed: trust domain %q: %w", tdName, err)
	}
	r := rate.Limit(cfg.IdentityRate)
	if r == 0 {
		r = DefaultIdentityRate
	}
	id := &identity{policy: ca.Policy{TrustDomain: td, Domain: cfg.Domain}, auth: cfg.CA, rate: r,
		tokens: map[string]*adminv1.JoinToken{}, byPeer: map[peer.ID]string{}, limiters: map[peer.ID]*rate.Limiter{}}
	for _, r := range recs {
		switch r := r.GetRecord().(type) {
		case *adminv1.IdentityRecord_JoinToken:
			id.tokens[r.JoinToken.GetSha256()] = r.JoinToken
		case *adminv1.IdentityRecord_Enrolment:
			if r.Enrolment.GetPeerId() == "" {
				continue // revoked: the node enrols again with a new token
			}
			p, err := peer.Decode(r.Enrolment.GetPeerId())
			if err != nil {
				return nil, fmt.Errorf("seed: stored enrolment of %q: %w", r.Enrolment.GetNode(), err)
			}
			id.byPeer[p] = r.Enrolment.GetNode()
		}
	}
	return id, nil
}

// authority is the CA generation that signs.
func (id *identity) authority() *ca.Authority {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.auth
}

func (id *identity) setAuthority(a *ca.Authority) {
	if a == nil {
		return
	}
	id.mu.Lock()
	id.auth = a
	id.mu.Unlock()
}

// peerOf is the peer enrolled as node, or "".
func (id *identity) peerOf(node string) peer.ID {
	id.mu.Lock()
	defer id.mu.Unlock()
	for p, n := range id.byPeer {
		if n == node {
			return p
		}
	}
	return ""
}

// unbind forgets the enrolments of node and of the peer named p, and returns the records
// that store it (enrolments without a peer).
func (id *identity) unbind(node, p string) []*adminv1.IdentityRecord {
	id.mu.Lock()
	defer id.mu.Unlock()
	var out []*adminv1.IdentityRecord
	for pid, n := range id.byPeer {
		if (node != "" && n == node) || (p != "" && pid.String() == p) {
			delete(id.byPeer, pid)
			out = append(out, &adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Enrolment{Enrolment: &adminv1.Enrolment{Node: n}}})
		}
	}
	return out
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CreateJoinToken implements the admin API: an administrator makes a single-use token
// that enrols one node; only its hash is stored.
func (a *admin) CreateJoinToken(ctx context.Context, req *adminv1.CreateJoinTokenRequest) (*adminv1.CreateJoinTokenResponse, error) {
	p, err := authorizeAll(ctx, ScopeAdmin, "a join token enrols a node of the domain")
	if err != nil {
		return nil, err
	}
	return a.s.CreateJoinToken(ctx, p.Name, req.GetNode(), time.Duration(req.GetTtlSeconds())*time.Second)
}

// CreateJoinToken makes a join token for node, valid for ttl (DefaultJoinTokenTTL when
// 0), audited as actor.
func (s *Seed) CreateJoinToken(ctx context.Context, actor, node string, ttl time.Duration) (*adminv1.CreateJoinTokenResponse, error) {
	id := s.identity
	if id == nil {
		return nil, refuse(ErrConflict, "this seed is not a certificate authority (start it with a CA)")
	}
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < 0 || ttl > MaxJoinTokenTTL {
		return nil, refuse(ErrInvalid, "ttl %s is outside (0, %s]", ttl, MaxJoinTokenTTL)
	}
	if err := ca.CheckNodeName(node); err != nil {
		return nil, refuse(ErrInvalid, "%v", err)
	}
	if err := s.revokedNode(node, ""); err != nil {
		return nil, err
	}
	sid, err := id.policy.NodeSPIFFEID(node)
	if err != nil {
		return nil, refuse(ErrInvalid, "node %q: %v", node, err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, refuse(ErrInternal, "token: %v", err)
	}
	token := "mkjt_" + base64.RawURLEncoding.EncodeToString(raw[:])
	now := s.cfg.Clock.Now()
	jt := &adminv1.JoinToken{Sha256: tokenHash(token), Node: node, ExpiresAt: timestamppb.New(now.Add(ttl))}
	id.mu.Lock()
	id.dropExpiredLocked(now)
	if len(id.tokens) >= maxPendingTokens {
		id.mu.Unlock()
		return nil, refuse(ErrUnavailable, "%d join tokens are pending; let some expire or be used", len(id.tokens))
	}
	id.tokens[jt.GetSha256()] = jt
	id.mu.Unlock()
	if err := s.recordIdentity(ctx, actor, actionTokenCreate, []string{"node " + node, "token sha256:" + jt.GetSha256()[:16]},
		&adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_JoinToken{JoinToken: jt}}); err != nil {
		id.mu.Lock()
		delete(id.tokens, jt.GetSha256())
		id.mu.Unlock()
		return nil, err
	}
	return &adminv1.CreateJoinTokenResponse{Token: token, ExpiresAt: jt.GetExpiresAt(), SpiffeId: sid.String()}, nil
}

func (id *identity) dropExpiredLocked(now time.Time) {
	for h, t := range id.tokens {
		if t.GetUsedBy() == "" && now.After(t.GetExpiresAt().AsTime()) {
			delete(id.tokens, h)
		}
	}
}

// recordIdentity appends an audit entry for an identity action, stored with recs in one
// transaction. The desired state does not change: the entry's state hashes are the
// current one.
func (s *Seed) recordIdentity(ctx context.Context, actor, action string, subjects []string, recs ...*adminv1.IdentityRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	entry := chain(s.auditHead, &adminv1.AuditEntry{
		Time: timestamppb.New(s.cfg.Clock.Now()), Actor: actor, Action: action, Subjects: subjects,
		BeforeHash: s.stateHash, AfterHash: s.stateHash, StateHash: s.stateHash,
	})
	if err := s.cfg.Store.Commit(ctx, &Tx{Audit: entry, Identity: recs}); err != nil {
		return refuse(ErrUnavailable, "storing the identity record failed: %v", err)
	}
	s.auditHead = entry
	return nil
}

// HandleIdentity answers an identity call from an agent's authenticated peer ID: an
// enrolment with a join token, or a CSR for the caller's own node. It serves
// p2p.Config.OnIdentity.
func (s *Seed) HandleIdentity(ctx context.Context, from peer.ID, req *identityv1.IdentityRequest) *identityv1.IdentityResponse {
	if s.identity == nil {
		return identityError(codes.Unavailable, "this seed is not a certificate authority", time.Minute)
	}
	if ok, wait := s.identity.allow(from, s.cfg.Clock.Now()); !ok {
		s.metrics.identity.WithLabelValues("any", "rate_limited").Inc()
		return identityError(codes.ResourceExhausted, fmt.Sprintf("too many identity calls from this peer; retry in %s", wait.Round(time.Millisecond)), wait)
	}
	var (
		out *identityv1.IdentityResponse
		err error
	)
	switch call := req.GetCall().(type) {
	case *identityv1.IdentityRequest_Enrol:
		var e *identityv1.Enrolled
		if e, err = s.enrol(ctx, from, call.Enrol); err == nil {
			out = &identityv1.IdentityResponse{Result: &identityv1.IdentityResponse_Enrolled{Enrolled: e}}
		}
	case *identityv1.IdentityRequest_Csr:
		var c *capb.CertResponse
		if c, err = s.issue(ctx, from, call.Csr, false); err == nil {
			out = &identityv1.IdentityResponse{Result: &identityv1.IdentityResponse_Certificate{Certificate: c}}
		}
	case *identityv1.IdentityRequest_AgentCertificate:
		id := s.identity
		id.mu.Lock()
		node := id.byPeer[from]
		id.mu.Unlock()
		var c *capb.CertResponse
		if c, err = s.issue(ctx, from, &capb.CsrRequest{NodeId: node, Csr: call.AgentCertificate.GetCsr()}, true); err == nil {
			out = &identityv1.IdentityResponse{Result: &identityv1.IdentityResponse_Certificate{Certificate: c}}
		}
	default:
		err = refuse(ErrInvalid, "empty identity request")
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return identityError(e.GRPCStatus().Code(), e.Error(), 0)
		}
		return identityError(codes.Internal, err.Error(), time.Second)
	}
	return out
}

func identityError(c codes.Code, msg string, retry time.Duration) *identityv1.IdentityResponse {
	return &identityv1.IdentityResponse{Result: &identityv1.IdentityResponse_Error{Error: &identityv1.IdentityError{
		Code: uint32(c), Message: msg, RetryAfterMillis: uint64(retry.Milliseconds()),
	}}}
}

// enrol spends a join token: the calling peer becomes the token's node. The same peer may
// present its token again (an answer lost on the way); another peer may not.
func (s *Seed) enrol(ctx context.Context, from peer.ID, e *identityv1.Enrol) (*identityv1.Enrolled, error) {
	id := s.identity
	now := s.cfg.Clock.Now()
	id.mu.Lock()
	jt := id.tokens[tokenHash(e.GetToken())]
	switch {
	case jt == nil:
		id.mu.Unlock()
		s.metrics.identity.WithLabelValues("enrol", "unknown_token").Inc()
		return nil, refuse(ErrUnauthenticated, "the join token is not known (mistyped, or never created)")
	case jt.GetUsedBy() != "" && jt.GetUsedBy() != from.String():
		id.mu.Unlock()
		s.metrics.identity.WithLabelValues("enrol", "token_used").Inc()
		return nil, refuse(ErrForbidden, "the join token was already used by another peer")
	case now.After(jt.GetExpiresAt().AsTime()):
		id.mu.Unlock()
		s.metrics.identity.WithLabelValues("enrol", "token_expired").Inc()
		return nil, refuse(ErrUnauthenticated, "the join token expired at %s", jt.GetExpiresAt().AsTime().UTC().Format(time.RFC3339))
	case e.GetNode() != jt.GetNode():
		id.mu.Unlock()
		s.metrics.identity.WithLabelValues("enrol", "wrong_node").Inc()
		return nil, refuse(ErrForbidden, "the join token enrols node %q, not %q", jt.GetNode(), e.GetNode())
	}
	id.mu.Unlock()
	if err := s.revokedNode(jt.GetNode(), from); err != nil {
		s.metrics.identity.WithLabelValues("enrol", "revoked").Inc()
		return nil, err
	}
	id.mu.Lock()
	first := jt.GetUsedBy() == ""
	used := &adminv1.JoinToken{Sha256: jt.GetSha256(), Node: jt.GetNode(), ExpiresAt: jt.GetExpiresAt(), UsedBy: from.String()}
	id.tokens[jt.GetSha256()] = used
	id.byPeer[from] = jt.GetNode()
	id.mu.Unlock()
	if first {
		enr := &adminv1.Enrolment{Node: jt.GetNode(), PeerId: from.String(), EnrolledAt: timestamppb.New(now)}
		if err := s.recordIdentity(ctx, "peer "+from.String(), actionEnrol, []string{"node " + jt.GetNode()},
			&adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_JoinToken{JoinToken: used}},
			&adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Enrolment{Enrolment: enr}}); err != nil {
			id.mu.Lock()
			id.tokens[jt.GetSha256()] = jt
			delete(id.byPeer, from)
			id.mu.Unlock()
			return nil, err
		}
		s.log.Info("agent enrolled", "node", jt.GetNode(), "peer", from)
	}
	s.metrics.identity.WithLabelValues("enrol", "ok").Inc()
	sid, err := id.policy.NodeSPIFFEID(jt.GetNode())
	if err != nil {
		return nil, refuse(ErrInternal, "%v", err)
	}
	return &identityv1.Enrolled{Node: jt.GetNode(), SpiffeId: sid.String(), TrustBundle: s.TrustBundle()}, nil
}

// issue checks a CSR for the caller's own node and signs it; an agent's own leaf (agent)
// is bound to its peer ID.
func (s *Seed) issue(ctx context.Context, from peer.ID, req *capb.CsrRequest, agent bool) (*capb.CertResponse, error) {
	id := s.identity
	id.mu.Lock()
	node := id.byPeer[from]
	id.mu.Unlock()
	actor := "peer " + from.String()
	if err := s.revokedNode(node, from); err != nil {
		s.metrics.identity.WithLabelValues("csr", "revoked").Inc()
		_ = s.recordIdentity(ctx, actor, actionRefuse, []string{"node " + node, err.Error()})
		return nil, err
	}
	if node == "" {
		s.metrics.identity.WithLabelValues("csr", "not_enrolled").Inc()
		return nil, refuse(ErrForbidden, "peer %s is not enrolled: enrol with a join token first", from)
	}
	checked, err := id.policy.Check(ca.Request{CSR: req.GetCsr(), NodeID: req.GetNodeId(), CallerNode: node})
	if err != nil {
		s.metrics.identity.WithLabelValues("csr", "refused").Inc()
		_ = s.recordIdentity(ctx, actor, actionRefuse, []string{"node " + node, err.Error()})
		return nil, refuse(ErrInvalid, "%v", err)
	}
	if agent {
		checked.PeerID = from.String()
	}
	iss, err := id.authority().Issue(s.cfg.Clock.Now(), checked, s.cfg.LeafLifetime)
	if err != nil {
		s.metrics.identity.WithLabelValues("csr", "failed").Inc()
		return nil, refuse(ErrUnavailable, "%v", err)
	}
	iss.TrustBundle = s.TrustBundle() // every generation's roots while the CA rotates
	serial := iss.Serial.Text(16)
	rec := &adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Issued{Issued: &adminv1.IssuedCertificate{
		Serial: serial, Node: node, SpiffeId: checked.SPIFFEID.String(), NotAfter: timestamppb.New(iss.ExpiresAt),
	}}}
	if err := s.recordIdentity(ctx, actor, actionIssue, []string{"node " + node, "serial " + serial, checked.SPIFFEID.String()}, rec); err != nil {
		s.metrics.identity.WithLabelValues("csr", "failed").Inc()
		return nil, err // not recorded: not handed out
	}
	s.metrics.identity.WithLabelValues("csr", "issued").Inc()
	return certResponse(iss), nil
}

func certResponse(iss *ca.Issued) *capb.CertResponse {
	var chain []byte
	for _, c := range iss.Chain {
		chain = append(chain, c...)
	}
	return &capb.CertResponse{
		Certificate: iss.Leaf, CertificateChain: chain, TrustBundle: iss.TrustBundle,
		ExpiresAt: iss.ExpiresAt.UTC().Format(time.RFC3339), RenewAfter: iss.RenewAfter.UTC().Format(time.RFC3339),
		IssuedAt: iss.IssuedAt.UTC().Format(time.RFC3339), Subject: iss.Subject, SanDns: iss.DNSNames, SanUri: iss.URIs,
	}
}

// PeerCertificate issues the seed's own certificate for its p2p node: a leaf for a fresh
// key, naming spiffe://TRUST-DOMAIN/seed and bound to peer p, with its chain (DER, leaf
// first), and the trust bundle peers' certificates are checked against.
func (s *Seed) PeerCertificate(p peer.ID) (chain [][]byte, trustBundle []byte, expires time.Time, err error) {
	id := s.identity
	if id == nil {
		return nil, nil, time.Time{}, refuse(ErrConflict, "this seed is not a certificate authority")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "seed"}}, key)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	sid, err := spiffeid.FromSegments(id.policy.TrustDomain, "seed")
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	iss, err := id.authority().Issue(s.cfg.Clock.Now(), &ca.Checked{CSR: csr, Node: "seed", SPIFFEID: sid, PeerID: p.String()}, s.cfg.LeafLifetime)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return append([][]byte{iss.Leaf}, iss.Chain...), s.TrustBundle(), iss.ExpiresAt, nil
}
