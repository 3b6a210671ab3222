package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"meshkit.dev/meshkit/internal/fuzzcorpus"
	"meshkit.dev/meshkit/internal/testcsr"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz from the openssl-made CSRs")

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func policy(t testing.TB) Policy {
	return Policy{TrustDomain: spiffeid.RequireTrustDomainFromString("prod.meshkit"), Domain: "prod"}
}

func authority(t testing.TB) *Authority {
	t.Helper()
	td := policy(t).TrustDomain
	key, cert, err := NewRoot(nil, td, now.Add(-time.Hour), 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(key, cert, nil, []*x509.Certificate{cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var (
	opensslCSR = testcsr.Make
	openssl    = testcsr.Run
)

const (
	rsa2048 = testcsr.RSA2048
	p256    = testcsr.P256
)

// TestCSRPolicy: CSRs made by openssl, good and with each defect the contract names;
// every defect is refused with a message saying what.
func TestCSRPolicy(t *testing.T) {
	p := policy(t)
	good := opensslCSR(t, rsa2048, "/CN=n1.shop", "DNS:n1.shop.svc,URI:spiffe://prod.meshkit/node/n1/payments")
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-5] ^= 0xff // inside the signature
	for _, tc := range []struct {
		name   string
		csr    []byte
		node   string
		caller string
		want   string // "" accepts
	}{
		{"RSA-2048 with a workload ID under the node", good, "n1", "n1", ""},
		{"ECDSA P-256, node id with its domain", opensslCSR(t, p256, "/CN=n1", ""), "prod:n1", "n1", ""},
		{"ECDSA P-384", opensslCSR(t, "-algorithm EC -pkeyopt ec_paramgen_curve:P-384", "/CN=x", "DNS:n1.local"), "n1", "n1", ""},
		{"Ed25519", opensslCSR(t, "-algorithm ED25519", "/CN=n1", ""), "n1", "n1", ""},
		{"a foreign node", opensslCSR(t, p256, "/CN=n2", "DNS:n2.shop"), "n2", "n1", "not the caller's node"},
		{"names another node than node_id", opensslCSR(t, p256, "/CN=n2", "DNS:n2.shop"), "n1", "n1", "contains node_id"},
		{"a second URI SAN", opensslCSR(t, p256, "/CN=n1", "URI:spiffe://prod.meshkit/node/n1,URI:spiffe://prod.meshkit/node/n1/x"), "n1", "n1", "at most one"},
		{"a wildcard", opensslCSR(t, p256, "/CN=n1", "DNS:*.n1.shop"), "n1", "n1", "wildcard"},
		{"a weak key", opensslCSR(t, "-algorithm RSA -pkeyopt rsa_keygen_bits:1024", "/CN=n1", ""), "n1", "n1", "at least 2048"},
		{"a bad signature", flipped, "n1", "n1", "signature"},
		{"another trust domain", opensslCSR(t, p256, "/CN=n1", "URI:spiffe://staging.meshkit/node/n1"), "n1", "n1", "outside trust domain"},
		{"another node's SPIFFE ID", opensslCSR(t, p256, "/CN=n1", "URI:spiffe://prod.meshkit/node/n2"), "n1", "n1", "not under the node's own ID"},
		{"an IP SAN", opensslCSR(t, p256, "/CN=n1", "IP:10.0.0.1"), "n1", "n1", "IP or e-mail"},
		{"garbage DER", []byte("\x30\x82\x01\x00garbage"), "n1", "n1", "not a PKCS#10"},
		{"another domain's node id", good, "staging:n1", "n1", "names domain"},
		{"an unenrolled caller", good, "n1", "", "not the caller's node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := p.Check(Request{CSR: tc.csr, NodeID: tc.node, CallerNode: tc.caller})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Node != "n1" || !c.SPIFFEID.MemberOf(p.TrustDomain) {
					t.Fatalf("checked %+v", c)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal saying %q", err, tc.want)
			}
		})
	}
}

// TestIssuedChainVerifiesWithOpenSSL: an RSA-2048 CSR from openssl is issued a leaf that
// `openssl verify` accepts against the trust bundle returned with it, naming the node's
// SPIFFE ID, renewable at 80% of its 12 h life.
func TestIssuedChainVerifiesWithOpenSSL(t *testing.T) {
	a := authority(t)
	csr := opensslCSR(t, rsa2048, "/CN=n1", "DNS:n1.shop.svc")
	c, err := policy(t).Check(Request{CSR: csr, NodeID: "n1", CallerNode: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Issue(time.Now(), c, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := iss.ExpiresAt.Sub(iss.IssuedAt); got != DefaultLifetime {
		t.Fatalf("lifetime %s", got)
	}
	if got := iss.RenewAfter.Sub(iss.IssuedAt); got != DefaultLifetime*8/10 {
		t.Fatalf("renew after %s, want 0.8 × the lifetime", got)
	}
	leaf, err := x509.ParseCertificate(iss.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://prod.meshkit/node/n1" || leaf.IsCA {
		t.Fatalf("leaf URIs %v, CA %v", leaf.URIs, leaf.IsCA)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("bundle.pem", iss.TrustBundle)
	write("leaf.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Leaf}))
	openssl(t, dir, "verify", "-CAfile", "bundle.pem", "-purpose", "sslclient", "leaf.pem")
	openssl(t, dir, "verify", "-CAfile", "bundle.pem", "-purpose", "sslserver", "leaf.pem")
}

// TestCSRCorpus keeps FuzzIssue's seed corpus: CSRs made by openssl.
func TestCSRCorpus(t *testing.T) {
	var inputs [][]byte
	if *updateCorpus {
		inputs = [][]byte{
			opensslCSR(t, rsa2048, "/CN=n1", "DNS:n1.shop"),
			opensslCSR(t, p256, "/CN=n1", "URI:spiffe://prod.meshkit/node/n1/api"),
			opensslCSR(t, "-algorithm ED25519", "/CN=n2", "DNS:*.n1"),
		}
	}
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzIssue": inputs}, *updateCorpus)
}

// FuzzIssue: whatever bytes arrive as a CSR from node n1, nothing issued names anything
// n1 may not have: no wildcard, the node bound by a DNS SAN or the CN, and one SPIFFE ID
// of the trust domain at or under n1's own.
func FuzzIssue(f *testing.F) {
	a, p := authority(f), policy(f)
	f.Fuzz(func(t *testing.T, csr []byte) {
		c, err := p.Check(Request{CSR: csr, NodeID: "n1", CallerNode: "n1"})
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("refusal without ErrRefused: %v", err)
			}
			return
		}
		iss, err := a.Issue(now, c, 0)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(iss.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		bound := strings.Contains(leaf.Subject.CommonName, "n1")
		for _, n := range leaf.DNSNames {
			if strings.Contains(n, "*") {
				t.Fatalf("issued a wildcard %q", n)
			}
			bound = bound || strings.Contains(n, "n1")
		}
		if !bound || len(leaf.IPAddresses)+len(leaf.EmailAddresses) > 0 || len(leaf.URIs) != 1 {
			t.Fatalf("issued CN %q DNS %v IP %v e-mail %v URIs %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.URIs)
		}
		id := leaf.URIs[0].String()
		if id != "spiffe://prod.meshkit/node/n1" && !strings.HasPrefix(id, "spiffe://prod.meshkit/node/n1/") {
			t.Fatalf("issued SPIFFE ID %q", id)
		}
	})
}

// TestOperatorsIntermediate: an operator's intermediate, placed in the CA directory with
// its chain and the upstream root, issues leaves that `openssl verify` accepts against
// the upstream root alone, through the chain returned with them.
func TestOperatorsIntermediate(t *testing.T) {
	td := policy(t).TrustDomain
	upKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	upTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Upstream root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign}
	upDER, err := x509.CreateCertificate(rand.Reader, upTmpl, upTmpl, upKey.Public(), upKey)
	if err != nil {
		t.Fatal(err)
	}
	upRoot, err := x509.ParseCertificate(upDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "MeshKit intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}, upRoot, key.Public(), upKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		KeyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), CertFile: EncodePEM(inter), RootsFile: EncodePEM(upRoot),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, err := LoadOrCreate(dir, td, now) // finds the operator's CA and creates nothing
	if err != nil {
		t.Fatal(err)
	}
	if a.Certificate().Subject.CommonName != "MeshKit intermediate" {
		t.Fatalf("issuing as %q", a.Certificate().Subject.CommonName)
	}
	c, err := policy(t).Check(Request{CSR: opensslCSR(t, rsa2048, "/CN=n1", ""), NodeID: "n1", CallerNode: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := a.Issue(time.Now(), c, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var chain []byte
	for _, c := range iss.Chain {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	for name, b := range map[string][]byte{"bundle.pem": iss.TrustBundle, "chain.pem": chain,
		"leaf.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Leaf})} {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openssl(t, out, "verify", "-CAfile", "bundle.pem", "-untrusted", "chain.pem", "leaf.pem")

	// An intermediate under a root that allows none is refused at start, not at the first CSR.
	strictKey, strictRoot, err := NewRoot(nil, td, now.Add(-time.Hour), time.Hour) // path length 0
	if err != nil {
		t.Fatal(err)
	}
	strictDER, err := x509.CreateCertificate(rand.Reader, inter, strictRoot, key.Public(), strictKey)
	if err != nil {
		t.Fatal(err)
	}
	strictInter, _ := x509.ParseCertificate(strictDER)
	if _, err := New(key, strictInter, nil, []*x509.Certificate{strictRoot}, nil); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("an intermediate its root does not allow: %v", err)
	}

	// The key file readable by others is refused.
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a world-readable CA key: %v", err)
	}
}

// TestSeedsStartingAtOnceShareOneCA: seeds of one domain started together on one CA
// directory all hold the CA the first of them created.
func TestSeedsStartingAtOnceShareOneCA(t *testing.T) {
	dir := t.TempDir()
	td := spiffeid.RequireTrustDomainFromString("prod")
	const n = 8
	roots := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := LoadOrCreate(dir, td, time.Now())
			if err != nil {
				errs[i] = err
				return
			}
			roots[i] = a.Certificate().Raw
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(roots[i], roots[0]) {
			t.Fatalf("seed %d holds another CA than seed 0", i)
		}
	}
}
