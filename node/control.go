package node

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"meshkit.dev/meshkit/ca"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
)

// ErrRevoked is what a certificate the domain revoked is refused with.
var ErrRevoked = errors.New("revoked")

// control is the newest control message the agent holds (its trust bundle and
// revocations), indexed for the checks every control channel makes.
type control struct {
	mu      sync.Mutex
	version uint64
	bundle  []byte // PEM, without any revoked CA certificate
	serials map[string]string
	peers   map[string]string
	nodes   map[string]string
}

// set indexes c, dropping entries whose leaves have all expired at now.
func (cs *control) set(c *identityv1.Control, now time.Time) {
	serials, peers, nodes := map[string]string{}, map[string]string{}, map[string]string{}
	for _, r := range c.GetRevocations() {
		if r.GetUntil() != nil && now.After(r.GetUntil().AsTime()) {
			continue
		}
		why := r.GetReason()
		if why == "" {
			why = "no reason given"
		}
		if s := strings.ToLower(strings.TrimLeft(r.GetSerial(), "0")); s != "" {
			serials[s] = why
		}
		if r.GetPeerId() != "" {
			peers[r.GetPeerId()] = why
		}
		if r.GetNode() != "" {
			nodes[r.GetNode()] = why
		}
	}
	var kept []byte
	for rest := c.GetTrustBundle(); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if cert, err := x509.ParseCertificate(blk.Bytes); err == nil {
			if _, gone := serials[cert.SerialNumber.Text(16)]; gone {
				continue // a revoked CA leaves the bundle the data plane is served
			}
		}
		kept = append(kept, pem.EncodeToMemory(blk)...)
	}
	cs.mu.Lock()
	cs.version, cs.bundle, cs.serials, cs.peers, cs.nodes = c.GetHeader().GetVersion(), kept, serials, peers, nodes
	cs.mu.Unlock()
}

// trustBundle is the control message's trust bundle, or nil before one arrived.
func (cs *control) trustBundle() []byte {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.bundle
}

// check refuses a chain (DER, leaf first) shown by peer (empty when not a libp2p peer)
// when the peer, any certificate of the chain, or the node the leaf names is revoked.
func (cs *control) check(peerID string, chain [][]byte) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if why, ok := cs.peers[peerID]; ok && peerID != "" {
		return fmt.Errorf("peer %s is %w: %s", peerID, ErrRevoked, why)
	}
	if len(cs.serials) == 0 && len(cs.nodes) == 0 {
		return nil
	}
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("certificate %d: %w", i, err)
		}
		if why, ok := cs.serials[c.SerialNumber.Text(16)]; ok {
			return fmt.Errorf("certificate %d (serial %s) is %w: %s", i, c.SerialNumber.Text(16), ErrRevoked, why)
		}
		if node, ok := ca.NodeOf(c); ok && i == 0 {
			if why, ok := cs.nodes[node]; ok {
				return fmt.Errorf("node %q is %w: %s", node, ErrRevoked, why)
			}
		}
	}
	return nil
}

// controlOffered takes a newly held control message: its trust bundle is served and
// checked against from now on, and peers it revokes are dropped from the mesh.
func (a *Agent) controlOffered(h *heldBundle) {
	c := h.Verified.Control
	if c == nil {
		return
	}
	a.ctl.set(c, a.clock.Now())
	if a.rep == nil {
		return // loaded from the LKG while the replica starts: no peer is admitted yet
	}
	dropped := a.rep.Node().Recheck()
	self := a.rep.Node().ID().String()
	if a.ctl.check(self, a.ownChain()) != nil {
		a.log.Error("this agent's own certificate or peer is revoked: peers will refuse it", "peer", self)
	}
	a.log.Info("control message adopted", "version", c.GetHeader().GetVersion(), "revocations", len(c.GetRevocations()),
		"root", a.rep.Root().Version(), "peers_dropped", len(dropped))
}

func (a *Agent) ownChain() [][]byte {
	a.id.mu.Lock()
	defer a.id.mu.Unlock()
	return a.id.chain
}

// trustBundle is what leaves are verified with and the data plane is served: the control
// stream's once one arrived, else the one given at enrolment.
func (a *Agent) trustBundle() []byte {
	if b := a.ctl.trustBundle(); len(b) > 0 {
		return b
	}
	if e := a.id.get(); e != nil {
		return e.GetTrustBundle()
	}
	return nil
}

// VerifyClientCertificate refuses a TLS client certificate the domain revoked; set it as
// tls.Config.VerifyPeerCertificate of a listener that verifies client certificates.
func (a *Agent) VerifyClientCertificate(raw [][]byte, _ [][]*x509.Certificate) error {
	return a.ctl.check("", raw)
}
