package content

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Lease bounds. A peer keeps a serving slot only while it makes progress: it must ask at
// least every leaseIdle, and from leaseGrace on it must have been sent at least
// leaseMinRate on average; no lease lasts beyond leaseMaxAge. A peer whose lease was
// taken for slowness or age waits leaseCooldown before it can have another, so one that
// asks for a byte at a time cannot keep a limited server's only slot from honest peers.
const (
	leaseIdle     = time.Second
	leaseGrace    = 2 * time.Second
	leaseMinRate  = 64 << 10 // bytes per second
	leaseMaxAge   = 30 * time.Second
	leaseCooldown = 10 * time.Second
)

// leaseTable decides which peers a server with a limited number of slots serves. It has no
// clock or goroutine of its own: callers pass the time. Not safe for concurrent use.
type leaseTable struct {
	max      int // 0 is unlimited
	leases   map[peer.ID]*lease
	cooldown map[peer.ID]time.Time
}

type lease struct {
	start, last time.Time
	bytes       int64
}

func newLeaseTable(max int) leaseTable {
	return leaseTable{max: max, leases: map[peer.ID]*lease{}, cooldown: map[peer.ID]time.Time{}}
}

// acquire reports whether p may be served at now, taking or renewing its slot.
func (t *leaseTable) acquire(p peer.ID, now time.Time) bool {
	if t.max <= 0 {
		return true
	}
	t.expire(now)
	if until, ok := t.cooldown[p]; ok {
		if now.Before(until) {
			return false
		}
		delete(t.cooldown, p)
	}
	if l, ok := t.leases[p]; ok {
		l.last = now
		return true
	}
	if len(t.leases) >= t.max {
		return false
	}
	t.leases[p] = &lease{start: now, last: now}
	return true
}

// served records n bytes sent to p under its lease.
func (t *leaseTable) served(p peer.ID, n int64) {
	if l, ok := t.leases[p]; ok {
		l.bytes += n
	}
}

// expire ends idle leases, and slow or old ones with a cooldown.
func (t *leaseTable) expire(now time.Time) {
	for p, l := range t.leases {
		age := now.Sub(l.start)
		switch {
		case now.Sub(l.last) > leaseIdle:
			delete(t.leases, p) // done, or gone: no cooldown
		case age > leaseMaxAge, age > leaseGrace && float64(l.bytes) < leaseMinRate*age.Seconds():
			delete(t.leases, p)
			t.cooldown[p] = now.Add(leaseCooldown)
		}
	}
	for p, until := range t.cooldown {
		if !now.Before(until) {
			delete(t.cooldown, p)
		}
	}
}
