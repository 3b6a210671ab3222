package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

// TestRevokedRefusesPeersSerialsAndNodes: each kind of entry refuses what it names, only
// while it lasts, and nothing else.
func TestRevokedRefusesPeersSerialsAndNodes(t *testing.T) {
	a := authority(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	sid, _ := policy(t).NodeSPIFFEID("web-1")
	iss, err := a.Issue(now, &Checked{CSR: csr, Node: "web-1", SPIFFEID: sid, PeerID: "12D3KooWpeer"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	chain := append([][]byte{iss.Leaf}, iss.Chain...)
	later := now.Add(time.Hour)
	for _, tc := range []struct {
		name                       string
		serial, peer, node, caller string
		want                       bool
	}{
		{"nothing", "", "", "", "12D3KooWpeer", false},
		{"the peer", "", "12D3KooWpeer", "", "12D3KooWpeer", true},
		{"another peer", "", "12D3KooWother", "", "12D3KooWpeer", false},
		{"the leaf", "0x0" + iss.Serial.Text(16), "", "", "", true},
		{"the issuing CA", a.Certificate().SerialNumber.Text(16), "", "", "", true},
		{"the node", "", "", "web-1", "", true},
		{"another node", "", "", "web-10", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Revoked{}
			r.Add(tc.serial, tc.peer, tc.node, "test", later)
			err := r.Check(tc.caller, chain, now)
			if got := errors.Is(err, ErrRevoked); got != tc.want {
				t.Fatalf("refused %v (%v), want %v", got, err, tc.want)
			}
			if err := r.Check(tc.caller, chain, later.Add(time.Second)); err != nil {
				t.Fatalf("after the entry ended: %v", err)
			}
		})
	}
	r := &Revoked{}
	r.Add("", "", "web-1", "", later)
	if err := r.Party("web-1", "", now); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Party(web-1): %v", err)
	}
	if err := r.Check("", [][]byte{[]byte("garbage")}, now); err == nil || errors.Is(err, ErrRevoked) {
		t.Fatalf("garbage chain: %v", err)
	}
}

// TestCheckOperator: an operator's CSR gets only the operator's SPIFFE ID, whatever it
// asks for; a bad signature, a weak key or a bad name is refused.
func TestCheckOperator(t *testing.T) {
	p := policy(t)
	good := opensslCSR(t, p256, "/CN=root", "DNS:seed.prod,URI:spiffe://prod.meshkit/seed")
	c, err := p.CheckOperator(good, "alice")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := authority(t).Issue(now, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(iss.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "alice" || len(leaf.DNSNames) != 0 || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://prod.meshkit/operator/alice" {
		t.Fatalf("operator leaf names CN %q, DNS %v, URIs %v", leaf.Subject.CommonName, leaf.DNSNames, leaf.URIs)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)-3] ^= 0xff
	for name, tc := range map[string]struct {
		csr  []byte
		name string
	}{
		"bad signature": {bad, "alice"},
		"weak key":      {opensslCSR(t, "-algorithm RSA -pkeyopt rsa_keygen_bits:1024", "/CN=alice", ""), "alice"},
		"bad name":      {good, "Alice!"},
		"garbage":       {[]byte("not a csr"), "alice"},
	} {
		if _, err := p.CheckOperator(tc.csr, tc.name); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}
