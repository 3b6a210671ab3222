// Package ca is the domain's certificate authority: the policy that decides what a
// certificate signing request may name, and the issuer that signs leaves with a key
// behind crypto.Signer (a file today; a KMS or HSM plugs in the same way). It has no
// clock, network or disk of its own: callers pass the time and hold the key.
package ca

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits of a CSR.
const (
	// MaxCSRBytes bounds a CSR before it is parsed.
	MaxCSRBytes = 16 << 10
	// MaxDNSNames bounds the DNS SANs one leaf may carry.
	MaxDNSNames = 16
	// DefaultLifetime is a leaf's lifetime when the caller does not cap it lower (the
	// OmniRelay contract's default).
	DefaultLifetime = 12 * time.Hour
	// MaxLifetime caps any leaf's lifetime.
	MaxLifetime = 7 * 24 * time.Hour
)

// ErrRefused is wrapped by every refusal of a CSR; the message says what and why.
var ErrRefused = errors.New("csr refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Request is a CSR and who asks for it.
type Request struct {
	// CSR is the PKCS#10 request, DER.
	CSR []byte
	// NodeID is the node the certificate is for, as the client names it; a
	// "{domain}:{node}" form is accepted (OmniRelay's watch contract uses it too).
	NodeID string
	// CallerNode is the node the caller is enrolled as: a node may ask only for itself.
	CallerNode string
}

// Checked is a CSR that passed the policy: what the leaf will name.
type Checked struct {
	CSR      *x509.CertificateRequest
	Node     string
	SPIFFEID spiffeid.ID
	DNSNames []string
	// PeerID, when set, binds the leaf to an agent's libp2p peer ID (the subject's
	// serialNumber): the agent's own certificate, which its peers check on every control
	// channel.
	PeerID string
	// IPs are IP SANs: only a seed's own serving certificate has them; no CSR may ask.
	IPs []net.IP
}

// OperatorPathPrefix starts the path of the SPIFFE ID of an operator's client
// certificate: spiffe://TRUST-DOMAIN/operator/NAME.
const OperatorPathPrefix = "/operator/"

// CheckOperator checks a CSR for an operator's client certificate (issued by an
// administrator): its size, its own signature and its key. The leaf names only
// spiffe://TRUST-DOMAIN/operator/NAME (and CN NAME), whatever else the CSR asks for.
func (p Policy) CheckOperator(der []byte, name string) (*Checked, error) {
	if len(der) == 0 || len(der) > MaxCSRBytes {
		return nil, refuse("csr is %d bytes; 1 to %d", len(der), MaxCSRBytes)
	}
	if err := CheckNodeName(name); err != nil {
		return nil, refuse("operator name: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse("csr is not a PKCS#10 request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse("csr signature does not verify: %v", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	id, err := spiffeid.FromSegments(p.TrustDomain, "operator", name)
	if err != nil {
		return nil, refuse("operator %q makes no SPIFFE ID: %v", name, err)
	}
	csr.Subject.CommonName = name
	return &Checked{CSR: csr, Node: name, SPIFFEID: id}, nil
}

// Policy decides what a CSR may name in one trust domain.
type Policy struct {
	TrustDomain spiffeid.TrustDomain
	// Domain is the MeshKit domain: a node id "DOMAIN:NODE" names NODE.
	Domain string
}

// NodePathPrefix starts the path of every SPIFFE ID a node's certificates carry.
const NodePathPrefix = "/node/"

// NodeOf is the node a certificate's SPIFFE ID names (at or under /node/NODE), if any.
func NodeOf(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		id, err := spiffeid.FromURI(u)
		if err != nil {
			continue
		}
		rest, ok := strings.CutPrefix(id.Path(), NodePathPrefix)
		if !ok || rest == "" {
			continue
		}
		node, _, _ := strings.Cut(rest, "/")
		return node, true
	}
	return "", false
}

// NodeSPIFFEID is the SPIFFE ID every node's leaf carries unless it asks for another of
// its own: spiffe://TRUST-DOMAIN/node/NODE.
func (p Policy) NodeSPIFFEID(node string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(p.TrustDomain, "node", node)
}

// Check parses and checks a CSR: its own signature, its key (RSA ≥ 2048, ECDSA P-256 or
// P-384, Ed25519), and its names: the DNS SAN or the CN contains the node id, the node is
// the caller's own, at most one URI SAN and it is a SPIFFE ID of this trust domain under
// the node's own path, no wildcard, no IP, e-mail or other SAN.
func (p Policy) Check(r Request) (*Checked, error) {
	if len(r.CSR) == 0 {
		return nil, refuse("csr is empty")
	}
	if len(r.CSR) > MaxCSRBytes {
		return nil, refuse("csr is %d bytes, the limit is %d", len(r.CSR), MaxCSRBytes)
	}
	node := r.NodeID
	if d, n, ok := strings.Cut(node, ":"); ok {
		if d != p.Domain {
			return nil, refuse("node_id %q names domain %q, this is %q", r.NodeID, d, p.Domain)
		}
		node = n
	}
	if err := CheckNodeName(node); err != nil {
		return nil, err
	}
	if r.CallerNode == "" || node != r.CallerNode {
		return nil, refuse("node_id %q is not the caller's node (%q): a node may ask only for itself", node, r.CallerNode)
	}
	csr, err := x509.ParseCertificateRequest(r.CSR)
	if err != nil {
		return nil, refuse("csr is not a PKCS#10 request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse("csr signature does not verify: %v", err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, refuse("csr asks for IP or e-mail SANs; only DNS names and one SPIFFE ID are issued")
	}
	if len(csr.DNSNames) > MaxDNSNames {
		return nil, refuse("csr asks for %d DNS names, the limit is %d", len(csr.DNSNames), MaxDNSNames)
	}
	bound := strings.Contains(csr.Subject.CommonName, node)
	for _, n := range csr.DNSNames {
		if strings.Contains(n, "*") {
			return nil, refuse("DNS name %q is a wildcard; leaves name one node", n)
		}
		if strings.Contains(n, node) {
			bound = true
		}
	}
	if strings.Contains(csr.Subject.CommonName, "*") {
		return nil, refuse("common name %q is a wildcard", csr.Subject.CommonName)
	}
	if !bound {
		return nil, refuse("neither a DNS SAN nor the CN (%q) contains node_id %q", csr.Subject.CommonName, node)
	}
	id, err := p.NodeSPIFFEID(node)
	if err != nil {
		return nil, refuse("node %q makes no SPIFFE ID: %v", node, err)
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		asked, err := spiffeid.FromURI(csr.URIs[0])
		if err != nil {
			return nil, refuse("URI SAN %q is not a SPIFFE ID: %v", csr.URIs[0], err)
		}
		if !asked.MemberOf(p.TrustDomain) {
			return nil, refuse("URI SAN %q is outside trust domain %q", asked, p.TrustDomain)
		}
		if asked != id && !strings.HasPrefix(asked.Path(), id.Path()+"/") {
			return nil, refuse("URI SAN %q is not under the node's own ID %q", asked, id)
		}
		id = asked
	default:
		return nil, refuse("csr asks for %d URI SANs; at most one, a SPIFFE ID", len(csr.URIs))
	}
	return &Checked{CSR: csr, Node: node, SPIFFEID: id, DNSNames: csr.DNSNames}, nil
}

// CheckNodeName accepts DNS-label-like node names: they go into SPIFFE paths and DNS SANs.
func CheckNodeName(n string) error {
	if n == "" || len(n) > 253 {
		return refuse("node_id %q must be 1 to 253 characters", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return refuse("node_id %q may hold lower-case letters, digits, '-' and '.' only", n)
		}
	}
	return nil
}

func checkKey(k any) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return refuse("RSA key of %d bits; at least 2048", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse("ECDSA key on %s; P-256 or P-384 only", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return refuse("key type %T; RSA ≥ 2048, ECDSA P-256/P-384 or Ed25519 only", k)
	}
	return nil
}

// VerifyPeer checks the chain a peer showed on a control channel: leaf first, verifying
// to the trust bundle (PEM) at now for client and server use, and naming peerID as the
// leaf subject's serialNumber. It returns the leaf's expiry.
func VerifyPeer(trustBundle []byte, peerID string, chain [][]byte, now time.Time) (time.Time, error) {
	if len(chain) == 0 || len(chain) > 8 {
		return time.Time{}, fmt.Errorf("a chain of %d certificates; 1 to 8", len(chain))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(trustBundle) {
		return time.Time{}, errors.New("no trust bundle to verify with")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return time.Time{}, fmt.Errorf("leaf: %w", err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return time.Time{}, fmt.Errorf("chain: %w", err)
		}
		inter.AddCert(c)
	}
	if leaf.Subject.SerialNumber != peerID {
		return time.Time{}, fmt.Errorf("the certificate names peer %q, not %s", leaf.Subject.SerialNumber, peerID)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return time.Time{}, err
	}
	return leaf.NotAfter, nil
}
