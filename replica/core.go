// Package replica is the receive side of the bundle pipeline, shared by every role that
// holds signed streams: agents (their seeds' stream, bridges' streams, the control topic)
// and bridges (the domain they read from).
//
// Core is the deterministic part, in the shape of etcd's raft: it is stepped by inputs
// (a gossip message, a fetched body, a sync answer, the last-known-good files at start)
// that carry the time, and returns decisions (a verdict, a fetch, a relay, an offer, a
// ban, a write). It has no goroutines, network, disk or clock of its own. Replica is the
// thin driver that owns those.
package replica

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/p2p"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

// Bounds of anti-entropy.
const (
	// MaxHeadsPerPeer bounds what one sync answer can make the core consider.
	MaxHeadsPerPeer = 64
	// SyncPeers is how many peers one anti-entropy round asks.
	SyncPeers = 4
	// RepublishMax is the largest proof relayed after adopting it by sync (the seed's own
	// limit for gossiping a bundle inline).
	RepublishMax = 32 << 10
)

// Via is how a bundle reached the core; it labels accept and refusal counts.
type Via string

// The ways a bundle arrives.
const (
	ViaGossip Via = "gossip"
	ViaSync   Via = "sync"
	ViaLKG    Via = "lkg"
)

// Want is what a fetched bundle must be: the head a peer claimed, or what a signed
// announce named.
type Want struct {
	Hash           trust.Digest
	Epoch, Version uint64
	Size           uint64
}

// Input is one event stepped into the core.
type Input interface{ at() time.Time }

// Gossip is a message from the domain's topic, forwarded by From (never a local one).
type Gossip struct {
	At   time.Time
	From peer.ID
	Data []byte
}

// Fetched is a body fetched from From, as the Fetch decision Want asked for.
type Fetched struct {
	At   time.Time
	From peer.ID
	Via  Via
	Want Want
	Held *syncv1.HeldBundle
	// Encoded is Held as received, kept for serving when it is canonical.
	Encoded []byte
}

// FetchFailed says a Fetch decision of the anti-entropy round got no body.
type FetchFailed struct {
	At   time.Time
	From peer.ID
	Want Want
	Err  error
}

// SyncRound starts anti-entropy with the connected Peers: the core picks whom to ask. The
// core plans one round at a time: a SyncRound abandons any round in progress, so the
// driver runs rounds one after another.
// With All it asks every peer given that is not banned (a new connection); otherwise up
// to SyncPeers, in random order, the Bootstrap peers (seeds) last, so a seed's load does
// not grow with the fleet.
type SyncRound struct {
	At        time.Time
	Peers     []peer.ID
	Bootstrap []peer.ID
	All       bool
}

// Heads are the answers to an AskHeads decision.
type Heads struct {
	At      time.Time
	Answers []Answer
}

// Answer is the heads one peer claims to hold.
type Answer struct {
	From  peer.ID
	Heads []*syncv1.Head
}

// Load adopts the last-known-good bundles verified at start (expired ones included).
type Load struct {
	At    time.Time
	Items []Loaded
}

// Loaded is one verified last-known-good copy.
type Loaded struct {
	Verified *trust.Verified
	Held     *syncv1.HeldBundle
	Modified time.Time
	File     string
}

func (i Gossip) at() time.Time      { return i.At }
func (i Fetched) at() time.Time     { return i.At }
func (i FetchFailed) at() time.Time { return i.At }
func (i SyncRound) at() time.Time   { return i.At }
func (i Heads) at() time.Time       { return i.At }
func (i Load) at() time.Time        { return i.At }

// Output is one decision of the core, for the driver to carry out.
type Output interface{ isOutput() }

// Verdict is the gossip verdict on the message being validated.
type Verdict struct{ Verdict p2p.Verdict }

// Fetch asks From for the body Want names. For a gossiped announce the driver also asks
// other peers, until one body is accepted (a Verdict ends it).
type Fetch struct {
	From peer.ID
	Want Want
	Via  Via
}

// Accepted reports a bundle adopted (for counts and logs).
type Accepted struct {
	Held *Held
	Via  Via
}

// Refused reports a bundle, delta or announce refused, with the peer that sent it.
type Refused struct {
	From   peer.ID
	Via    Via
	Reason string
	Err    error
}

// Offer hands a newly held bundle to the offer policy, which decides what of it the data
// plane is served. Offers may be delivered out of order; Held.Seq orders them.
type Offer struct{ Held *Held }

// Persist asks for the stream's newest bundle to be written as last-known-good.
type Persist struct{ Key string }

// Relay gossips a proof adopted by sync once: peers around may have missed it (a healed
// partition). Those holding its base apply it; the others start a sync.
type Relay struct{ Proof []byte }

// SyncWith asks the driver to sync with one peer: it forwarded a delta whose base is not
// held, so it holds the delta's target.
type SyncWith struct{ Peer peer.ID }

// AskHeads asks these peers for their heads, then step Heads with the answers.
type AskHeads struct{ Peers []peer.ID }

// Ban reports a peer that claimed a head it did not deliver; anti-entropy does not ask it
// for For.
type Ban struct {
	Peer peer.ID
	For  time.Duration
	Want Want
	Err  error
}

// RoundDone ends an anti-entropy round.
type RoundDone struct{ Adopted int }

func (Verdict) isOutput()   {}
func (Fetch) isOutput()     {}
func (Accepted) isOutput()  {}
func (Refused) isOutput()   {}
func (Offer) isOutput()     {}
func (Persist) isOutput()   {}
func (Relay) isOutput()     {}
func (SyncWith) isOutput()  {}
func (AskHeads) isOutput()  {}
func (Ban) isOutput()       {}
func (RoundDone) isOutput() {}

// CoreConfig configures a Core.
type CoreConfig struct {
	// Root is the domain's trusted root.
	Root *trust.Root
	// Shuffle orders peers at random (math/rand/v2's Shuffle); nil keeps them in order.
	Shuffle func(n int, swap func(i, j int))
}

// Core holds the streams of one domain: the newest verified bundle of each signed source
// × capability variant, with its (epoch, version) mark. It is not safe for concurrent use:
// its driver steps it under one lock.
type Core struct {
	verifier *trust.Verifier
	shuffle  func(n int, swap func(i, j int))
	now      time.Time // the time of the input being stepped

	held       map[string]*Held
	relayed    map[string]bool // the stream's held bundle was forwarded on gossip
	dirty      map[string]bool // not yet written as last-known-good
	seq        uint64
	lastAccept time.Time
	bans       syncBans
	round      *round
	accepted   map[Via]uint64
	rejected   map[string]uint64
	out        []Output
}

// round is the anti-entropy round in progress: each stream's candidates, tried in order.
type round struct {
	streams []string
	plan    map[string][]claim
	stream  int // index into streams
	next    int // next candidate of streams[stream]
	adopted int
}

type coreClock struct{ c *Core }

func (k coreClock) Now() time.Time { return k.c.now }

// NewCore returns a core holding nothing.
func NewCore(cfg CoreConfig) (*Core, error) {
	c := &Core{
		shuffle: cfg.Shuffle, held: map[string]*Held{}, relayed: map[string]bool{}, dirty: map[string]bool{},
		accepted: map[Via]uint64{}, rejected: map[string]uint64{},
	}
	if c.shuffle == nil {
		c.shuffle = func(int, func(i, j int)) {}
	}
	v, err := trust.NewVerifier(trust.Config{Root: cfg.Root, Clock: coreClock{c}})
	if err != nil {
		return nil, err
	}
	c.verifier = v
	return c, nil
}

// Step applies one input and returns the decisions it leads to, in order.
func (c *Core) Step(in Input) []Output {
	c.now = in.at()
	c.out = nil
	switch in := in.(type) {
	case Gossip:
		c.gossip(in)
	case Fetched:
		c.fetched(in)
	case FetchFailed:
		c.fetchFailed(in)
	case SyncRound:
		c.syncRound(in)
	case Heads:
		c.heads(in)
	case Load:
		c.load(in)
	default:
		panic(fmt.Sprintf("replica: unknown input %T", in))
	}
	out := c.out
	c.out = nil
	return out
}

func (c *Core) emit(o ...Output) { c.out = append(c.out, o...) }

func (c *Core) gossip(in Gossip) {
	env, err := trust.DecodeEnvelope(in.Data, p2p.DefaultMaxGossipBytes)
	if err != nil {
		c.refuse(err, in.From, ViaGossip)
		return
	}
	if env.GetPayloadType() == trust.PayloadAnnounce {
		ann, err := c.verifier.VerifyAnnounce(in.Data)
		if err != nil {
			if errors.Is(err, trust.ErrReplay) && c.relayOnce(namedBundle(env)) {
				c.emit(Verdict{p2p.Accept}) // we hold the body, so peers can fetch it from us
				return
			}
			c.refuse(err, in.From, ViaGossip)
			return
		}
		c.emit(Fetch{From: in.From, Via: ViaGossip, Want: Want{Hash: ann.Held, Epoch: ann.Header.GetEpoch(), Version: ann.Header.GetVersion(),
			Size: ann.Announce.GetSnapshotSize()}})
		return
	}
	vb, err := c.verifier.Verify(in.Data)
	if err != nil {
		if errors.Is(err, trust.ErrReplay) && c.relayOnce(namedBundle(env)) {
			c.emit(Verdict{p2p.Accept}) // authentic and current, got by sync and never relayed: peers still need it
			return
		}
		c.refuse(err, in.From, ViaGossip)
		return
	}
	h, err := c.apply(vb, in.Data)
	if err != nil {
		c.refuse(err, in.From, ViaGossip)
		return
	}
	c.relayed[h.Key()] = true
	c.accept(h, ViaGossip)
	c.emit(Verdict{p2p.Accept})
}

// refuse counts a gossip refusal and decides its verdict: stale but valid messages are
// ignored (honest peers race), a gap starts a sync with the peer that forwarded it (an
// unknown key too, besides costing the sender), and
// what depends on this host's clock or root is ignored; anything else costs the sender.
func (c *Core) refuse(err error, from peer.ID, via Via) {
	c.refused(err, from, via)
	switch {
	case errors.Is(err, trust.ErrReplay), errors.Is(err, trust.ErrRollback):
		c.emit(Verdict{p2p.Ignore})
	case errors.Is(err, trust.ErrBaseMismatch):
		c.emit(SyncWith{Peer: from}, Verdict{p2p.Ignore})
	case errors.Is(err, trust.ErrUnknownKey):
		// Signed by a key this root does not know: a forgery, which costs the sender, or a
		// rotated key whose root is on the control stream that gossip has not delivered
		// yet (validation runs concurrently). Anti-entropy with the sender fetches the
		// control stream first, so an agent behind a rotation catches up at once.
		c.emit(SyncWith{Peer: from}, Verdict{p2p.Reject})
	case errors.Is(err, trust.ErrNotYetValid), errors.Is(err, trust.ErrRootExpired):
		c.emit(Verdict{p2p.Ignore})
	default:
		c.emit(Verdict{p2p.Reject})
	}
}

func (c *Core) refused(err error, from peer.ID, via Via) {
	reason := trust.Reason(err)
	c.rejected[reason]++
	c.emit(Refused{From: from, Via: via, Reason: reason, Err: err})
}

// relayOnce reports whether the bundle named d is held and was never relayed (it came by
// sync or from disk), and marks it relayed: an authentic copy of the current bundle is
// forwarded once, so peers behind us get it, and any later copy is a replay, refused, so
// an attacker cannot make the domain flood it again.
func (c *Core) relayOnce(d trust.Digest) bool {
	for k, h := range c.held {
		if h.Verified.Held == d && !c.relayed[k] {
			c.relayed[k] = true
			return true
		}
	}
	return false
}

// apply adopts a verified snapshot, or applies a verified delta to the held base.
func (c *Core) apply(vb *trust.Verified, envelope []byte) (*Held, error) {
	if vb.PayloadType == trust.PayloadBundle || vb.PayloadType == trust.PayloadControl {
		h := &Held{Verified: vb, Proof: envelope}
		return h, c.adopt(vb, h)
	}
	base := c.held[vb.Variant]
	if base == nil {
		return nil, fmt.Errorf("%w: no bundle of variant %q held", trust.ErrBaseMismatch, vb.Variant)
	}
	// Applied to the held bytes: the target is decoded only if the data plane needs it.
	payload, err := bundle.ApplyDeltaView(base.Verified.Payload, base.Verified.Held, vb.Delta)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", trust.ErrBaseMismatch, err)
	}
	target := &trust.Verified{
		PayloadType: trust.PayloadBundle, Payload: payload, Header: vb.Header, Digest: vb.Held, Held: vb.Held,
		Variant: vb.Variant, Source: vb.Source, Role: vb.Role,
	}
	if err := c.verifier.Commit(vb); err != nil {
		return nil, err
	}
	h := &Held{Verified: target, Proof: envelope, WithBody: true}
	c.install(h)
	return h, nil
}

func (c *Core) adopt(commit *trust.Verified, h *Held) error {
	if err := c.verifier.Commit(commit); err != nil {
		return err
	}
	if commit.NextRoot != nil {
		c.reaffirm()
	}
	c.install(h)
	return nil
}

// reaffirm restores, after a root rotation reset the marks (it removed a key that could
// sign), the mark of every held bundle whose proof still verifies under the new root: a
// bundle signed during the overlap by the old key and the new one stays the base of the
// next delta. What only a removed key signed keeps no mark (TUF's fast-forward rule).
func (c *Core) reaffirm() {
	marks := c.verifier.State().Marks
	for _, k := range slices.Sorted(maps.Keys(c.held)) {
		if _, ok := marks[k]; ok || k == trust.ControlVariant {
			continue
		}
		vb, err := c.verifier.VerifyHeld(c.held[k].Wire().GetProof(), c.held[k].Wire().GetPayload())
		if err == nil && vb.Variant == k {
			_ = c.verifier.Commit(vb) // it cannot be older than nothing
		}
	}
}

func (c *Core) install(h *Held) {
	c.seq++
	h.Seq = c.seq
	if h.At.IsZero() {
		h.At = c.now
	}
	k := h.Key()
	c.held[k] = h
	c.relayed[k] = false
	if h.At.After(c.lastAccept) {
		c.lastAccept = h.At
	}
	if !h.FromCache {
		c.dirty[k] = true
	}
	c.emit(Offer{Held: h})
	if !h.FromCache {
		c.emit(Persist{Key: k})
	}
}

func (c *Core) accept(h *Held, via Via) {
	c.accepted[via]++
	c.emit(Accepted{Held: h, Via: via})
}

// fetched verifies and adopts a body fetched from a peer; it must be exactly what was
// asked for.
func (c *Core) fetched(in Fetched) {
	err := c.acceptFetched(in)
	switch in.Via {
	case ViaGossip:
		switch {
		case err == nil:
			c.emit(Verdict{p2p.Accept})
		case errors.Is(err, trust.ErrReplay) && c.holds(in.Want.Hash):
			c.emit(Verdict{p2p.Ignore}) // fetched meanwhile by another path
		}
		// Otherwise the driver asks the next peer; when none is left it ignores the announce.
	case ViaSync:
		if c.round == nil {
			return
		}
		switch {
		case err == nil:
			c.round.adopted++
			c.round.stream++
			c.round.next = 0
		case errors.Is(err, trust.ErrReplay), errors.Is(err, trust.ErrRollback):
			c.round.stream++ // what was claimed arrived another way first: the claim was true
			c.round.next = 0
		default:
			c.falseClaim(in.From, in.Want, err)
		}
		c.nextFetch()
	}
}

func (c *Core) acceptFetched(in Fetched) error {
	hb := in.Held
	vb, err := c.verifier.VerifyHeld(hb.GetProof(), hb.GetPayload())
	if err != nil {
		c.refused(err, in.From, in.Via)
		return err
	}
	if w := in.Want; vb.Held != w.Hash || vb.Header.GetVersion() != w.Version || vb.Header.GetEpoch() != w.Epoch {
		err := fmt.Errorf("%w: fetched bundle %s (epoch %d, v%d) is not the %s (epoch %d, v%d) it was fetched as", trust.ErrHashMismatch,
			vb.Held, vb.Header.GetEpoch(), vb.Header.GetVersion(), w.Hash, w.Epoch, w.Version)
		c.refused(err, in.From, in.Via)
		return err
	}
	h := &Held{Verified: vb, Proof: hb.GetProof(), WithBody: len(hb.GetPayload()) > 0}
	if in.Encoded != nil && proto.Size(h.Wire()) == len(in.Encoded) {
		// The peer sent exactly what Wire() would encode (the same proof and payload, in
		// canonical form): keep its bytes for the LKG file and for serving fetches.
		h.encodeOnce.Do(func() { h.encoded = in.Encoded })
	}
	if err := c.adopt(vb, h); err != nil {
		c.refused(err, in.From, in.Via)
		return err
	}
	switch {
	case in.Via == ViaGossip:
		c.relayed[h.Key()] = true
	case len(h.Proof) <= RepublishMax:
		c.relayed[h.Key()] = true
		c.emit(Relay{Proof: h.Proof})
	}
	c.accept(h, in.Via)
	return nil
}

func (c *Core) fetchFailed(in FetchFailed) {
	if c.round == nil {
		return
	}
	if !errors.Is(in.Err, p2p.ErrNotFound) {
		c.falseClaim(in.From, in.Want, in.Err)
	}
	// An honest peer moves on to a newer bundle between heads and fetch; a quick "not
	// held" costs nothing, so it is skipped without a ban.
	c.nextFetch()
}

// falseClaim bans, for a time that grows with each offence, a peer whose claimed head it
// did not deliver: anti-entropy stops asking it first, so it cannot keep the core off the
// newest bundle round after round.
func (c *Core) falseClaim(p peer.ID, w Want, err error) {
	d := c.bans.strike(p, c.now)
	c.emit(Ban{Peer: p, For: d, Want: w, Err: err})
}

func (c *Core) syncRound(in SyncRound) {
	var peers []peer.ID
	for _, p := range in.Peers {
		if !c.bans.banned(p, c.now) {
			peers = append(peers, p)
		}
	}
	if !in.All {
		c.shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		seed := func(p peer.ID) bool { return slices.Contains(in.Bootstrap, p) }
		slices.SortStableFunc(peers, func(x, y peer.ID) int { return cmpBool(seed(x), seed(y)) })
		peers = peers[:min(len(peers), SyncPeers)]
	}
	c.round = nil
	c.emit(AskHeads{Peers: peers})
}

// cmpBool orders false before true.
func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

func (c *Core) heads(in Heads) {
	var claims []claim
	for _, a := range in.Answers {
		for _, h := range a.Heads[:min(len(a.Heads), MaxHeadsPerPeer)] {
			claims = append(claims, claim{from: a.From, head: h})
		}
	}
	streams, plan := planSync(c.verifier.State().Marks, claims, c.shuffle)
	c.round = &round{streams: streams, plan: plan}
	c.nextFetch()
}

// nextFetch decides the round's next fetch: the next candidate of the current stream
// while the stream still has nothing as new, else the next stream's; RoundDone at the end.
func (c *Core) nextFetch() {
	r := c.round
	if r == nil {
		return
	}
	marks := c.verifier.State().Marks
	for r.stream < len(r.streams) {
		key := r.streams[r.stream]
		cands := r.plan[key]
		if r.next >= len(cands) {
			r.stream, r.next = r.stream+1, 0
			continue
		}
		cl := cands[r.next]
		if m, have := marks[key]; have && !trust.Newer(cl.head.GetEpoch(), cl.head.GetVersion(), m.Epoch, m.Version) {
			r.stream, r.next = r.stream+1, 0 // adopted from an earlier candidate, or delivered by gossip meanwhile
			continue
		}
		r.next++
		if len(cl.head.GetHash()) != len(trust.Digest{}) {
			c.falseClaim(cl.from, Want{}, fmt.Errorf("%w: claimed head hash of %d bytes", trust.ErrMalformed, len(cl.head.GetHash())))
			continue
		}
		c.emit(Fetch{From: cl.from, Via: ViaSync, Want: Want{Hash: trust.Digest(cl.head.GetHash()), Epoch: cl.head.GetEpoch(),
			Version: cl.head.GetVersion(), Size: cl.head.GetSize()}})
		return
	}
	c.emit(RoundDone{Adopted: r.adopted})
	c.round = nil
}

func (c *Core) load(in Load) {
	for _, l := range in.Items {
		h := &Held{Verified: l.Verified, Proof: l.Held.GetProof(), WithBody: len(l.Held.GetPayload()) > 0, At: l.Modified, FromCache: true}
		if err := c.adopt(l.Verified, h); err != nil {
			c.refused(fmt.Errorf("adopt last-known-good %s: %w", l.File, err), "", ViaLKG)
			continue
		}
		c.accept(h, ViaLKG)
	}
}

func (c *Core) holds(d trust.Digest) bool { return c.HeldByHash(d) != nil }

// HeldByHash returns the held bundle whose payload hashes to d, or nil.
func (c *Core) HeldByHash(d trust.Digest) *Held {
	for _, h := range c.held {
		if h.Verified.Held == d {
			return h
		}
	}
	return nil
}

// HoldsBundle reports whether the core holds a bundle of any stream but the control
// stream: until it does, anti-entropy runs every second or so, not every interval (the
// control message, published at the seed's start, often arrives before the first bundle).
func (c *Core) HoldsBundle() bool {
	for k := range c.held {
		if k != trust.ControlVariant {
			return true
		}
	}
	return false
}

// Current returns the held bundle of a stream, or nil.
func (c *Core) Current(key string) *Held { return c.held[key] }

// Streams returns every held bundle, by stream key.
func (c *Core) Streams() []*Held {
	out := make([]*Held, 0, len(c.held))
	for _, k := range slices.Sorted(maps.Keys(c.held)) {
		out = append(out, c.held[k])
	}
	return out
}

// Heads returns what the core holds, as the sync protocol announces it.
func (c *Core) Heads() []*syncv1.Head {
	out := make([]*syncv1.Head, 0, len(c.held))
	for _, h := range c.Streams() {
		hdr := h.Verified.Header
		out = append(out, &syncv1.Head{
			RequiredCapabilities: hdr.GetRequiredCapabilities(), Epoch: hdr.GetEpoch(), Version: hdr.GetVersion(),
			Hash: h.Verified.Held[:], Size: uint64(len(h.Verified.Payload)), Source: h.Verified.Source,
		})
	}
	return out
}

// Root is the domain root in force.
func (c *Core) Root() *trust.Root { return c.verifier.Root() }

// Marks returns the (epoch, version) mark of every stream.
func (c *Core) Marks() map[string]trust.Mark { return c.verifier.State().Marks }

// LastAccept is when the newest bundle was installed.
func (c *Core) LastAccept() time.Time { return c.lastAccept }

// Banned lists the peers anti-entropy does not ask at now.
func (c *Core) Banned(now time.Time) []string { return c.bans.list(now) }

// Counts returns accepted bundles by how they came and refusals by reason.
func (c *Core) Counts() (accepted map[string]uint64, rejected map[string]uint64) {
	accepted = map[string]uint64{}
	for k, v := range c.accepted {
		accepted[string(k)] = v
	}
	return accepted, maps.Clone(c.rejected)
}

// TakeDirty returns the streams whose newest bundle is not written yet, and forgets them:
// MarkDirty puts back one whose write failed.
func (c *Core) TakeDirty() map[string]*Held {
	out := make(map[string]*Held, len(c.dirty))
	for k := range c.dirty {
		out[k] = c.held[k]
	}
	clear(c.dirty)
	return out
}

// MarkDirty asks for the stream's newest bundle to be written again.
func (c *Core) MarkDirty(key string) { c.dirty[key] = true }

// namedBundle is the hash of the bundle an authenticated envelope names: a snapshot's own
// payload hash, a delta's target, an announce's snapshot. Zero when it names none.
func namedBundle(env *trustv1.Envelope) trust.Digest {
	switch env.GetPayloadType() {
	case trust.PayloadBundle, trust.PayloadControl:
		return sha256.Sum256(env.GetPayload())
	case trust.PayloadDelta:
		d := &bundlev1.BundleDelta{}
		if proto.Unmarshal(env.GetPayload(), d) == nil && len(d.GetTargetHash()) == sha256.Size {
			return trust.Digest(d.GetTargetHash())
		}
	case trust.PayloadAnnounce:
		an := &bundlev1.Announce{}
		if proto.Unmarshal(env.GetPayload(), an) == nil && len(an.GetSnapshotHash()) == sha256.Size {
			return trust.Digest(an.GetSnapshotHash())
		}
	}
	return trust.Digest{}
}
