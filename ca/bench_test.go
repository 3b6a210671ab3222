package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

// BenchmarkIssue: the CA's work per certificate, checking the CSR and signing the leaf
// with the self-managed root's ECDSA P-256 key, for the two kinds of CSR nodes send
// (`go test ./ca -bench Issue`). The goal is at least 500 leaves/s on 2 cores.
func BenchmarkIssue(b *testing.B) {
	for _, tc := range []struct {
		name string
		key  func() any
	}{
		{"csr=ecdsa-p256", func() any { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }},
		{"csr=rsa-2048", func() any { k, _ := rsa.GenerateKey(rand.Reader, 2048); return k }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a, p := authority(b), policy(b)
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "n1"}, DNSNames: []string{"n1.shop.svc"},
			}, tc.key())
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				c, err := p.Check(Request{CSR: der, NodeID: "n1", CallerNode: "n1"})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.Issue(now, c, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leaves/s")
		})
	}
}
