package p2p

import (
	"bufio"
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protodelim"

	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
)

// Admission keeps a domain's mesh to peers with a certificate of the domain. A node with
// one shows its own certificate to each peer it connects to, and admits a peer once the
// peer's verifies: only admitted peers are grafted into the gossip mesh, have their
// gossip validated and are served sync requests and reports. The identity protocol stays
// open, or no agent could enrol.
type Admission interface {
	// Certificate is this node's own chain, DER, leaf first; nil while it has none.
	Certificate() [][]byte
	// Verify checks a chain p showed: it must name p and chain to the domain's trust
	// bundle. It returns when the admission ends (the leaf's expiry). ErrNotReady says
	// this node cannot check yet (it has no trust bundle): the peer is not admitted, and
	// nothing is wrong with it.
	Verify(p peer.ID, chain [][]byte) (until time.Time, err error)
}

// ErrNotReady is returned by Admission.Verify while the node cannot check certificates.
var ErrNotReady = errors.New("p2p: no trust bundle to check certificates with yet")

// CertProtocol is the libp2p protocol peers show each other their certificates with.
func CertProtocol(domain string) protocol.ID {
	return protocol.ID("/meshkit/" + domain + "/cert/1")
}

// maxCertBytes bounds a shown chain (a leaf and a few CA certificates).
const maxCertBytes = 32 << 10

// admitted is the set of peers whose certificates verified, with their expiry and the
// chain they showed (checked again when what the node trusts changes).
type admitted struct {
	mu    sync.Mutex
	until map[peer.ID]time.Time
	chain map[peer.ID][][]byte
}

func (a *admitted) has(p peer.ID, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.until[p]
	return ok && now.Before(u)
}

func (a *admitted) set(p peer.ID, until time.Time, chain [][]byte) {
	a.mu.Lock()
	a.until[p], a.chain[p] = until, chain
	a.mu.Unlock()
}

func (a *admitted) drop(p peer.ID) {
	a.mu.Lock()
	delete(a.until, p)
	delete(a.chain, p)
	a.mu.Unlock()
}

func (a *admitted) all() map[peer.ID][][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.chain)
}

// Recheck verifies every admitted peer's certificate again, after what this node trusts
// changed (a revocation, a root leaving the trust bundle): a peer whose certificate no
// longer verifies is dropped from the mesh and disconnected. It returns the peers dropped.
func (n *Node) Recheck() []peer.ID {
	if n.cfg.Admission == nil {
		return nil
	}
	var out []peer.ID
	for p, chain := range n.admitted.all() {
		if _, err := n.cfg.Admission.Verify(p, chain); err != nil {
			n.admitted.drop(p)
			n.certRefused.Add(1)
			n.log.Warn("peer's certificate no longer verifies: dropped from the mesh", "peer", p, "err", err)
			_ = n.host.Network().ClosePeer(p)
			out = append(out, p)
		}
	}
	return out
}

// CertificatesRefused counts the peer certificates refused (at admission, or when checked
// again after a revocation): expired, revoked, of another CA, naming another peer.
func (n *Node) CertificatesRefused() uint64 { return n.certRefused.Load() }

// Admitted reports whether p may use the domain's mesh: always when the node does not
// check certificates.
func (n *Node) Admitted(p peer.ID) bool {
	return n.cfg.Admission == nil || n.admitted.has(p, time.Now())
}

// PresentCertificate shows this node's certificate to every connected peer again: after
// it got or renewed its own.
func (n *Node) PresentCertificate() {
	if n.cfg.Admission == nil {
		return
	}
	for _, p := range n.host.Network().Peers() {
		n.queuePresent(p)
	}
}

func (n *Node) queuePresent(p peer.ID) {
	select {
	case n.presentTo <- p:
	default: // full: the peer sees it at the next PresentCertificate or connection
	}
}

// presentLoop shows the node's certificate to the peers queued, one stream each.
func (n *Node) presentLoop(ctx context.Context) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-n.presentTo:
			chain := n.cfg.Admission.Certificate()
			if len(chain) == 0 {
				continue
			}
			if err := n.present(ctx, p, chain); err != nil {
				n.log.Debug("certificate not shown", "peer", p, "err", err)
			}
		}
	}
}

func (n *Node) present(ctx context.Context, p peer.ID, chain [][]byte) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := n.host.NewStream(sctx, p, CertProtocol(n.cfg.Domain))
	if err != nil {
		return err
	}
	defer func() { _ = s.Close() }()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := protodelim.MarshalTo(&countingWriter{w: s, n: n}, &identityv1.PeerCertificate{Chain: chain}); err != nil {
		_ = s.Reset()
		return err
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return err
	}
	// The peer answers with its own: a node that got its certificate after connecting
	// learns its peers' this way too.
	n.admit(p, bufio.NewReader(&countingReader{r: s, n: n}))
	return nil
}

// admit reads the chain p shows and admits p when it verifies; an empty answer changes
// nothing.
func (n *Node) admit(p peer.ID, r *bufio.Reader) {
	pc := &identityv1.PeerCertificate{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxCertBytes}).UnmarshalFrom(r, pc); err != nil {
		n.log.Debug("certificate not read", "peer", p, "err", err)
		return
	}
	if len(pc.GetChain()) == 0 {
		return
	}
	until, err := n.cfg.Admission.Verify(p, pc.GetChain())
	switch {
	case errors.Is(err, ErrNotReady):
		n.admitted.drop(p)
		return
	case err != nil:
		n.admitted.drop(p)
		n.certRefused.Add(1)
		n.log.Warn("peer's certificate refused: kept out of the mesh", "peer", p, "err", err)
		return
	}
	n.admitted.set(p, until, pc.GetChain())
	if n.cfg.OnAdmit != nil {
		n.cfg.OnAdmit(p)
	}
}

// serveCert admits the peer whose certificate verifies, and answers with this node's own
// (empty while it has none).
func (n *Node) serveCert(s network.Stream) {
	defer func() { _ = s.Close() }()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	n.admit(s.Conn().RemotePeer(), bufio.NewReader(&countingReader{r: s, n: n}))
	_, _ = protodelim.MarshalTo(&countingWriter{w: s, n: n}, &identityv1.PeerCertificate{Chain: n.cfg.Admission.Certificate()})
}
