package seed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/nodereport"
	"meshkit.dev/meshkit/p2p"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// DefaultInlineMax is the largest envelope a seed floods on gossip. Above it the seed
// gossips the signed announce and peers fetch the body by hash, once each.
const DefaultInlineMax = 32 << 10

// Restorer is implemented by publishers that must know the newest publication the seed
// held before a restart (to serve it to peers) without publishing it again.
type Restorer interface {
	Restore(p *Publication)
}

// Gossip publishes a seed's bundles on its domain's gossipsub topic and serves them over
// the sync protocol. It is the seed's Publisher in production.
type Gossip struct {
	node      *p2p.Node
	inlineMax int
	log       *slog.Logger

	mu      sync.Mutex                    // guards the following
	held    map[trust.Digest]heldSnapshot // by payload hash; the newest two versions
	heads   []*syncv1.Head
	prev    map[trust.Digest]bool
	reports map[peer.ID]nodeReport // the newest report of each agent
}

var (
	_ Publisher         = (*Gossip)(nil)
	_ Restorer          = (*Gossip)(nil)
	_ p2p.Source        = (*Gossip)(nil)
	_ p2p.EncodedSource = (*Gossip)(nil)
	_ p2p.Validator     = (*Gossip)(nil)
)

// NewGossip joins the domain as a seed: cfg.Role, cfg.Validator and cfg.Source are set
// here. inlineMax 0 means DefaultInlineMax.
func NewGossip(ctx context.Context, cfg p2p.Config, inlineMax int) (*Gossip, error) {
	if inlineMax == 0 {
		inlineMax = DefaultInlineMax
	}
	g := &Gossip{inlineMax: inlineMax, held: map[trust.Digest]heldSnapshot{}, reports: map[peer.ID]nodeReport{}, log: cfg.Logger}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	cfg.Role, cfg.Validator, cfg.Source, cfg.OnReport = p2p.RoleSeed, g, g, g.onReport
	n, err := p2p.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	g.node = n
	return g, nil
}

// Node is the seed's p2p node.
func (g *Gossip) Node() *p2p.Node { return g.node }

// Close leaves the mesh; it does not close the host.
func (g *Gossip) Close() error { return g.node.Close() }

// Publish gossips each variant of p: the delta when it is small enough, else the snapshot
// when that is, else the signed announce (peers then fetch the snapshot by hash from
// whoever forwarded the announce). The snapshots are served over sync from now on.
func (g *Gossip) Publish(ctx context.Context, p *Publication) error {
	if err := g.remember(p); err != nil {
		return err
	}
	var errs []error
	for _, v := range p.Variants {
		msg := v.Announce
		switch {
		case v.Delta != nil && len(v.Delta) <= g.inlineMax:
			msg = v.Delta
		case len(v.Snapshot) <= g.inlineMax:
			msg = v.Snapshot
		}
		if msg == nil {
			errs = append(errs, fmt.Errorf("seed: variant %v has no announce to gossip", v.RequiredCapabilities))
			continue
		}
		if err := g.node.Publish(ctx, msg); err != nil {
			errs = append(errs, fmt.Errorf("seed: gossip variant %v: %w", v.RequiredCapabilities, err))
		}
	}
	return errors.Join(errs...)
}

// heldSnapshot is a snapshot the seed serves, with its encoding: the seed's mesh
// fetches every large snapshot, and each fetch then costs a copy, not a marshal.
type heldSnapshot struct {
	msg     *syncv1.HeldBundle
	encoded []byte
}

// Restore serves p's snapshots over sync without gossiping them.
func (g *Gossip) Restore(p *Publication) { _ = g.remember(p) }

func (g *Gossip) remember(p *Publication) error {
	held := map[trust.Digest]heldSnapshot{}
	var heads []*syncv1.Head
	for _, v := range p.Variants {
		env, err := trust.DecodeEnvelope(v.Snapshot, 0)
		if err != nil {
			return fmt.Errorf("seed: own snapshot: %w", err)
		}
		h := bundle.Hash(env.GetPayload())
		hb := &syncv1.HeldBundle{Proof: v.Snapshot}
		enc, err := proto.Marshal(hb)
		if err != nil {
			return fmt.Errorf("seed: encode own snapshot: %w", err)
		}
		held[trust.Digest(h)] = heldSnapshot{msg: hb, encoded: enc}
		heads = append(heads, &syncv1.Head{
			RequiredCapabilities: slices.Clone(v.RequiredCapabilities), Epoch: p.Info.GetEpoch(), Version: p.Info.GetVersion(),
			Hash: h[:], Size: uint64(len(env.GetPayload())),
		})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Keep the previous version too: a peer may still be fetching what it was announced.
	for d := range g.prev {
		if _, ok := held[d]; !ok {
			delete(g.held, d)
		}
	}
	g.prev = map[trust.Digest]bool{}
	for d := range g.held {
		g.prev[d] = true
	}
	for d, b := range held {
		g.held[d] = b
	}
	g.heads = heads
	return nil
}

// Heads implements p2p.Source.
func (g *Gossip) Heads() []*syncv1.Head {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.heads)
}

// Held implements p2p.Source.
func (g *Gossip) Held(hash []byte) *syncv1.HeldBundle {
	if len(hash) != len(trust.Digest{}) {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[trust.Digest(hash)].msg
}

// HeldEncoded implements p2p.EncodedSource.
func (g *Gossip) HeldEncoded(hash []byte) []byte {
	if len(hash) != len(trust.Digest{}) {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[trust.Digest(hash)].encoded
}

// Validate implements p2p.Validator: a seed relays only what it publishes. What agents
// gossip back is theirs to verify; the seed neither applies nor forwards it.
func (g *Gossip) Validate(_ context.Context, m p2p.Message) p2p.Verdict {
	if m.Local {
		return p2p.Accept
	}
	return p2p.Ignore
}

// NodeReporter is implemented by publishers that hear from agents (Gossip).
type NodeReporter interface {
	// NodeReports returns how many agents reported recently and their NACKs per version.
	NodeReports(now time.Time) (nodes uint32, nacks []*syncv1.VersionNacks)
}

var _ NodeReporter = (*Gossip)(nil)

// ExtensionReporter is implemented by publishers that hear agents' admission verdicts.
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

var _ ExtensionReporter = (*Gossip)(nil)

// ExtensionReports implements ExtensionReporter.
func (g *Gossip) ExtensionReports(now time.Time) []*adminv1.ExtensionSummary {
	g.mu.Lock()
	defer g.mu.Unlock()
	byKey := map[string]*adminv1.ExtensionSummary{}
	for _, nr := range g.reports {
		if now.Sub(nr.at) > reportTTL {
			continue
		}
		for _, e := range nr.r.GetExtensions() {
			k := e.GetArtifact() + " " + e.GetAbi()
			sum := byKey[k]
			if sum == nil {
				sum = &adminv1.ExtensionSummary{Artifact: e.GetArtifact(), Abi: e.GetAbi()}
				byKey[k] = sum
			}
			switch e.GetState() {
			case "admitted":
				sum.Admitted++
			case "rejected":
				sum.Rejected++
			default:
				sum.Unavailable++
			}
			for _, r := range e.GetReasons() {
				if len(sum.Reasons) < 5 && !slices.Contains(sum.Reasons, r) {
					sum.Reasons = append(sum.Reasons, r)
				}
			}
		}
	}
	out := make([]*adminv1.ExtensionSummary, 0, len(byKey))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[k])
	}
	return out
}

type nodeReport struct {
	at time.Time
	r  *syncv1.NodeReport
}

// Reports older than reportTTL are forgotten; at most maxReports agents are remembered.
const (
	reportTTL  = 10 * time.Minute
	maxReports = 20_000
)

// onReport keeps the newest report of each agent. Reports are unauthenticated claims of
// one peer about itself, so each is bounded field by field (nodereport.Check), a peer that its
// gossip score marks as misbehaving is not heard, and when the table is full the oldest
// report makes room: a flood of fresh peer ids cannot lock honest agents out, and the
// table holds at most maxReports reports of at most 16 KiB.
func (g *Gossip) onReport(from peer.ID, r *syncv1.NodeReport) {
	if err := nodereport.Check(r); err != nil {
		g.log.Warn("agent report refused", "peer", from, "err", err)
		return
	}
	if g.node != nil && g.node.Scores()[from] < 0 {
		g.log.Warn("agent report refused: the peer's gossip score is negative", "peer", from)
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.reports[from]; !ok && len(g.reports) >= maxReports {
		var oldest peer.ID
		for p, nr := range g.reports {
			if oldest == "" || nr.at.Before(g.reports[oldest].at) {
				oldest = p
			}
		}
		delete(g.reports, oldest)
	}
	g.reports[from] = nodeReport{at: now, r: r}
}

// ServingReports implements ServingReporter.
func (g *Gossip) ServingReports(now time.Time) []*adminv1.ServingCount {
	g.mu.Lock()
	defer g.mu.Unlock()
	type ev struct{ epoch, version uint64 }
	counts := map[ev]uint32{}
	for _, nr := range g.reports {
		if now.Sub(nr.at) <= reportTTL && nr.r.GetServingVersion() > 0 {
			counts[ev{nr.r.GetServingEpoch(), nr.r.GetServingVersion()}]++
		}
	}
	out := make([]*adminv1.ServingCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, &adminv1.ServingCount{Epoch: k.epoch, Version: k.version, Agents: n})
	}
	slices.SortFunc(out, func(a, b *adminv1.ServingCount) int {
		return cmp.Or(cmp.Compare(a.GetEpoch(), b.GetEpoch()), cmp.Compare(a.GetVersion(), b.GetVersion()))
	})
	return out
}

// NodeReports implements NodeReporter.
func (g *Gossip) NodeReports(now time.Time) (uint32, []*syncv1.VersionNacks) {
	g.mu.Lock()
	defer g.mu.Unlock()
	byVersion := map[uint64]*syncv1.VersionNacks{}
	var nodes uint32
	for p, nr := range g.reports {
		if now.Sub(nr.at) > reportTTL {
			delete(g.reports, p)
			continue
		}
		nodes++
		for _, n := range nr.r.GetNacks() {
			agg := byVersion[n.GetVersion()]
			if agg == nil {
				agg = &syncv1.VersionNacks{Version: n.GetVersion()}
				byVersion[n.GetVersion()] = agg
			}
			agg.Count += n.GetCount()
			agg.LastError = n.GetLastError()
		}
	}
	var out []*syncv1.VersionNacks
	for _, v := range slices.Sorted(maps.Keys(byVersion)) {
		out = append(out, byVersion[v])
	}
	return nodes, out
}
