package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// clockSkew backdates NotBefore, so a peer whose clock is a little behind accepts a leaf
// at once.
const clockSkew = time.Minute

// Authority signs leaves with one CA key. The key stays behind crypto.Signer.
type Authority struct {
	signer crypto.Signer
	cert   *x509.Certificate   // the issuing CA
	chain  []*x509.Certificate // from the issuing CA up to, not including, a root
	roots  []*x509.Certificate // the trust bundle
	rand   io.Reader
}

// New returns an authority signing with signer as cert. chain lists cert's issuers up to
// a root (empty for a self-managed root); roots is the trust bundle relying parties use
// (it must let cert's chain verify). rnd supplies serial numbers; nil means crypto/rand.
func New(signer crypto.Signer, cert *x509.Certificate, chain, roots []*x509.Certificate, rnd io.Reader) (*Authority, error) {
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("ca: the issuing certificate is not a CA that may sign certificates")
	}
	if !SameKey(signer.Public(), cert.PublicKey) {
		return nil, errors.New("ca: the key is not the issuing certificate's")
	}
	if len(roots) == 0 {
		return nil, errors.New("ca: an empty trust bundle")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	inter.AddCert(cert)
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: cert.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("ca: the issuing certificate does not chain to the trust bundle: %w", err)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	a := &Authority{signer: signer, cert: cert, chain: chain, roots: roots, rand: rnd}
	if err := a.selfTest(pool, inter); err != nil {
		return nil, err
	}
	return a, nil
}

// selfTest signs a leaf for a throwaway key and verifies it against the trust bundle, so
// a CA that cannot issue verifiable leaves (a root whose path length forbids this
// intermediate, a key usage missing) is refused at start rather than at the first CSR.
func (a *Authority) selfTest(roots, inter *x509.CertPool) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), a.rand)
	if err != nil {
		return err
	}
	at := a.cert.NotBefore.Add(time.Second)
	der, err := x509.CreateCertificate(a.rand, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshkit ca self-test"},
		NotBefore: at, NotAfter: at.Add(time.Minute), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, a.cert, k.Public(), a.signer)
	if err != nil {
		return fmt.Errorf("ca: the key cannot sign with the issuing certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("ca: a leaf this CA signs does not verify against its trust bundle: %w", err)
	}
	return nil
}

// SameKey reports whether two public keys are equal.
func SameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// Certificate is the issuing CA's certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// TrustBundle is the roots, PEM.
func (a *Authority) TrustBundle() []byte { return EncodePEM(a.roots...) }

// Roots are the CA's trust anchors.
func (a *Authority) Roots() []*x509.Certificate { return slices.Clone(a.roots) }

// Chain is the issuing certificate's issuers up to (not including) a root.
func (a *Authority) Chain() []*x509.Certificate { return slices.Clone(a.chain) }

// Issued is a signed leaf with what the OmniRelay contract returns beside it.
type Issued struct {
	Leaf        []byte   // DER
	Chain       [][]byte // DER, the issuing CA first, up to (not including) a root
	TrustBundle []byte   // PEM
	Serial      *big.Int
	Subject     string
	DNSNames    []string
	URIs        []string
	IssuedAt    time.Time
	ExpiresAt   time.Time
	// RenewAfter is IssuedAt + 0.8 × lifetime.
	RenewAfter time.Time
}

// Issue signs c as a leaf valid from now for lifetime (DefaultLifetime when 0, capped by
// MaxLifetime and by the CA's own expiry).
func (a *Authority) Issue(now time.Time, c *Checked, lifetime time.Duration) (*Issued, error) {
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	lifetime = min(lifetime, MaxLifetime)
	notAfter := now.Add(lifetime)
	if notAfter.After(a.cert.NotAfter) {
		notAfter = a.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, errors.New("ca: the issuing CA has expired")
	}
	serial, err := rand.Int(a.rand, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	cn := c.CSR.Subject.CommonName
	if cn == "" {
		cn = c.Node
	}
	uri := c.SPIFFEID.URL()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), // never zero
		Subject:      pkix.Name{CommonName: cn, SerialNumber: c.PeerID},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		DNSNames:     c.DNSNames,
		IPAddresses:  c.IPs,
		URIs:         []*url.URL{uri},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if _, ok := c.CSR.PublicKey.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, a.cert, c.CSR.PublicKey, a.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	out := &Issued{
		Leaf: der, TrustBundle: a.TrustBundle(), Serial: tmpl.SerialNumber, Subject: cn, DNSNames: c.DNSNames,
		URIs: []string{c.SPIFFEID.String()}, IssuedAt: now, ExpiresAt: notAfter,
		RenewAfter: now.Add(notAfter.Sub(now) * 4 / 5),
	}
	out.Chain = append(out.Chain, a.cert.Raw)
	for _, c := range a.chain {
		out.Chain = append(out.Chain, c.Raw)
	}
	return out, nil
}

// NewRoot makes a self-managed root CA for a trust domain: an ECDSA P-256 key and a
// self-signed certificate valid from now for lifetime.
func NewRoot(rnd io.Reader, td spiffeid.TrustDomain, now time.Time, lifetime time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: "MeshKit CA " + td.Name(), Organization: []string{"MeshKit"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

// EncodePEM encodes certificates as a PEM bundle.
func EncodePEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
