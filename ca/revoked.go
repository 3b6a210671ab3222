package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// ErrRevoked is what a certificate, node or peer the domain revoked is refused with.
var ErrRevoked = errors.New("revoked")

// Revoked indexes what a domain revoked: certificate serials (leaves or intermediates),
// libp2p peer IDs and nodes, each until the leaves it refuses have expired. The zero
// value revokes nothing. It is not safe for concurrent use; build a new one per change.
type Revoked struct {
	serials, peers, nodes map[string]revocation
}

type revocation struct {
	until  time.Time
	reason string
}

// Add revokes a serial (hexadecimal), a peer ID and a node, any of them empty, until
// until (zero: for ever).
func (r *Revoked) Add(serial, peerID, node, reason string, until time.Time) {
	if reason == "" {
		reason = "no reason given"
	}
	e := revocation{until: until, reason: reason}
	put := func(m *map[string]revocation, k string) {
		if k == "" {
			return
		}
		if *m == nil {
			*m = map[string]revocation{}
		}
		(*m)[k] = e
	}
	put(&r.serials, NormalSerial(serial))
	put(&r.peers, peerID)
	put(&r.nodes, node)
}

// NormalSerial is a hexadecimal serial as Revoked keys it: lower case, no "0x", no
// leading zeros.
func NormalSerial(s string) string {
	return strings.TrimLeft(strings.TrimPrefix(strings.ToLower(s), "0x"), "0")
}

func (e revocation) live(now time.Time) bool { return e.until.IsZero() || !now.After(e.until) }

func lookup(m map[string]revocation, k string, now time.Time) (string, bool) {
	e, ok := m[k]
	if !ok || k == "" || !e.live(now) {
		return "", false
	}
	return e.reason, true
}

// Serial reports whether the certificate serial n is revoked at now, and why.
func (r *Revoked) Serial(n *big.Int, now time.Time) (string, bool) {
	return lookup(r.serials, n.Text(16), now)
}

// Party refuses node or peerID (either may be empty) when revoked at now.
func (r *Revoked) Party(node, peerID string, now time.Time) error {
	if why, ok := lookup(r.nodes, node, now); ok {
		return fmt.Errorf("node %q is %w: %s", node, ErrRevoked, why)
	}
	if why, ok := lookup(r.peers, peerID, now); ok {
		return fmt.Errorf("peer %s is %w: %s", peerID, ErrRevoked, why)
	}
	return nil
}

// Check refuses a chain (DER, leaf first) shown by peerID (empty for a TLS client) when
// the peer, any certificate of the chain, or the node the leaf names is revoked at now.
func (r *Revoked) Check(peerID string, chain [][]byte, now time.Time) error {
	if err := r.Party("", peerID, now); err != nil {
		return err
	}
	if len(r.serials) == 0 && len(r.nodes) == 0 {
		return nil
	}
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("certificate %d: %w", i, err)
		}
		if why, ok := r.Serial(c.SerialNumber, now); ok {
			return fmt.Errorf("certificate %d (serial %s) is %w: %s", i, c.SerialNumber.Text(16), ErrRevoked, why)
		}
		if node, ok := NodeOf(c); ok && i == 0 {
			if err := r.Party(node, "", now); err != nil {
				return err
			}
		}
	}
	return nil
}

// Len is how many serials, peers and nodes are revoked, expired ones included.
func (r *Revoked) Len() int { return len(r.serials) + len(r.peers) + len(r.nodes) }
