package seed

import (
	"context"
	"time"

	"meshkit.dev/meshkit/p2p"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/publish"
)

// DefaultInlineMax is the largest envelope a seed floods on gossip (publish.DefaultInlineMax).
const DefaultInlineMax = publish.DefaultInlineMax

// Gossip is the seed's Publisher in production: the shared send side, publishing the
// domain's seed stream.
type Gossip = publish.Sender

// NewGossip joins the domain as a seed. inlineMax 0 means DefaultInlineMax.
func NewGossip(ctx context.Context, cfg p2p.Config, inlineMax int) (*Gossip, error) {
	cfg.Role = p2p.RoleSeed
	return publish.NewSender(ctx, cfg, publish.Options{InlineMax: inlineMax})
}

// Restorer is implemented by publishers that must know the newest publication the seed
// held before a restart (to serve it to peers) without publishing it again.
type Restorer interface {
	Restore(p *Publication)
}

// NodeReporter is implemented by publishers that hear from agents (Gossip).
type NodeReporter interface {
	// NodeReports returns how many agents reported recently and their NACKs per version.
	NodeReports(now time.Time) (nodes uint32, nacks []*syncv1.VersionNacks)
}

// ServingReporter is implemented by publishers that hear what agents serve.
type ServingReporter interface {
	// ServingReports counts the recent agents per (epoch, version) they serve.
	ServingReports(now time.Time) []*adminv1.ServingCount
}

// ExtensionReporter is implemented by a Publisher that collects the agents' admission
// verdicts.
type ExtensionReporter interface {
	// ExtensionReports sums the recent agents' verdicts per artifact.
	ExtensionReports(now time.Time) []*adminv1.ExtensionSummary
}

var (
	_ Publisher         = (*Gossip)(nil)
	_ Restorer          = (*Gossip)(nil)
	_ NodeReporter      = (*Gossip)(nil)
	_ ServingReporter   = (*Gossip)(nil)
	_ ExtensionReporter = (*Gossip)(nil)
)
