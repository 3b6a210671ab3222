package p2p

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Score thresholds (see docs/p2p.md#peer-scoring for the reasoning).
const (
	// GossipThreshold: below it a peer gets no gossip (IHAVE/IWANT) from us and its gossip is ignored.
	GossipThreshold = -10
	// PublishThreshold: below it we do not publish to the peer.
	PublishThreshold = -50
	// GraylistThreshold: below it every RPC from the peer is dropped.
	GraylistThreshold = -80
	// InvalidMessageWeight is the score cost of the first invalid message (it grows with
	// the square of the count): one forged bundle is enough to graylist a peer.
	InvalidMessageWeight = -100
)

// Counters decay in steps of scoreDecayInterval (gossipsub's default is 1 s). Every step
// recomputes every peer's counters; with decays of ten minutes and an hour nothing needs
// finer steps, and at 1 s the refresh was 12 % of an idle agent's CPU in the simulator.
const (
	scoreDecayInterval = 5 * time.Second
	scoreDecayToZero   = 0.01
)

// ScoreParams returns the peer-scoring parameters for a domain's bundles topic.
//
// Bundles are rare (one per change, or per refresh) and every one is signed, so the score
// is built on what cannot happen honestly: an invalid message (a forged, cross-domain,
// expired or oversized bundle) costs more than the graylist threshold at once. Delivery
// rates are not scored (MeshMessageDeliveries is off): a quiet domain would otherwise
// penalise honest peers for the seed's silence. First deliveries and time in the mesh earn
// a small, capped credit, so a peer that relays well is kept when the mesh is pruned,
// without ever outweighing one invalid message.
func ScoreParams(topic string) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	decay := func(d time.Duration) float64 {
		return pubsub.ScoreParameterDecayWithBase(d, scoreDecayInterval, scoreDecayToZero)
	}
	p := &pubsub.PeerScoreParams{
		Topics: map[string]*pubsub.TopicScoreParams{
			topic: {
				TopicWeight:                    1,
				TimeInMeshWeight:               0.01,
				TimeInMeshQuantum:              time.Second,
				TimeInMeshCap:                  300, // ≤ +3 after 5 minutes in the mesh
				FirstMessageDeliveriesWeight:   1,
				FirstMessageDeliveriesDecay:    decay(time.Hour),
				FirstMessageDeliveriesCap:      5,
				InvalidMessageDeliveriesWeight: InvalidMessageWeight,
				InvalidMessageDeliveriesDecay:  decay(time.Hour),
			},
		},
		TopicScoreCap:     10,
		AppSpecificScore:  func(peer.ID) float64 { return 0 },
		AppSpecificWeight: 1,
		// Agents of one site may share an egress address (NAT); admission is the
		// domain's network key, so co-location is not penalised.
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     decay(10 * time.Minute),
		DecayInterval:             scoreDecayInterval,
		DecayToZero:               scoreDecayToZero,
		RetainScore:               time.Hour,
	}
	t := &pubsub.PeerScoreThresholds{
		GossipThreshold:             GossipThreshold,
		PublishThreshold:            PublishThreshold,
		GraylistThreshold:           GraylistThreshold,
		AcceptPXThreshold:           1,
		OpportunisticGraftThreshold: 2,
	}
	return p, t
}

// IDontWantAbove is the smallest message for which an agent sends IDONTWANT to its mesh.
// Below it a duplicate costs less than the control messages that might prevent it: a node
// sends one IDONTWANT per mesh peer on every first receipt, while the copies it would
// stop are mostly in flight already (a hop's latency dwarfs sending a few KiB). Measured
// on 1,000 agents (docs/RATIONALE.md): at 4 KiB IDONTWANT cost 8 control RPCs per agent
// per bundle to save one copy of six, and dropping it lowered p99 and CPU at 4 and 16 KiB;
// at 30 KiB it shortened the tail. The limit sits between those sizes. (Bundles above the
// seed's inline limit, 32 KiB by default, travel as small announces.)
const IDontWantAbove = 20 << 10

// GossipParams returns gossipsub's parameters for a role. Agents use the defaults
// (D=6, Dlo=5, Dhi=12) but send IDONTWANT only for messages of IDontWantAbove or more.
// A seed keeps a mesh of at most 7 and emits no gossip (IHAVE): what it uploads per
// publish is then bounded by its mesh, not by the number of agents connected to it.
// Agents gossip among themselves, and anti-entropy catches the rest.
// (Measured: with IHAVE the seed answered up to a dozen extra IWANTs per publish.)
func GossipParams(r Role) pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.IDontWantMessageThreshold = IDontWantAbove
	if r == RoleSeed {
		p.D, p.Dlo, p.Dhi, p.Dout, p.Dscore = 5, 4, 7, 1, 3
		p.Dlazy, p.GossipFactor = 0, 0
	}
	return p
}
