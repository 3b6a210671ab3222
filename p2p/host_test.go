package p2p_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"meshkit.dev/meshkit/p2p"
)

func newHost(t *testing.T, domain string, secret []byte) host.Host {
	t.Helper()
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(t.TempDir(), "identity.key"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := p2p.NewHost(p2p.HostConfig{Identity: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Domain: domain, NetworkSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// TestDomainsCannotConnect: over real TCP, hosts of one domain connect; a host of another
// domain, or of the same domain without its network secret, cannot even finish a handshake.
func TestDomainsCannotConnect(t *testing.T) {
	connect := func(from, to host.Host, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()})
	}
	prod := newHost(t, "prod", nil)
	if err := connect(newHost(t, "prod", nil), prod, 20*time.Second); err != nil {
		t.Fatalf("same domain: %v", err)
	}
	if err := connect(newHost(t, "staging", nil), prod, 3*time.Second); err == nil {
		t.Fatal("a host of domain staging connected to prod")
	}
	secret := newHost(t, "prod", []byte("s3cret"))
	if err := connect(newHost(t, "prod", nil), secret, 3*time.Second); err == nil {
		t.Fatal("a host without the network secret connected")
	}
	if err := connect(newHost(t, "prod", []byte("s3cret")), secret, 20*time.Second); err != nil {
		t.Fatalf("same domain and secret: %v", err)
	}
}

func TestIdentityIsStableAndPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	k1, err := p2p.LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity key mode %04o, want 0600", st.Mode().Perm())
	}
	k2, err := p2p.LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Fatal("the identity changed across loads")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.LoadOrCreateIdentity(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable identity: err = %v", err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.LoadOrCreateIdentity(path); err == nil {
		t.Fatal("a garbage identity file was accepted")
	}
}
