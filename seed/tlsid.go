package seed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/ca"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
)

// Audit action of an operator's client certificate.
const actionIssueClient = "issue-client"

// AdminTLS is the TLS configuration of the admin API (gRPC, REST and the registry) with
// the domain's own certificates: the seed serves a leaf the domain CA issues it
// (spiffe://TRUST-DOMAIN/seed, with dnsNames and ips), issued again at half its life, and
// verifies client certificates against the domain's trust bundle as it is now (a CA
// rotation included) and refuses revoked ones. Clients without a certificate still
// authenticate with a bearer token.
func (s *Seed) AdminTLS(dnsNames []string, ips []net.IP) (*tls.Config, error) {
	if s.identity == nil {
		return nil, refuse(ErrConflict, "this seed is not a certificate authority (start it with a CA)")
	}
	sc := &servingCert{s: s, dns: dnsNames, ips: ips}
	if _, err := sc.get(nil); err != nil {
		return nil, err
	}
	pools := &trustPools{s: s}
	base := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: sc.get, ClientAuth: tls.VerifyClientCertIfGiven,
		VerifyPeerCertificate: s.VerifyClientCertificate}
	// The trust bundle changes while the seed runs (a CA rotation): each handshake takes
	// the pool of the bundle in force. The config returned replaces the listener's, so it
	// offers both protocols the admin listeners speak (gRPC's h2; REST over either).
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pools.get()
		c.NextProtos = []string{"h2", "http/1.1"}
		return c, nil
	}
	return base, nil
}

// VerifyClientCertificate refuses a TLS client certificate the domain revoked; it is the
// tls.Config.VerifyPeerCertificate of AdminTLS, and of any other listener that verifies
// client certificates (--tls-cert with --client-ca).
func (s *Seed) VerifyClientCertificate(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return nil
	}
	return s.CheckRevoked("", raw)
}

// trustPools caches the client CA pool of the trust bundle in force.
type trustPools struct {
	s      *Seed
	mu     sync.Mutex
	bundle string
	pool   *x509.CertPool
}

func (p *trustPools) get() *x509.CertPool {
	b := p.s.TrustBundle()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pool == nil || string(b) != p.bundle {
		p.pool = x509.NewCertPool()
		p.pool.AppendCertsFromPEM(b)
		p.bundle = string(b)
	}
	return p.pool
}

// servingCert is the seed's serving leaf, issued again once half its life has passed.
type servingCert struct {
	s   *Seed
	dns []string
	ips []net.IP

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func (c *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.s.cfg.Clock.Now()
	if c.cert != nil && now.Before(c.renewAt) {
		return c.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "seed"}}, key)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	id := c.s.identity
	sid, err := spiffeid.FromSegments(id.policy.TrustDomain, "seed")
	if err != nil {
		return nil, err
	}
	iss, err := id.authority().Issue(now, &ca.Checked{CSR: csr, Node: "seed", SPIFFEID: sid, DNSNames: c.dns, IPs: c.ips}, c.s.cfg.LeafLifetime)
	if err != nil {
		if c.cert != nil {
			c.s.log.Error("the admin API's certificate was not renewed; serving the one held", "err", err)
			return c.cert, nil
		}
		return nil, err
	}
	c.cert = &tls.Certificate{Certificate: append([][]byte{iss.Leaf}, iss.Chain...), PrivateKey: key}
	c.renewAt = now.Add(iss.ExpiresAt.Sub(now) / 2)
	return c.cert, nil
}

// IssueClientCertificate issues an operator's client certificate, audited as actor.
func (s *Seed) IssueClientCertificate(ctx context.Context, actor, name string, der []byte) (*adminv1.IssueClientCertificateResponse, error) {
	id := s.identity
	if id == nil {
		return nil, refuse(ErrConflict, "this seed is not a certificate authority (start it with a CA)")
	}
	checked, err := id.policy.CheckOperator(der, name)
	if err != nil {
		return nil, refuse(ErrInvalid, "%v", err)
	}
	if err := s.revokedNode(name, ""); err != nil {
		return nil, err
	}
	iss, err := id.authority().Issue(s.cfg.Clock.Now(), checked, s.cfg.LeafLifetime)
	if err != nil {
		return nil, refuse(ErrUnavailable, "%v", err)
	}
	serial := iss.Serial.Text(16)
	rec := &adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Issued{Issued: &adminv1.IssuedCertificate{
		Serial: serial, Node: name, SpiffeId: checked.SPIFFEID.String(), NotAfter: timestamppb.New(iss.ExpiresAt),
	}}}
	if err := s.recordIdentity(ctx, actor, actionIssueClient, []string{"operator " + name, "serial " + serial, checked.SPIFFEID.String()}, rec); err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Leaf})
	for _, c := range iss.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return &adminv1.IssueClientCertificateResponse{Certificate: out, TrustBundle: s.TrustBundle(), SpiffeId: checked.SPIFFEID.String(),
		Serial: serial, ExpiresAt: timestamppb.New(iss.ExpiresAt)}, nil
}

func (a *admin) IssueClientCertificate(ctx context.Context, req *adminv1.IssueClientCertificateRequest) (*adminv1.IssueClientCertificateResponse, error) {
	p, err := authorizeAll(ctx, ScopeAdmin, "an operator's certificate may be granted any principal")
	if err != nil {
		return nil, err
	}
	return a.s.IssueClientCertificate(ctx, p.Name, req.GetName(), req.GetCsr())
}
