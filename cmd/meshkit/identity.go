package main

import (
	"context"
	"fmt"

	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"meshkit.dev/meshkit/ca"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	"meshkit.dev/meshkit/seed"
)

// identityHook serves the identity protocol on the seed's p2p node, which starts before
// the seed itself: calls that arrive first are told to retry.
type identityHook struct{ s atomic.Pointer[seed.Seed] }

func (h *identityHook) handle(from peer.ID, req *identityv1.IdentityRequest) *identityv1.IdentityResponse {
	s := h.s.Load()
	if s == nil {
		return &identityv1.IdentityResponse{Result: &identityv1.IdentityResponse_Error{Error: &identityv1.IdentityError{
			Code: uint32(codes.Unavailable), Message: "the seed is starting", RetryAfterMillis: 1000,
		}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.HandleIdentity(ctx, from, req)
}

// openCA opens the domain CA kept in dir, creating a self-managed root for the trust
// domain on first use.
func openCA(dir, trustDomain string) (*ca.Authority, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, usagef("--trust-domain %q: %v", trustDomain, err)
	}
	return ca.LoadOrCreate(filepath.Clean(dir), td, time.Now())
}

// tokenCreate makes a single-use join token that enrols one agent as a node.
func (a *app) tokenCreate(fs *pflag.FlagSet) func(args []string) error {
	nodeName := fs.String("node", "", "the node the token enrols (the agent's --node-name)")
	ttl := fs.Duration("ttl", seed.DefaultJoinTokenTTL, "how long the token may be used")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if err := required("node", *nodeName); err != nil {
			return err
		}
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.CreateJoinToken(s.ctx, &adminv1.CreateJoinTokenRequest{Node: *nodeName, TtlSeconds: uint64(ttl.Seconds())})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintln(a.stdout, resp.GetToken())
		fmt.Fprintf(a.stderr, "enrols %s (%s) once, until %s; give it to the agent: --node-name %s --join-token-file FILE\n",
			*nodeName, resp.GetSpiffeId(), resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), *nodeName)
		return nil
	}
}
