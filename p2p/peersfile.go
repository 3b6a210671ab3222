package p2p

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"meshkit.dev/meshkit/internal/atomicfile"
)

// Bounds of the peers file: it is read at start, so a damaged or planted one costs little.
const (
	maxSavedPeers     = 256
	maxPeersFileBytes = 256 << 10
	peersSaveEvery    = time.Minute
)

// savedPeer is one entry of the peers file.
type savedPeer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// loadPeers reads Config.PeersFile and schedules each peer in it for a redial now, at the
// addresses it had. A missing file is a first start; a damaged one is reported and
// ignored: the node still has its bootstrap peers.
func (n *Node) loadPeers() {
	if n.cfg.PeersFile == "" {
		return
	}
	f, err := os.Open(n.cfg.PeersFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		n.log.Warn("peers file not read", "file", n.cfg.PeersFile, "err", err)
		return
	}
	defer f.Close()
	var saved []savedPeer
	b, err := io.ReadAll(io.LimitReader(f, maxPeersFileBytes+1))
	if err == nil && len(b) > maxPeersFileBytes {
		err = errors.New("larger than 256 KiB")
	}
	if err == nil {
		err = json.Unmarshal(b, &saved)
	}
	if err != nil {
		n.log.Warn("peers file ignored", "file", n.cfg.PeersFile, "err", err)
		return
	}
	now := time.Now()
	n.lostMu.Lock()
	defer n.lostMu.Unlock()
	for _, sp := range saved[:min(len(saved), maxSavedPeers)] {
		id, err := peer.Decode(sp.ID)
		if err != nil || id == n.host.ID() {
			continue
		}
		var addrs []ma.Multiaddr
		for _, a := range sp.Addrs[:min(len(sp.Addrs), maxRedialAddrs)] {
			if m, err := ma.NewMultiaddr(a); err == nil {
				addrs = append(addrs, m)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		if _, ok := n.lost[id]; !ok {
			n.lost[id] = &redial{next: now, backoff: n.cfg.RedialFirst, since: now, addrs: addrs}
		}
	}
}

// savePeers writes the connected peers of the domain (those that speak its sync protocol)
// to Config.PeersFile, at most maxSavedPeers, with their addresses.
func (n *Node) savePeers() {
	if n.cfg.PeersFile == "" {
		return
	}
	proto := SyncProtocol(n.cfg.Domain)
	var saved []savedPeer
	for _, p := range n.host.Network().Peers() {
		if len(saved) == maxSavedPeers {
			break
		}
		if ok, err := n.host.Peerstore().SupportsProtocols(p, proto); err != nil || len(ok) == 0 {
			continue
		}
		sp := savedPeer{ID: p.String()}
		for _, c := range n.host.Network().ConnsToPeer(p) {
			if c.Stat().Direction == network.DirOutbound { // an address that was dialled
				sp.Addrs = append(sp.Addrs, c.RemoteMultiaddr().String())
			}
		}
		for _, a := range n.host.Peerstore().Addrs(p) {
			if len(sp.Addrs) < maxRedialAddrs {
				sp.Addrs = append(sp.Addrs, a.String())
			}
		}
		if len(sp.Addrs) > 0 {
			saved = append(saved, sp)
		}
	}
	b, err := json.Marshal(saved)
	if err == nil {
		err = atomicfile.WriteFile(n.cfg.PeersFile, b, 0o600)
	}
	if err != nil {
		n.log.Warn("peers file not written", "file", n.cfg.PeersFile, "err", err)
	}
}
