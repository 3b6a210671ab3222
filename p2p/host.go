package p2p

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"meshkit.dev/meshkit/internal/atomicfile"
)

// LoadOrCreateIdentity reads the libp2p identity key at path, or creates an Ed25519 one
// there (mode 0600) when the file does not exist. A key file readable by group or others
// is refused: the identity is what peers score and what the connection manager protects.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return nil, fmt.Errorf("p2p: generate identity: %w", err)
		}
		b, err := crypto.MarshalPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("p2p: encode identity: %w", err)
		}
		if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("p2p: write identity: %w", err)
		}
		return key, nil
	case err != nil:
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("p2p: identity key %s has mode %04o; it must not be readable by group or others (chmod 600)", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	key, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("p2p: identity key %s is not a libp2p private key: %w", path, err)
	}
	return key, nil
}

// NetworkKey derives the private-network key (libp2p pnet PSK) of a domain. Only peers
// holding the same key complete a connection handshake, so a peer of another domain
// cannot even connect. With an empty secret the key depends on the domain name only: that
// keeps domains apart but does not keep strangers out; give every member of a domain a
// secret (meshkit agent --network-secret-file) for admission control. Authenticity of
// what flows never depends on this key: every bundle is verified against the root.
func NetworkKey(domain string, secret []byte) pnet.PSK {
	h := sha256.New()
	h.Write([]byte("meshkit-pnet-v1\n"))
	h.Write([]byte(domain))
	h.Write([]byte("\n"))
	h.Write(secret)
	return h.Sum(nil)
}

// HostConfig configures a libp2p host for one domain.
type HostConfig struct {
	// Identity is the host's key (see LoadOrCreateIdentity). Required.
	Identity crypto.PrivKey
	// ListenAddrs are multiaddrs such as "/ip4/0.0.0.0/tcp/4001"; none means dial-only.
	ListenAddrs []string
	// Domain and NetworkSecret derive the private-network key (NetworkKey).
	Domain        string
	NetworkSecret []byte
	// ConnLow and ConnHigh are the connection manager's watermarks: above ConnHigh
	// connections it trims down to ConnLow, sparing protected peers (seeds, mesh peers).
	// Zero means 32 and 96.
	ConnLow, ConnHigh int
}

// NewHost builds a libp2p host: TCP, Noise, yamux, the domain's private-network key and a
// connection manager. QUIC is not offered: libp2p's private networks do not support it.
func NewHost(cfg HostConfig) (host.Host, error) {
	if cfg.Identity == nil {
		return nil, errors.New("p2p: HostConfig.Identity is required")
	}
	if cfg.Domain == "" {
		return nil, errors.New("p2p: HostConfig.Domain is required")
	}
	low, high := cfg.ConnLow, cfg.ConnHigh
	if low == 0 {
		low = 32
	}
	if high == 0 {
		high = 96
	}
	cm, err := connmgr.NewConnManager(low, high, connmgr.WithGracePeriod(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.PrivateNetwork(NetworkKey(cfg.Domain, cfg.NetworkSecret)),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(),
		libp2p.UserAgent("meshkit"),
	}
	if len(cfg.ListenAddrs) > 0 {
		opts = append(opts, libp2p.ListenAddrStrings(cfg.ListenAddrs...))
	} else {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: host: %w", err)
	}
	return h, nil
}
