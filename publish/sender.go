// Package publish is the send side of the bundle pipeline, shared by every role that
// signs a stream: seeds now, bridges next. Sealer signs each version of a stream as a
// snapshot, a delta from the previous version and an announce; Sender floods what is
// small enough on the domain's topic and announces the rest by hash, serves the bodies
// and heads over the sync protocol, and counts what agents report.
package publish

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

	"github.com/jonboulle/clockwork"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/nodereport"
	"meshkit.dev/meshkit/p2p"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// DefaultInlineMax is the largest envelope a sender floods on gossip. Above it the
// sender gossips the signed announce and peers fetch the body by hash, once each.
const DefaultInlineMax = 32 << 10

// Options configure a Sender.
type Options struct {
	// InlineMax is the largest envelope flooded on gossip; 0 means DefaultInlineMax.
	InlineMax int
	// Source names the stream in the heads served: "" for the domain's seeds,
	// "bridge/NAME" for a bridge (trust.SourceOf).
	Source string
	// Clock stamps agents' reports; nil means the system clock.
	Clock clockwork.Clock
}

// Sender publishes one signed stream on its domain's gossipsub topic and serves it over
// the sync protocol. It relays nothing it did not publish.
type Sender struct {
	node      *p2p.Node
	inlineMax int
	source    string
	clock     clockwork.Clock
	log       *slog.Logger

	mu      sync.Mutex                    // guards the following
	held    map[trust.Digest]heldSnapshot // by payload hash; the newest two versions
	heads   []*syncv1.Head
	control *controlHeld // the newest control message, served beside the stream
	prev    map[trust.Digest]bool
	reports map[peer.ID]nodeReport // the newest report of each agent
}

var (
	_ p2p.Source        = (*Sender)(nil)
	_ p2p.EncodedSource = (*Sender)(nil)
	_ p2p.Validator     = (*Sender)(nil)
)

// NewSender joins the domain in cfg.Role: cfg.Validator, cfg.Source and cfg.OnReport are
// set here.
func NewSender(ctx context.Context, cfg p2p.Config, opts Options) (*Sender, error) {
	g := newSender(cfg.Logger, opts)
	cfg.Validator, cfg.Source, cfg.OnReport = g, g, g.onReport
	n, err := p2p.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	g.node = n
	return g, nil
}

func newSender(log *slog.Logger, opts Options) *Sender {
	if opts.InlineMax == 0 {
		opts.InlineMax = DefaultInlineMax
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{inlineMax: opts.InlineMax, source: opts.Source, clock: opts.Clock, log: log,
		held: map[trust.Digest]heldSnapshot{}, reports: map[peer.ID]nodeReport{}}
}

// Node is the sender's p2p node.
func (g *Sender) Node() *p2p.Node { return g.node }

// Close leaves the mesh; it does not close the host.
func (g *Sender) Close() error { return g.node.Close() }

// Publish gossips each variant of p: the delta when it is small enough, else the snapshot
// when that is, else the signed announce (peers then fetch the snapshot by hash from
// whoever forwarded the announce). The snapshots are served over sync from now on.
func (g *Sender) Publish(ctx context.Context, p *Publication) error {
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
			errs = append(errs, fmt.Errorf("publish: variant %v has no announce to gossip", v.RequiredCapabilities))
			continue
		}
		if err := g.node.Publish(ctx, msg); err != nil {
			errs = append(errs, fmt.Errorf("publish: gossip variant %v: %w", v.RequiredCapabilities, err))
		}
	}
	return errors.Join(errs...)
}

// heldSnapshot is a snapshot the sender serves, with its encoding: the sender's mesh
// fetches every large snapshot, and each fetch then costs a copy, not a marshal.
type heldSnapshot struct {
	msg     *syncv1.HeldBundle
	encoded []byte
}

// Restore serves p's snapshots over sync without gossiping them: what was published
// before a restart.
func (g *Sender) Restore(p *Publication) { _ = g.remember(p) }

func (g *Sender) remember(p *Publication) error {
	held := map[trust.Digest]heldSnapshot{}
	var heads []*syncv1.Head
	for _, v := range p.Variants {
		env, err := trust.DecodeEnvelope(v.Snapshot, 0)
		if err != nil {
			return fmt.Errorf("publish: own snapshot: %w", err)
		}
		h := bundle.Hash(env.GetPayload())
		hb := &syncv1.HeldBundle{Proof: v.Snapshot}
		enc, err := proto.Marshal(hb)
		if err != nil {
			return fmt.Errorf("publish: encode own snapshot: %w", err)
		}
		held[trust.Digest(h)] = heldSnapshot{msg: hb, encoded: enc}
		heads = append(heads, &syncv1.Head{
			RequiredCapabilities: slices.Clone(v.RequiredCapabilities), Epoch: p.Info.GetEpoch(), Version: p.Info.GetVersion(),
			Hash: h[:], Size: uint64(len(env.GetPayload())), Source: g.source,
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

// controlHeld is the newest control message, as sync serves it.
type controlHeld struct {
	hash trust.Digest
	head *syncv1.Head
	snap heldSnapshot
}

// PublishControl floods a signed control message (trust.PayloadControl, always small
// enough to flood) and serves it over sync from now on; then, as what the domain trusts
// may have changed, it checks the admitted peers' certificates again.
func (g *Sender) PublishControl(ctx context.Context, envelope []byte) error {
	env, err := trust.DecodeEnvelope(envelope, 0)
	if err != nil {
		return fmt.Errorf("publish: own control message: %w", err)
	}
	if env.GetPayloadType() != trust.PayloadControl {
		return fmt.Errorf("publish: %q is not a control message", env.GetPayloadType())
	}
	view := &bundlev1.HeaderView{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(env.GetPayload(), view); err != nil {
		return fmt.Errorf("publish: own control message: %w", err)
	}
	hb := &syncv1.HeldBundle{Proof: envelope}
	enc, err := proto.Marshal(hb)
	if err != nil {
		return err
	}
	h := bundle.Hash(env.GetPayload())
	g.mu.Lock()
	g.control = &controlHeld{hash: trust.Digest(h), snap: heldSnapshot{msg: hb, encoded: enc}, head: &syncv1.Head{
		Epoch: view.GetHeader().GetEpoch(), Version: view.GetHeader().GetVersion(), Hash: h[:], Size: uint64(len(env.GetPayload())), Source: trust.ControlSource,
	}}
	g.mu.Unlock()
	err = g.node.Publish(ctx, envelope)
	g.node.Recheck()
	return err
}

// Heads implements p2p.Source.
func (g *Sender) Heads() []*syncv1.Head {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Clone(g.heads)
	if g.control != nil {
		out = append(out, g.control.head)
	}
	return out
}

// Held implements p2p.Source.
func (g *Sender) Held(hash []byte) *syncv1.HeldBundle {
	return g.snapshot(hash).msg
}

// HeldEncoded implements p2p.EncodedSource.
func (g *Sender) HeldEncoded(hash []byte) []byte {
	return g.snapshot(hash).encoded
}

func (g *Sender) snapshot(hash []byte) heldSnapshot {
	if len(hash) != len(trust.Digest{}) {
		return heldSnapshot{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.control; c != nil && c.hash == trust.Digest(hash) {
		return c.snap
	}
	return g.held[trust.Digest(hash)]
}

// Validate implements p2p.Validator: a sender relays only what it publishes. What agents
// gossip back is theirs to verify; the sender neither applies nor forwards it.
func (g *Sender) Validate(_ context.Context, m p2p.Message) p2p.Verdict {
	if m.Local {
		return p2p.Accept
	}
	return p2p.Ignore
}

// ExtensionReports sums the recent agents' verdicts per artifact.
func (g *Sender) ExtensionReports(now time.Time) []*adminv1.ExtensionSummary {
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
func (g *Sender) onReport(from peer.ID, r *syncv1.NodeReport) {
	if err := nodereport.Check(r); err != nil {
		g.log.Warn("agent report refused", "peer", from, "err", err)
		return
	}
	if g.node != nil && g.node.Scores()[from] < 0 {
		g.log.Warn("agent report refused: the peer's gossip score is negative", "peer", from)
		return
	}
	now := g.clock.Now()
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

// ServingReports counts the recent agents per (epoch, version) they serve.
func (g *Sender) ServingReports(now time.Time) []*adminv1.ServingCount {
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

// NodeReports returns how many agents reported recently and their NACKs per version.
func (g *Sender) NodeReports(now time.Time) (uint32, []*syncv1.VersionNacks) {
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
