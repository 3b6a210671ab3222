package seed

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/grpc/codes"

	"meshkit.dev/meshkit/ca"
	"meshkit.dev/meshkit/p2p"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
)

// PeerIdentity is what a seed's p2p node needs from the seed, made before the seed is:
// the identity protocol's handler (p2p.Config.OnIdentity) and the admission of peers by
// their certificates (p2p.Config.Admission). Attach the seed once it runs; until then
// identity calls are told to retry and no peer is admitted. Run keeps the seed's own
// certificate fresh.
type PeerIdentity struct {
	sd    atomic.Pointer[Seed]
	chain atomic.Pointer[[][]byte]
}

var _ p2p.Admission = (*PeerIdentity)(nil)

// Attach makes s the seed behind the node.
func (pi *PeerIdentity) Attach(s *Seed) { pi.sd.Store(s) }

// HandleIdentity serves p2p.Config.OnIdentity.
func (pi *PeerIdentity) HandleIdentity(from peer.ID, req *identityv1.IdentityRequest) *identityv1.IdentityResponse {
	s := pi.sd.Load()
	if s == nil {
		return identityError(codes.Unavailable, "the seed is starting", time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.HandleIdentity(ctx, from, req)
}

// Certificate implements p2p.Admission: the seed's own chain, once issued.
func (pi *PeerIdentity) Certificate() [][]byte {
	if c := pi.chain.Load(); c != nil {
		return *c
	}
	return nil
}

// Verify implements p2p.Admission: a peer's chain must name it, verify to the trust
// bundle in force and hold nothing revoked.
func (pi *PeerIdentity) Verify(p peer.ID, chain [][]byte) (time.Time, error) {
	s := pi.sd.Load()
	if s == nil {
		return time.Time{}, p2p.ErrNotReady
	}
	if err := s.CheckRevoked(p.String(), chain); err != nil {
		return time.Time{}, err
	}
	return ca.VerifyPeer(s.TrustBundle(), p.String(), chain, s.cfg.Clock.Now())
}

// Run keeps the seed's own certificate for node n fresh until ctx ends: issued at once,
// again at half its life, each shown to the connected peers. Attach first.
func (pi *PeerIdentity) Run(ctx context.Context, n *p2p.Node) {
	s := pi.sd.Load()
	for {
		chain, _, expires, err := s.PeerCertificate(n.ID())
		wait := time.Minute
		if err != nil {
			s.log.Error("the seed's own certificate was not issued; retrying", "err", err)
		} else {
			pi.chain.Store(&chain)
			n.PresentCertificate()
			wait = expires.Sub(s.cfg.Clock.Now()) / 2
		}
		t := s.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		}
	}
}
