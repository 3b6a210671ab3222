// Package memnet makes go-libp2p's in-memory network (mocknet) keep one promise a real
// transport keeps: a closed connection takes its streams with it.
//
// mocknet adds a stream to the far end's connection in a goroutine, and opens a stream on
// a connection without checking that it is still open, so a stream opened while its
// connection closes can outlive it. Its pipes do not depend on the link, so it carries
// data over a link that no longer exists: gossipsub sees a working stream and keeps the
// peer, across a partition or to a peer whose every connection is gone.
package memnet

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// Reaper resets the streams of connections closed on the hosts it watches.
type Reaper struct {
	mu     sync.Mutex
	closed []network.Conn // closed connections that may still list streams
}

// Watch records every connection h sees closed from now on.
func (r *Reaper) Watch(h host.Host) {
	h.Network().Notify(&network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		r.mu.Lock()
		r.closed = append(r.closed, c)
		r.mu.Unlock()
	}})
}

// Reap resets every stream the closed connections still list and returns how many; it
// forgets the connections that list none.
func (r *Reaper) Reap() int {
	r.mu.Lock()
	closed := r.closed
	r.closed = nil
	r.mu.Unlock()
	reset := 0
	var keep []network.Conn
	for _, c := range closed {
		streams := c.GetStreams()
		for _, s := range streams {
			_ = s.Reset()
			reset++
		}
		if len(streams) > 0 {
			keep = append(keep, c) // a late stream may still join it: checked again
		}
	}
	r.mu.Lock()
	r.closed = append(r.closed, keep...)
	r.mu.Unlock()
	return reset
}

// Run calls Reap every interval until ctx ends.
func (r *Reaper) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.Reap()
	}
}
