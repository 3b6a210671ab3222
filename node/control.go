package node

import (
	"crypto/x509"
	"encoding/pem"
	"sync"
	"time"

	"meshkit.dev/meshkit/ca"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
)

// control is the newest control message the agent holds (its trust bundle and
// revocations), indexed for the checks every control channel makes.
type control struct {
	mu      sync.Mutex
	version uint64
	bundle  []byte // PEM, without any revoked CA certificate
	revoked *ca.Revoked
}

// set indexes c and keeps the trust bundle without the CA certificates it revokes.
func (cs *control) set(c *identityv1.Control, now time.Time) {
	revoked := &ca.Revoked{}
	for _, r := range c.GetRevocations() {
		revoked.Add(r.GetSerial(), r.GetPeerId(), r.GetNode(), r.GetReason(), r.GetUntil().AsTime())
	}
	var kept []byte
	for rest := c.GetTrustBundle(); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if cert, err := x509.ParseCertificate(blk.Bytes); err == nil {
			if _, gone := revoked.Serial(cert.SerialNumber, now); gone {
				continue // a revoked CA leaves the bundle the data plane is served
			}
		}
		kept = append(kept, pem.EncodeToMemory(blk)...)
	}
	cs.mu.Lock()
	cs.version, cs.bundle, cs.revoked = c.GetHeader().GetVersion(), kept, revoked
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
func (cs *control) check(peerID string, chain [][]byte, now time.Time) error {
	cs.mu.Lock()
	r := cs.revoked
	cs.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.Check(peerID, chain, now)
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
	if a.ctl.check(self, a.ownChain(), a.clock.Now()) != nil {
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
	return a.ctl.check("", raw, a.clock.Now())
}

// ControlVersion is the version of the control message the agent holds (0 before one).
func (a *Agent) ControlVersion() uint64 {
	a.ctl.mu.Lock()
	defer a.ctl.mu.Unlock()
	return a.ctl.version
}

// RootVersion is the domain root in force on the agent.
func (a *Agent) RootVersion() uint64 { return a.rep.Root().Version() }

// CertificateExpiry is when the agent's own certificate expires (zero before it has one).
func (a *Agent) CertificateExpiry() time.Time {
	a.id.mu.Lock()
	defer a.id.mu.Unlock()
	if a.id.leaf == nil {
		return time.Time{}
	}
	return a.id.leaf.NotAfter
}
