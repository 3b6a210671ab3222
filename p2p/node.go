package p2p

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

// Verdict is a validator's decision on one gossip message.
type Verdict int

const (
	// Accept delivers the message and forwards it to the mesh.
	Accept Verdict = iota
	// Ignore drops it without penalty: valid but stale, or not decidable here.
	Ignore
	// Reject drops it and counts an invalid delivery against the peer that sent it.
	Reject
)

func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Ignore:
		return "ignore"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Message is one gossip message to validate.
type Message struct {
	// From is the peer that forwarded it (not necessarily its author).
	From peer.ID
	Data []byte
	// Local is set for the node's own publications.
	Local bool
}

// Validator decides on every gossip message before it is delivered or forwarded: nothing
// is relayed unless it returns Accept. It is called concurrently, and must reject
// messages larger than Config.MaxGossipBytes.
type Validator interface {
	Validate(ctx context.Context, m Message) Verdict
}

// Source is what a node serves over the sync protocol.
type Source interface {
	// Heads lists the newest bundle held of each capability variant.
	Heads() []*syncv1.Head
	// Held returns the bundle whose payload hashes to hash, or nil.
	Held(hash []byte) *syncv1.HeldBundle
}

// EncodedSource is a Source that keeps each held bundle encoded: a fetch is then served
// by copying those bytes instead of marshalling the bundle again for every peer (a 64 KiB
// bundle is fetched by every neighbour). HeldEncoded returns Held(hash) encoded, or nil;
// the node does not modify the bytes.
type EncodedSource interface {
	Source
	HeldEncoded(hash []byte) []byte
}

// Role selects gossipsub parameters.
type Role int

const (
	// RoleAgent is an ordinary member of the domain's mesh.
	RoleAgent Role = iota
	// RoleSeed publishes: it keeps a small mesh and never flood-publishes, so its upload
	// per publish stays bounded whatever the number of agents that bootstrap through it.
	RoleSeed
)

// Defaults.
const (
	// DefaultMaxGossipBytes bounds one gossip message: larger bundles travel as announces
	// and are fetched by hash.
	DefaultMaxGossipBytes = 64 << 10
	// DefaultMaxFetchBytes bounds one sync response.
	DefaultMaxFetchBytes = 64 << 20
	// DefaultTargetPeers is how many connections the node maintains.
	DefaultTargetPeers = 8
)

// BundlesTopic is the gossipsub topic of a domain's bundles.
func BundlesTopic(domain string) string { return "/meshkit/" + domain + "/bundles/1" }

// SyncProtocol is the libp2p protocol of a domain's anti-entropy sync.
func SyncProtocol(domain string) protocol.ID { return protocol.ID("/meshkit/" + domain + "/sync/1") }

// Config configures a Node.
type Config struct {
	// Domain names the topics and protocols. Required.
	Domain string
	// Host is the libp2p host (NewHost, or a mocknet host in tests). The Node does not
	// own it: close the host after the Node.
	Host host.Host
	Role Role
	// Validator decides on gossip. Required.
	Validator Validator
	// Source serves sync requests. Required.
	Source Source
	// Bootstrap peers are dialled at start and whenever the node has too few peers; the
	// connection manager protects them. Seeds are bootstrap peers.
	Bootstrap []peer.AddrInfo
	Logger    *slog.Logger
	// MaxGossipBytes bounds gossip messages: gossipsub drops RPCs much larger, and the
	// Validator must reject (and count) messages above it. 0 means DefaultMaxGossipBytes.
	MaxGossipBytes int
	// MaxFetchBytes bounds a sync response read. 0 means DefaultMaxFetchBytes.
	MaxFetchBytes int
	// TargetPeers is the number of connections the maintenance loop keeps. 0 means DefaultTargetPeers.
	TargetPeers int
	// PeersFile, when set, keeps the peers of the domain this node was connected to: written
	// every minute and on Close, read at start, when each is dialled at once. A seed
	// restarted on its data reaches its agents without waiting for their redial backoff,
	// and an agent whose bootstrap peers are down finds its old peers.
	PeersFile string
	// MaintainInterval is how often connectivity is checked and lost peers are redialled.
	// 0 means 1 s.
	MaintainInterval time.Duration
	// ScoreInspectInterval is how often peer scores are sampled for Scores. 0 means 5 s.
	ScoreInspectInterval time.Duration
	// RedialFirst and RedialMax bound the backoff of redialling lost peers: the first
	// attempt after RedialFirst, then doubling waits up to RedialMax. 0 means 1 s and 30 s.
	RedialFirst, RedialMax time.Duration
	// Gossip overrides the role's gossipsub parameters (simulations).
	Gossip *pubsub.GossipSubParams
	// OnReport, when set, serves the report protocol (seeds): it receives every agent's
	// report with the agent's authenticated peer ID.
	OnReport func(from peer.ID, r *syncv1.NodeReport)
	// OnIdentity, when set, serves the identity protocol (seeds): enrolment and CSRs, with
	// the caller's authenticated peer ID. It must answer every request.
	OnIdentity func(from peer.ID, req *identityv1.IdentityRequest) *identityv1.IdentityResponse
	// Admission, when set, keeps the mesh to peers that show a certificate of the domain
	// (see Admission); nil admits every peer that holds the network key.
	Admission Admission
	// OnAdmit, when set, is called each time a peer's certificate is accepted: a peer
	// admitted after it connected can now be synced with.
	OnAdmit func(peer.ID)
}

// Node is a member of one domain's gossip mesh and sync protocol.
type Node struct {
	cfg   Config
	log   *slog.Logger
	host  host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription

	scores              atomic.Pointer[map[peer.ID]float64]
	pxNext              time.Time     // no peer exchange before this (owned by maintain)
	pxBackoff           time.Duration // grows while exchanges bring no new connection
	conns               *connSet      // connected peers, from notifications
	lostMu              sync.Mutex
	lost                map[peer.ID]*redial // peers whose connection dropped, redialled with backoff
	lastHeal            time.Time           // when a lost peer last came back (under lostMu)
	redialNow           chan struct{}       // wakes maintain: lost peers are due
	notifiee            *network.NotifyBundle
	meshMu              sync.Mutex
	mesh                map[peer.ID]bool // the bundles topic mesh, from GRAFT and PRUNE traces
	bytesIn, bytesOut   atomic.Uint64
	admitted            *admitted    // peers whose certificates verified (with Config.Admission)
	presentTo           chan peer.ID // peers to show this node's certificate
	gossipIn, gossipOut atomic.Uint64
	certRefused         atomic.Uint64 // peer certificates refused (with Config.Admission)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New joins the domain: it starts gossipsub with peer scoring, registers the validator,
// serves the sync protocol and starts the connectivity loop. Close stops all of it.
func New(ctx context.Context, cfg Config) (*Node, error) {
	switch {
	case cfg.Domain == "":
		return nil, errors.New("p2p: Config.Domain is required")
	case cfg.Host == nil:
		return nil, errors.New("p2p: Config.Host is required")
	case cfg.Validator == nil || cfg.Source == nil:
		return nil, errors.New("p2p: Config.Validator and Config.Source are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxGossipBytes == 0 {
		cfg.MaxGossipBytes = DefaultMaxGossipBytes
	}
	if cfg.MaxFetchBytes == 0 {
		cfg.MaxFetchBytes = DefaultMaxFetchBytes
	}
	if cfg.TargetPeers == 0 {
		cfg.TargetPeers = DefaultTargetPeers
	}
	if cfg.MaintainInterval == 0 {
		cfg.MaintainInterval = time.Second
	}
	if cfg.ScoreInspectInterval == 0 {
		cfg.ScoreInspectInterval = 5 * time.Second
	}
	if cfg.RedialFirst == 0 {
		cfg.RedialFirst = redialFirst
	}
	if cfg.RedialMax == 0 {
		cfg.RedialMax = redialMax
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("domain", cfg.Domain), host: cfg.Host, mesh: map[peer.ID]bool{}, lost: map[peer.ID]*redial{}, redialNow: make(chan struct{}, 1),
		admitted: &admitted{until: map[peer.ID]time.Time{}, chain: map[peer.ID][][]byte{}}, presentTo: make(chan peer.ID, 256)}
	empty := map[peer.ID]float64{}
	n.scores.Store(&empty)

	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	topic := BundlesTopic(cfg.Domain)
	params, thresholds := ScoreParams(topic)
	gs := cfg.Gossip
	if gs == nil {
		p := GossipParams(cfg.Role)
		gs = &p
	}
	for _, pi := range cfg.Bootstrap {
		cfg.Host.Peerstore().AddAddrs(pi.ID, pi.Addrs, time.Hour)
		cfg.Host.ConnManager().Protect(pi.ID, "meshkit-bootstrap")
	}
	opts := []pubsub.Option{
		pubsub.WithGossipSubParams(*gs),
		pubsub.WithPeerScore(params, thresholds),
		pubsub.WithPeerScoreInspect(n.inspectScores, cfg.ScoreInspectInterval),
		pubsub.WithFloodPublish(false),
		pubsub.WithPeerExchange(false), // peers are exchanged over the sync protocol, with backoff
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithMaxMessageSize(cfg.MaxGossipBytes + (16 << 10)),
		pubsub.WithRawTracer(byteCounter{n: n}),
		pubsub.WithSubscriptionFilter(pubsub.NewAllowlistSubscriptionFilter(topic)),
		pubsub.WithLogger(cfg.Logger),
	}
	if cfg.Admission != nil {
		// Consulted on every GRAFT, IHAVE and IWANT and when mesh peers are picked at each
		// heartbeat: a peer admitted after it connected joins at the next heartbeat.
		opts = append(opts, pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return n.Admitted(p) }))
	}
	ps, err := pubsub.NewGossipSub(runCtx, cfg.Host, opts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("p2p: gossipsub: %w", err)
	}
	n.ps = ps
	if err := ps.RegisterTopicValidator(topic, n.validate,
		pubsub.WithValidatorTimeout(30*time.Second), pubsub.WithValidatorConcurrency(256)); err != nil {
		cancel()
		return nil, fmt.Errorf("p2p: validator: %w", err)
	}
	if n.topic, err = ps.Join(topic); err != nil {
		cancel()
		return nil, fmt.Errorf("p2p: join %s: %w", topic, err)
	}
	// A seed publishes without subscribing: agents then never see it as a mesh candidate,
	// so they do not GRAFT it (and it need not PRUNE them) however many bootstrap through
	// it, and each publish fans out to D random agents. Measured at 10,000 agents, the
	// GRAFT/PRUNE churn of a subscribed seed cost it 100 × the bundle per publish.
	if cfg.Role != RoleSeed {
		if n.sub, err = n.topic.Subscribe(); err != nil {
			cancel()
			return nil, fmt.Errorf("p2p: subscribe %s: %w", topic, err)
		}
	}
	n.conns = newConnSet()
	n.notifiee = &network.NotifyBundle{ConnectedF: func(net network.Network, c network.Conn) {
		n.conns.connected(net, c)
		n.onConnect(c.RemotePeer())
		if n.cfg.Admission != nil {
			n.queuePresent(c.RemotePeer())
		}
	}, DisconnectedF: func(net network.Network, c network.Conn) {
		n.conns.disconnected(net, c)
		n.onDisconnect(net, c)
		if n.cfg.Admission != nil && net.Connectedness(c.RemotePeer()) != network.Connected {
			n.admitted.drop(c.RemotePeer()) // shown again on the next connection
		}
	}}
	cfg.Host.Network().Notify(n.notifiee)
	for _, c := range cfg.Host.Network().Conns() { // connections made before the notifiee
		n.conns.connected(cfg.Host.Network(), c)
	}
	cfg.Host.SetStreamHandler(SyncProtocol(cfg.Domain), n.serveSync)
	if cfg.OnReport != nil {
		cfg.Host.SetStreamHandler(ReportProtocol(cfg.Domain), n.serveReport)
	}
	if cfg.OnIdentity != nil {
		cfg.Host.SetStreamHandler(IdentityProtocol(cfg.Domain), n.serveIdentity)
	}
	if cfg.Admission != nil {
		cfg.Host.SetStreamHandler(CertProtocol(cfg.Domain), n.serveCert)
		for _, p := range cfg.Host.Network().Peers() { // connected before the node
			n.queuePresent(p)
		}
		n.wg.Add(1)
		go n.presentLoop(runCtx)
	}

	n.loadPeers()
	n.wg.Add(1)
	go n.maintain(runCtx)
	if n.sub != nil {
		n.wg.Add(1)
		go n.drain(runCtx)
	}
	return n, nil
}

// messageID keys gossipsub's seen-cache on what an envelope's signatures cover, its
// payload type and payload, rather than on its bytes. Envelopes are malleable: the same
// signed content can be resent with an unknown field, an extra or a different set of
// signatures, and each such copy would otherwise be a new message that reaches the
// validator and costs a full verification. The same signed content published twice (a
// seed's retry, an agent relaying after sync) is likewise one message. Bytes that are no
// envelope keep an id of their own bytes, in a separate space.
func messageID(m *pb.Message) string {
	if pt, payload, ok := envelopeContent(m.Data); ok {
		h := sha256.New()
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(pt)))])
		h.Write(pt)
		h.Write(payload)
		return "s" + hex.EncodeToString(h.Sum(nil)[:20])
	}
	h := sha256.Sum256(m.Data)
	return "r" + hex.EncodeToString(h[:20])
}

// envelopeContent returns the payload_type (field 1) and payload (field 2) of an encoded
// meshkit.trust.v1.Envelope, the last occurrence of each as proto.Unmarshal takes it,
// skipping every other field; ok is false when b does not parse or has no payload.
func envelopeContent(b []byte) (payloadType, payload []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, false
			}
			if num == 1 {
				payloadType = v
			} else {
				payload, ok = v, true
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, nil, false
		}
		b = b[n:]
	}
	return payloadType, payload, ok
}

func (n *Node) validate(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	local := m.Local || from == n.host.ID()
	if !local && !n.Admitted(from) {
		return pubsub.ValidationIgnore // not in the mesh: dropped unread, without cost to a peer still showing its certificate
	}
	switch n.cfg.Validator.Validate(ctx, Message{From: from, Data: m.Data, Local: local}) {
	case Accept:
		return pubsub.ValidationAccept
	case Reject:
		return pubsub.ValidationReject
	}
	return pubsub.ValidationIgnore
}

// drain consumes delivered messages: the validator has already acted on them.
func (n *Node) drain(ctx context.Context) {
	defer n.wg.Done()
	for {
		if _, err := n.sub.Next(ctx); err != nil {
			return
		}
	}
}

func (n *Node) inspectScores(s map[peer.ID]float64) {
	n.scores.Store(&s)
}

// Publish floods data on the domain's bundles topic. The node's own validator sees it
// first (with Local set).
func (n *Node) Publish(ctx context.Context, data []byte) error {
	return n.topic.Publish(ctx, data)
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host is the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Peers lists the peers connected now.
func (n *Node) Peers() []peer.ID { return n.host.Network().Peers() }

// TopicPeers lists the peers known to subscribe to the bundles topic.
func (n *Node) TopicPeers() []peer.ID { return n.topic.ListPeers() }

// MeshPeers lists the peers in the node's mesh of the bundles topic: those it forwards
// every message to.
func (n *Node) MeshPeers() []peer.ID {
	n.meshMu.Lock()
	defer n.meshMu.Unlock()
	return slices.Collect(maps.Keys(n.mesh))
}

func (n *Node) setMesh(p peer.ID, topic string, in bool) {
	if topic != BundlesTopic(n.cfg.Domain) {
		return
	}
	n.meshMu.Lock()
	if in {
		n.mesh[p] = true
	} else {
		delete(n.mesh, p)
	}
	n.meshMu.Unlock()
}

// Scores returns the latest sample of every known peer's gossipsub score.
func (n *Node) Scores() map[peer.ID]float64 { return *n.scores.Load() }

// Traffic is what a node sent and received: gossipsub RPCs and sync streams, counted at
// the message layer (without transport framing).
type Traffic struct {
	BytesIn, BytesOut   uint64
	GossipIn, GossipOut uint64 // the gossipsub part
}

// Traffic returns the totals since New.
func (n *Node) Traffic() Traffic {
	return Traffic{BytesIn: n.bytesIn.Load(), BytesOut: n.bytesOut.Load(), GossipIn: n.gossipIn.Load(), GossipOut: n.gossipOut.Load()}
}

// Close leaves the mesh and stops the node's goroutines. It does not close the host.
func (n *Node) Close() error {
	n.host.Network().StopNotify(n.notifiee)
	n.host.RemoveStreamHandler(SyncProtocol(n.cfg.Domain))
	n.host.RemoveStreamHandler(ReportProtocol(n.cfg.Domain))
	n.host.RemoveStreamHandler(IdentityProtocol(n.cfg.Domain))
	n.host.RemoveStreamHandler(CertProtocol(n.cfg.Domain))
	if n.sub != nil {
		n.sub.Cancel()
	}
	n.savePeers()
	err := n.topic.Close()
	n.cancel()
	n.wg.Wait()
	if err != nil {
		return fmt.Errorf("p2p: close topic: %w", err)
	}
	return nil
}

// maxRedialAddrs bounds the addresses kept per lost peer.
const maxRedialAddrs = 8

// redial is the backoff state of a lost peer.
type redial struct {
	next    time.Time
	backoff time.Duration
	since   time.Time
	// addrs are where the peer was, kept here: libp2p forgets a disconnected peer's
	// addresses after a minute (its peerstore's grace period), and a redial by ID alone
	// could never reach a seed that was down for longer.
	addrs []ma.Multiaddr
}

// Lost peers are redialled after 1 s, then with doubling waits up to 30 s, for a day: a
// long partition must still heal by itself. (Measured: with a 10-minute window, a
// 10-minute partition took 49 s to converge after healing; the hundreds of agents on each
// side redialling every 30 s find the other side within milliseconds of a heal.)
const (
	redialFirst = time.Second
	redialMax   = 30 * time.Second
	redialFor   = 24 * time.Hour
)

func (n *Node) onDisconnect(net network.Network, c network.Conn) {
	p := c.RemotePeer()
	if net.Connectedness(p) == network.Connected {
		return // another connection to it remains
	}
	// A bootstrap peer is redialled whatever its protocols say: a connection to a seed that
	// closes before identify completes (a restart) leaves them unknown, and a well
	// connected node dials its bootstrap peers only through this.
	bootstrap := slices.ContainsFunc(n.cfg.Bootstrap, func(b peer.AddrInfo) bool { return b.ID == p })
	if ok, err := n.host.Peerstore().SupportsProtocols(p, SyncProtocol(n.cfg.Domain)); !bootstrap && (err != nil || len(ok) == 0) {
		return
	}
	addrs := n.host.Peerstore().Addrs(p)
	if a := c.RemoteMultiaddr(); a != nil && !slices.ContainsFunc(addrs, a.Equal) {
		addrs = append(addrs, a)
	}
	now := time.Now()
	n.lostMu.Lock()
	if _, ok := n.lost[p]; !ok {
		n.lost[p] = &redial{next: now.Add(n.cfg.RedialFirst), backoff: n.cfg.RedialFirst, since: now, addrs: addrs[:min(len(addrs), maxRedialAddrs)]}
	}
	n.lostMu.Unlock()
}

// healSignalEvery rate-limits onConnect's redial of every lost peer; healRedialSpread
// spreads those redials.
const (
	healSignalEvery  = 5 * time.Second
	healRedialSpread = 500 * time.Millisecond
)

// onConnect: a lost peer is back, so whatever separated us has likely healed. Every other
// lost peer is redialled within a second, rather than when its backoff (up to RedialMax) ends:
// each reconnection sets off the same at its ends, so a heal spreads through the fleet in
// a few round trips, and an agent whose every link crossed the partition is found again
// by its old peers. At most once per healSignalEvery, so a flapping peer can add no more
// than one attempt per lost peer in that time.
func (n *Node) onConnect(p peer.ID) {
	n.lostMu.Lock()
	_, wasLost := n.lost[p]
	if !wasLost {
		n.lostMu.Unlock()
		return
	}
	delete(n.lost, p)
	healed := n.healedLocked(time.Now())
	n.lostMu.Unlock()
	if healed {
		select {
		case n.redialNow <- struct{}{}:
		default:
		}
	}
}

// healedLocked schedules one attempt soon for every lost peer (the backoff goes on from
// where it was), unless it did so within healSignalEvery. The attempts are spread over
// healRedialSpread: both ends of many links learn of a heal at once, and dialling all at
// the same instant left an agent without the newest bundle in 1–3 of 10 runs of
// TestVirtualSmall.
func (n *Node) healedLocked(now time.Time) bool {
	if now.Sub(n.lastHeal) < healSignalEvery {
		return false
	}
	n.lastHeal = now
	for _, r := range n.lost {
		r.next = now.Add(time.Duration(rand.Int64N(int64(healRedialSpread))))
	}
	return true
}

// dueRedials returns the lost peers whose next attempt is due, and forgets those given up.
func (n *Node) dueRedials() []peer.AddrInfo {
	now := time.Now()
	n.lostMu.Lock()
	defer n.lostMu.Unlock()
	var out []peer.AddrInfo
	back := false
	for p, r := range n.lost {
		switch {
		case n.host.Network().Connectedness(p) == network.Connected:
			// Back before its connection notification reached onConnect: the same signal.
			delete(n.lost, p)
			back = true
		case now.Sub(r.since) > redialFor:
			delete(n.lost, p)
		case !now.Before(r.next):
			out = append(out, peer.AddrInfo{ID: p, Addrs: r.addrs})
			r.backoff = min(2*r.backoff, n.cfg.RedialMax)
			// Jitter (50–100 % of the backoff) keeps the peers that lost each other at
			// the same instant from redialling in lockstep for the rest of a partition.
			r.next = now.Add(r.backoff/2 + time.Duration(rand.Int64N(int64(r.backoff/2)+1)))
		}
	}
	if back {
		n.healedLocked(now)
	}
	return out
}

// maintain keeps the node connected: bootstrap peers first, then peers met before, then
// peers learned by peer exchange from the peers it has, until it holds TargetPeers
// connections. Peers whose connection dropped (a partition, a restart) are redialled with
// backoff whatever the count, so a healed partition reconnects within seconds and the
// new connections start anti-entropy.
func (n *Node) maintain(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	saved := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.redialNow:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		n.connect(ctx)
		if time.Since(saved) >= peersSaveEvery {
			n.savePeers()
			saved = time.Now()
		}
		wait := n.cfg.MaintainInterval
		t.Reset(wait + time.Duration(rand.Int64N(int64(wait/4)+1)))
	}
}

// knownPeers lists peers met before (they spoke this domain's sync protocol) that are not
// connected now, in random order, at most limit.
func (n *Node) knownPeers(limit int, skip func(peer.ID) bool) []peer.AddrInfo {
	proto := SyncProtocol(n.cfg.Domain)
	net := n.host.Network()
	known := n.host.Peerstore().PeersWithAddrs()
	rand.Shuffle(len(known), func(i, j int) { known[i], known[j] = known[j], known[i] })
	var out []peer.AddrInfo
	for _, p := range known {
		if len(out) >= limit {
			break
		}
		if p == n.host.ID() || net.Connectedness(p) == network.Connected || skip(p) {
			continue
		}
		if ok, err := n.host.Peerstore().SupportsProtocols(p, proto); err == nil && len(ok) > 0 {
			out = append(out, peer.AddrInfo{ID: p})
		}
	}
	return out
}

func (n *Node) connect(ctx context.Context) {
	net := n.host.Network()
	if n.conns.len() < 2*n.cfg.TargetPeers { // well connected: never fight the connection manager's trimming
		n.dialAll(ctx, n.dueRedials())
	}
	deficit := n.cfg.TargetPeers - n.conns.len()
	if deficit <= 0 {
		n.pxBackoff, n.pxNext = 0, time.Time{}
		return
	}
	// Below the target: bootstrap peers, then peers met before (they come back after a
	// partition heals or a restart, even with no bootstrap peer up), then peer exchange.
	// A round that brings no new connection backs off (2 s doubling to 1 min), so a node
	// whose candidates are unreachable does not dial them every second.
	if time.Now().Before(n.pxNext) {
		return
	}
	before := len(net.Peers())
	defer func() {
		if len(net.Peers()) > before {
			n.pxBackoff = 0
		} else {
			n.pxBackoff = min(max(2*n.pxBackoff, 2*time.Second), time.Minute)
		}
		n.pxNext = time.Now().Add(n.pxBackoff)
	}()
	var dial []peer.AddrInfo
	for _, pi := range n.cfg.Bootstrap {
		if net.Connectedness(pi.ID) != network.Connected {
			dial = append(dial, pi)
		}
	}
	dial = append(dial, n.knownPeers(2*deficit, func(p peer.ID) bool {
		return slices.ContainsFunc(dial, func(pi peer.AddrInfo) bool { return pi.ID == p })
	})...)
	n.dialAll(ctx, dial)
	// Peer exchange: ask a few connected peers for more, bootstrap peers last.
	peers := net.Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	isBoot := func(p peer.ID) bool {
		return slices.ContainsFunc(n.cfg.Bootstrap, func(b peer.AddrInfo) bool { return b.ID == p })
	}
	slices.SortStableFunc(peers, func(x, y peer.ID) int {
		switch bx, by := isBoot(x), isBoot(y); {
		case bx == by:
			return 0
		case by:
			return -1
		}
		return 1
	})
	for _, p := range peers[:min(len(peers), 3)] {
		deficit = n.cfg.TargetPeers - len(net.Peers())
		if deficit <= 0 || ctx.Err() != nil {
			return
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		found, err := n.ExchangePeers(qctx, p, uint32(n.cfg.TargetPeers))
		cancel()
		if err != nil {
			continue
		}
		found = slices.DeleteFunc(found, func(pi peer.AddrInfo) bool {
			return pi.ID == n.host.ID() || net.Connectedness(pi.ID) == network.Connected
		})
		n.dialAll(ctx, found[:min(len(found), deficit)])
	}
}

// dialAll dials peers concurrently, at most 16 at a time, each for at most 5 s, and
// returns when every dial has ended: a partition's unreachable peers cost one timeout,
// not one each.
func (n *Node) dialAll(ctx context.Context, peers []peer.AddrInfo) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, pi := range peers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := n.host.Connect(dctx, pi); err != nil {
				n.log.Debug("peer unreachable", "peer", pi.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// byteCounter counts gossipsub traffic and tracks the mesh.
type byteCounter struct {
	NopTracer
	n *Node
}

func (b byteCounter) RecvRPC(rpc *pubsub.RPC) {
	s := uint64(proto.Size(&rpc.RPC))
	b.n.bytesIn.Add(s)
	b.n.gossipIn.Add(s)
}

func (b byteCounter) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	s := uint64(proto.Size(&rpc.RPC))
	b.n.bytesOut.Add(s)
	b.n.gossipOut.Add(s)
}

func (b byteCounter) RemovePeer(p peer.ID)          { b.n.setMesh(p, BundlesTopic(b.n.cfg.Domain), false) }
func (b byteCounter) Graft(p peer.ID, topic string) { b.n.setMesh(p, topic, true) }
func (b byteCounter) Prune(p peer.ID, topic string) { b.n.setMesh(p, topic, false) }

// NopTracer is a pubsub.RawTracer that does nothing: embed it and override what you need.
type NopTracer struct{}

var _ pubsub.RawTracer = NopTracer{}

func (NopTracer) AddPeer(peer.ID, protocol.ID)                         {}
func (NopTracer) RemovePeer(peer.ID)                                   {}
func (NopTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (NopTracer) OnClosedOutboundStream(peer.ID)                       {}
func (NopTracer) Join(string)                                          {}
func (NopTracer) Leave(string)                                         {}
func (NopTracer) Graft(peer.ID, string)                                {}
func (NopTracer) Prune(peer.ID, string)                                {}
func (NopTracer) ValidateMessage(*pubsub.Message)                      {}
func (NopTracer) DeliverMessage(*pubsub.Message)                       {}
func (NopTracer) RejectMessage(*pubsub.Message, string)                {}
func (NopTracer) DuplicateMessage(*pubsub.Message)                     {}
func (NopTracer) ThrottlePeer(peer.ID)                                 {}
func (NopTracer) RecvRPC(*pubsub.RPC)                                  {}
func (NopTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (NopTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (NopTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (NopTracer) UndeliverableMessage(*pubsub.Message)                 {}
