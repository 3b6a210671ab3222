package p2p

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protodelim"

	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
)

// IdentityProtocol is the libp2p protocol agents enrol and ask for certificates with;
// seeds serve it. The stream's peer ID, authenticated by the libp2p handshake, is who asks.
func IdentityProtocol(domain string) protocol.ID {
	return protocol.ID("/meshkit/" + domain + "/identity/1")
}

// maxIdentityBytes bounds an identity request or response (a CSR is at most 16 KiB; a
// response carries a leaf, its chain and the trust bundle).
const maxIdentityBytes = 256 << 10

// identityTimeout bounds one identity call.
const identityTimeout = 10 * time.Second

// Identity sends req to p (a seed) and returns its answer.
func (n *Node) Identity(ctx context.Context, p peer.ID, req *identityv1.IdentityRequest) (*identityv1.IdentityResponse, error) {
	s, err := n.host.NewStream(ctx, p, IdentityProtocol(n.cfg.Domain))
	if err != nil {
		return nil, fmt.Errorf("p2p: identity call to %s: %w", p, err)
	}
	defer func() { _ = s.Close() }()
	deadline := time.Now().Add(identityTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.SetDeadline(deadline)
	if _, err := protodelim.MarshalTo(&countingWriter{w: s, n: n}, req); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("p2p: identity call to %s: %w", p, err)
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("p2p: identity call to %s: %w", p, err)
	}
	resp := &identityv1.IdentityResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxIdentityBytes}).UnmarshalFrom(bufio.NewReader(&countingReader{r: s, n: n}), resp); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("p2p: identity answer from %s: %w", p, err)
	}
	return resp, nil
}

// IdentityTargets lists the connected peers that serve the identity protocol (seeds).
func (n *Node) IdentityTargets() []peer.ID {
	proto := IdentityProtocol(n.cfg.Domain)
	var out []peer.ID
	for _, p := range n.host.Network().Peers() {
		if ok, err := n.host.Peerstore().SupportsProtocols(p, proto); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	return out
}

func (n *Node) serveIdentity(s network.Stream) {
	defer func() { _ = s.Close() }()
	_ = s.SetDeadline(time.Now().Add(identityTimeout))
	req := &identityv1.IdentityRequest{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxIdentityBytes}).UnmarshalFrom(bufio.NewReader(&countingReader{r: s, n: n}), req); err != nil {
		n.log.Debug("identity request refused", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	resp := n.cfg.OnIdentity(s.Conn().RemotePeer(), req)
	if _, err := protodelim.MarshalTo(&countingWriter{w: s, n: n}, resp); err != nil {
		_ = s.Reset()
	}
}
