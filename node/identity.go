package node

import (
	"context"
	"crypto"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"meshkit.dev/meshkit/ca"
	"meshkit.dev/meshkit/internal/atomicfile"
	"meshkit.dev/meshkit/p2p"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
)

// Files of DATA/identity.
const (
	// enrolledFile keeps what enrolment answered (node, SPIFFE ID, trust bundle), so a
	// restarted agent serves the trust bundle before any seed answers.
	enrolledFile = "enrolled.pb"
	// agentKeyFile is the agent's own key (ECDSA P-256, PKCS#8 PEM, 0600).
	agentKeyFile = "agent.key"
	// agentCertFile is the agent's own leaf and its chain (PEM).
	agentCertFile = "agent.pem"
)

// Backoff of enrolment attempts while no seed answers.
const (
	enrolRetryMin = 250 * time.Millisecond
	enrolRetryMax = 30 * time.Second
	// caRetryHint is the retry delay an OmniRelay client is given while no CA answers.
	caRetryHint = 5 * time.Second
)

// agentIdentity is the agent's enrolment with the domain CA and the trust bundle it
// serves its data plane.
type agentIdentity struct {
	dir string
	key crypto.Signer

	mu       sync.Mutex
	enrolled *identityv1.Enrolled // nil until enrolled
	leaf     *x509.Certificate    // the agent's own, bound to its peer ID; nil until issued
	chain    [][]byte             // leaf first, DER, as shown to peers
	renewAt  time.Time
}

// peerCerts is the agent's p2p.Admission: it shows its own leaf and admits peers whose
// leaf names them and chains to the trust bundle it holds.
type peerCerts struct{ a *Agent }

func (p peerCerts) Certificate() [][]byte {
	p.a.id.mu.Lock()
	defer p.a.id.mu.Unlock()
	return p.a.id.chain
}

func (p peerCerts) Verify(from peer.ID, chain [][]byte) (time.Time, error) {
	tb := p.a.trustBundle()
	if tb == nil {
		return time.Time{}, p2p.ErrNotReady
	}
	if err := p.a.ctl.check(from.String(), chain, p.a.clock.Now()); err != nil {
		return time.Time{}, err
	}
	return ca.VerifyPeer(tb, from.String(), chain, p.a.clock.Now())
}

func loadIdentity(dir string) (*agentIdentity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	id := &agentIdentity{dir: dir}
	key, err := ca.LoadOrCreateKey(filepath.Join(dir, agentKeyFile))
	if err != nil {
		return nil, err
	}
	id.key = key
	if pb, err := os.ReadFile(filepath.Join(dir, agentCertFile)); err == nil {
		var chain [][]byte
		for rest := pb; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			chain = append(chain, blk.Bytes)
		}
		if len(chain) > 0 {
			if leaf, err := x509.ParseCertificate(chain[0]); err == nil && ca.SameKey(leaf.PublicKey, key.Public()) {
				id.leaf, id.chain, id.renewAt = leaf, chain, renewAt(leaf, rand.Float64())
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, enrolledFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return id, nil
	case err != nil:
		return nil, err
	}
	e := &identityv1.Enrolled{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("node: %s: %w", filepath.Join(dir, enrolledFile), err)
	}
	id.enrolled = e
	return id, nil
}

func (id *agentIdentity) save(e *identityv1.Enrolled) error {
	b, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(id.dir, enrolledFile), b, 0o600); err != nil {
		return err
	}
	id.mu.Lock()
	id.enrolled = e
	id.mu.Unlock()
	return nil
}

func (id *agentIdentity) get() *identityv1.Enrolled {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.enrolled
}

// identityLoop enrols the agent as Config.NodeName with Config.JoinToken (once: its
// libp2p key is its binding afterwards), then keeps its own leaf fresh: it renews at
// about half the leaf's life, with jitter, so a fleet enrolled together never renews in
// one burst, and retries with backoff while no CA answers, working on the leaf it holds.
func (a *Agent) identityLoop(ctx context.Context) {
	defer a.wg.Done()
	var backoff time.Duration
	for {
		var err error
		wait := time.Duration(0)
		switch {
		case a.id.get() == nil:
			if err = a.enrol(ctx); err != nil {
				err = fmt.Errorf("not enrolled yet: %w", err)
			}
		default:
			a.id.mu.Lock()
			due := a.id.leaf == nil || !a.clock.Now().Before(a.id.renewAt)
			next := a.id.renewAt
			a.id.mu.Unlock()
			if !due {
				wait = next.Sub(a.clock.Now())
				break
			}
			if err = a.certify(ctx); err != nil {
				err = fmt.Errorf("own certificate not renewed: %w", err)
			}
		}
		if err != nil {
			backoff = min(max(2*backoff, enrolRetryMin), enrolRetryMax)
			wait = backoff
			a.log.Warn("identity: retrying", "node", a.cfg.NodeName, "in", backoff, "err", err)
		} else if wait == 0 {
			backoff = 0
			continue
		}
		t := a.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		case <-a.idKick:
			t.Stop()
		}
	}
}

// renewJitter is the share of a leaf's life over which renewals spread around its middle.
// A fleet enrolled at once renews every half life; spread over 0.3 of the life (0.6 of
// the period) its first wave peaks at 1/0.6 ≈ 1.7 × the steady rate, and each later wave
// is flatter (TestRenewalWaveStaysBelowTwiceTheSteadyRate).
const renewJitter = 0.3

// renewAt is when a leaf is renewed: at half its life, moved by up to ±15% of it (u in
// [0, 1) picks where). The latest renewal leaves 35% of the life for retries while no CA
// answers; the warning comes at 25% left.
func renewAt(leaf *x509.Certificate, u float64) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life/2 + time.Duration((u-0.5)*renewJitter*float64(life)))
}

// certify asks a seed for the agent's own leaf and keeps it with its chain.
func (a *Agent) certify(ctx context.Context) error {
	csr, err := x509.CreateCertificateRequest(crand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: a.cfg.NodeName}}, a.id.key)
	if err != nil {
		return err
	}
	req := &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_AgentCertificate{AgentCertificate: &identityv1.AgentCertificate{Csr: csr}}}
	return a.askSeeds(ctx, req, func(_ peer.ID, resp *identityv1.IdentityResponse) error { return a.keepLeaf(resp.GetCertificate()) })
}

// askSeeds sends req to each connected seed in turn until take accepts an answer; it
// returns why none did.
func (a *Agent) askSeeds(ctx context.Context, req *identityv1.IdentityRequest, take func(peer.ID, *identityv1.IdentityResponse) error) error {
	var errs []error
	for _, p := range a.identityTargets() {
		resp, err := a.rep.Node().Identity(ctx, p, req)
		switch {
		case err != nil:
		case resp.GetError() != nil:
			err = errors.New(resp.GetError().GetMessage())
		default:
			err = take(p, resp)
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("seed %s: %w", p, err))
	}
	if len(errs) == 0 {
		return errors.New("no seed connected")
	}
	return errors.Join(errs...)
}

// identityTargets are the connected peers known to serve the identity protocol, and the
// connected bootstrap peers (seeds, usually) whose protocols identify has not told yet: a
// seed that just came back is asked at once.
func (a *Agent) identityTargets() []peer.ID {
	out := a.rep.Node().IdentityTargets()
	for _, p := range a.seedPeers() {
		if !slices.Contains(out, p) && a.cfg.Host.Network().Connectedness(p) == network.Connected {
			out = append(out, p)
		}
	}
	return out
}

// kickIdentity wakes the identity loop: a bootstrap peer connected, so an enrolment or
// renewal waiting out its backoff is tried now.
func (a *Agent) kickIdentity() {
	select {
	case a.idKick <- struct{}{}:
	default:
	}
}

// keepLeaf checks an issued leaf (for this agent's key and peer ID, chaining to the trust
// bundle given with it) and keeps it, with the trust bundle.
func (a *Agent) keepLeaf(c *capb.CertResponse) error {
	leaf, err := x509.ParseCertificate(c.GetCertificate())
	if err != nil {
		return fmt.Errorf("leaf: %w", err)
	}
	if !ca.SameKey(leaf.PublicKey, a.id.key.Public()) {
		return errors.New("the leaf is not for this agent's key")
	}
	if leaf.Subject.SerialNumber != a.rep.Node().ID().String() {
		return fmt.Errorf("the leaf names peer %q, not this agent", leaf.Subject.SerialNumber)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.GetTrustBundle()) {
		return errors.New("no trust bundle with the leaf")
	}
	inter := x509.NewCertPool()
	chain, err := x509.ParseCertificates(c.GetCertificateChain())
	if err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	for _, ic := range chain {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: a.clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the leaf does not verify: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	for _, ic := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ic.Raw})...)
	}
	if err := atomicfile.WriteFile(filepath.Join(a.id.dir, agentCertFile), out, 0o600); err != nil {
		return err
	}
	if e := a.id.get(); e != nil && string(e.GetTrustBundle()) != string(c.GetTrustBundle()) {
		next := proto.Clone(e).(*identityv1.Enrolled)
		next.TrustBundle = c.GetTrustBundle()
		if err := a.id.save(next); err != nil {
			return err
		}
	}
	shown := [][]byte{leaf.Raw}
	for _, ic := range chain {
		shown = append(shown, ic.Raw)
	}
	a.id.mu.Lock()
	a.id.leaf, a.id.chain, a.id.renewAt = leaf, shown, renewAt(leaf, rand.Float64())
	a.id.mu.Unlock()
	a.rep.Node().PresentCertificate() // peers that kept it out of the mesh admit it now
	a.log.Info("own certificate issued", "node", a.cfg.NodeName, "expires", leaf.NotAfter, "renew_at", a.id.renewAt)
	return nil
}

// IdentityStatus is the agent's standing with the domain CA.
type IdentityStatus struct {
	Node     string    `json:"node"`
	SPIFFEID string    `json:"spiffe_id"`
	Expires  time.Time `json:"expires,omitzero"`
	RenewAt  time.Time `json:"renew_at,omitzero"`
	// Warning says why the certificate needs attention: renewal has failed for a quarter
	// of its life, or it has expired.
	Warning string `json:"warning,omitempty"`
}

func (a *Agent) identityStatus() *IdentityStatus {
	e := a.id.get()
	if e == nil {
		return nil
	}
	st := &IdentityStatus{Node: e.GetNode(), SPIFFEID: e.GetSpiffeId()}
	a.id.mu.Lock()
	leaf, renew := a.id.leaf, a.id.renewAt
	a.id.mu.Unlock()
	if leaf == nil {
		st.Warning = "no certificate of its own yet"
		return st
	}
	st.Expires, st.RenewAt = leaf.NotAfter, renew
	now := a.clock.Now()
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		st.Warning = fmt.Sprintf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case left < life/4:
		st.Warning = fmt.Sprintf("certificate expires in %s and renewal keeps failing", left.Truncate(time.Second))
	}
	return st
}

func (a *Agent) enrol(ctx context.Context) error {
	req := &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_Enrol{Enrol: &identityv1.Enrol{Token: a.cfg.JoinToken, Node: a.cfg.NodeName}}}
	return a.askSeeds(ctx, req, func(p peer.ID, resp *identityv1.IdentityResponse) error {
		en := resp.GetEnrolled()
		if en == nil || en.GetNode() != a.cfg.NodeName || len(en.GetTrustBundle()) == 0 {
			return errors.New("an enrolment answer without node or trust bundle")
		}
		if err := a.id.save(en); err != nil {
			return err
		}
		a.log.Info("enrolled", "node", en.GetNode(), "spiffe_id", en.GetSpiffeId(), "seed", p)
		return nil
	})
}

// caServer is omnirelay.ca.CertificateAuthority on the southbound listener. CSRs go to a
// seed for this agent's own node; the trust bundle is served from what the agent holds.
type caServer struct {
	capb.UnimplementedCertificateAuthorityServer
	s *Southbound
}

func (c *caServer) SubmitCsr(ctx context.Context, req *capb.CsrRequest) (*capb.CertResponse, error) {
	a := c.s.a
	if a.id.get() == nil {
		return nil, caUnavailable("this agent is not enrolled with the domain CA yet")
	}
	targets := a.identityTargets()
	var last error
	for _, p := range targets {
		resp, err := a.rep.Node().Identity(ctx, p, &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_Csr{Csr: req}})
		if err != nil {
			last = err
			continue
		}
		if e := resp.GetError(); e != nil {
			if codes.Code(e.GetCode()) == codes.Unavailable {
				last = errors.New(e.GetMessage())
				continue
			}
			return nil, status.Error(codes.Code(e.GetCode()), e.GetMessage())
		}
		cert := resp.GetCertificate()
		if cert == nil || len(cert.GetCertificate()) == 0 {
			last = fmt.Errorf("seed %s answered without a certificate", p)
			continue
		}
		return cert, nil
	}
	if last == nil {
		last = errors.New("no seed connected")
	}
	return nil, caUnavailable("the domain CA is unreachable: " + last.Error())
}

func (c *caServer) TrustBundle(context.Context, *capb.TrustBundleRequest) (*capb.TrustBundleResponse, error) {
	tb := c.s.a.trustBundle()
	if tb == nil {
		return nil, caUnavailable("this agent is not enrolled with the domain CA yet")
	}
	return &capb.TrustBundleResponse{TrustBundle: tb}, nil
}

// caUnavailable is UNAVAILABLE with a RetryInfo hint, which gRPC clients honour.
func caUnavailable(msg string) error {
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(caRetryHint)})
	if err != nil {
		return status.Error(codes.Unavailable, msg)
	}
	return st.Err()
}
