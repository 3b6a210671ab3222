package p2p

import (
	"math/rand/v2"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// connSet is the set of connected peers, kept from connection notifications, so that
// counting them and drawing a few at random cost O(1) and O(k): a seed with 10,000 agents
// answering each one's peer exchange by listing and shuffling every connection spent
// O(N²) over a fleet's start (network.Peers builds the whole list each call).
type connSet struct {
	mu    sync.Mutex
	index map[peer.ID]int
	ids   []peer.ID
}

func newConnSet() *connSet { return &connSet{index: map[peer.ID]int{}} }

func (s *connSet) connected(_ network.Network, c network.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := c.RemotePeer()
	if _, ok := s.index[p]; !ok {
		s.index[p] = len(s.ids)
		s.ids = append(s.ids, p)
	}
}

func (s *connSet) disconnected(net network.Network, c network.Conn) {
	p := c.RemotePeer()
	if net.Connectedness(p) == network.Connected {
		return // another connection to it remains
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[p]
	if !ok {
		return
	}
	last := len(s.ids) - 1
	s.ids[i] = s.ids[last]
	s.index[s.ids[i]] = i
	s.ids = s.ids[:last]
	delete(s.index, p)
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// sample returns up to k distinct connected peers other than except, at random.
func (s *connSet) sample(k int, except peer.ID) []peer.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.ids)
	if k >= n {
		out := make([]peer.ID, 0, n)
		for _, p := range s.ids {
			if p != except {
				out = append(out, p)
			}
		}
		rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out
	}
	seen := make(map[int]bool, k+1)
	out := make([]peer.ID, 0, k)
	for tries := 0; len(out) < k && tries < 4*k+8; tries++ {
		i := rand.IntN(n)
		if seen[i] {
			continue
		}
		seen[i] = true
		if s.ids[i] != except {
			out = append(out, s.ids[i])
		}
	}
	return out
}
