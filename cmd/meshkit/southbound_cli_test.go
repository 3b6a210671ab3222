package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"meshkit.dev/meshkit/node"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
)

func emptyAgent(t *testing.T) *node.Agent {
	t.Helper()
	root, _, _ := testRoot(t, time.Now())
	mn := mocknet.New()
	t.Cleanup(func() { _ = mn.Close() })
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: root, DataDir: t.TempDir(), Host: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// snapshotErr calls Snapshot over conn; an agent holding nothing answers UNAVAILABLE
// "holds no bundle yet", which proves the call reached it.
func snapshotErr(conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := controlpb.NewControlPlaneWatchClient(conn).Snapshot(ctx, &controlpb.ControlSnapshotRequest{NodeId: "n1"})
	return err
}

func TestSouthboundOverUnixSocket(t *testing.T) {
	a := emptyAgent(t)
	sock := filepath.Join(t.TempDir(), "sb.sock")
	done := make(chan error, 1)
	sb, where, err := serveSouthbound(a, "unix://"+sock, "", "", "", done)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if where != "unix://"+sock+" (h2c)" {
		t.Fatalf("where = %q", where)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := snapshotErr(conn); err == nil || !strings.Contains(err.Error(), "holds no bundle yet") {
		t.Fatalf("over the socket: %v", err)
	}
}

// TestSouthboundMTLS: with --southbound-client-ca a client must present a certificate
// from that CA.
func TestSouthboundMTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}}, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sc, sk := issue("agent", x509.ExtKeyUsageServerAuth)
	cc, ck := issue("omnirelay", x509.ExtKeyUsageClientAuth)
	caPath := write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))

	a := emptyAgent(t)
	done := make(chan error, 1)
	sb, where, err := serveSouthbound(a, "127.0.0.1:0", write("s.pem", sc), write("s.key", sk), caPath, done)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	dial := func(withCert bool) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if withCert {
			pair, err := tls.X509KeyPair(cc, ck)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		conn, err := grpc.NewClient(where, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	if err := snapshotErr(dial(true)); err == nil || !strings.Contains(err.Error(), "holds no bundle yet") {
		t.Fatalf("with a client certificate: %v", err)
	}
	if err := snapshotErr(dial(false)); err == nil || strings.Contains(err.Error(), "holds no bundle yet") {
		t.Fatalf("without a client certificate the call reached the agent: %v", err)
	}
}
