// Package election elects one leader seed per control domain on etcd and reports
// leadership to OmniRelay's tools.
//
// The Tracker is the deterministic part: it is told what the election prefix holds (the
// candidates' keys, their creation revisions, their values), the leases' renewals and the
// time, and it decides who leads, at which term, and which LeadershipEvents that makes.
// The Elector drives it from etcd: a session lease, a campaign, a watch of the prefix.
package election

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Kind is a leadership event's kind, numbered as OmniRelay's LeadershipEventKind.
type Kind int32

// The kinds of OmniRelay's leadership contract.
const (
	KindSnapshot    Kind = 1
	KindObserved    Kind = 2
	KindElected     Kind = 3
	KindRenewed     Kind = 4
	KindLost        Kind = 5
	KindExpired     Kind = 6
	KindSteppedDown Kind = 7
)

func (k Kind) String() string {
	switch k {
	case KindSnapshot:
		return "SNAPSHOT"
	case KindObserved:
		return "OBSERVED"
	case KindElected:
		return "ELECTED"
	case KindRenewed:
		return "RENEWED"
	case KindLost:
		return "LOST"
	case KindExpired:
		return "EXPIRED"
	case KindSteppedDown:
		return "STEPPED_DOWN"
	}
	return fmt.Sprintf("Kind(%d)", int32(k))
}

// MaxInfoBytes bounds a candidate's value: anyone who can write the prefix is trusted
// (etcd's own RBAC guards it), but a value is still decoded only up to this size.
const MaxInfoBytes = 4 << 10

// Info is what a seed publishes about itself as its election value.
type Info struct {
	ID        string    `json:"id"`              // the seed's name (its host, by default)
	Admin     string    `json:"admin,omitempty"` // admin gRPC address clients are sent to
	HTTP      string    `json:"http,omitempty"`
	Since     time.Time `json:"since"`               // when it started campaigning
	Resigning bool      `json:"resigning,omitempty"` // proclaimed just before a graceful resign
}

// DecodeInfo decodes a candidate's value.
func DecodeInfo(b []byte) (Info, error) {
	var in Info
	if len(b) > MaxInfoBytes {
		return in, fmt.Errorf("election: a candidate value of %d bytes; the limit is %d", len(b), MaxInfoBytes)
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return in, fmt.Errorf("election: candidate value: %w", err)
	}
	return in, nil
}

// Candidate is one key under the election prefix.
type Candidate struct {
	Key  string
	Rev  int64 // the key's creation revision: the lowest leads, and it is the leader's term
	Info Info
}

// Token is a scope's current leadership.
type Token struct {
	Scope     string
	LeaderID  string
	Admin     string // the leader's admin address
	Term      int64  // the leader key's creation revision; also the fence token
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Event is one leadership change.
type Event struct {
	Kind   Kind
	Token  Token
	Reason string
	At     time.Time
}

// Tracker follows one scope's election. It has no goroutine, clock or I/O.
type Tracker struct {
	scope   string
	ttl     time.Duration
	cands   map[string]Candidate
	leader  *Candidate
	token   Token
	expired bool // EXPIRED was reported for the current token
}

// NewTracker tracks scope, whose leases last ttl.
func NewTracker(scope string, ttl time.Duration) *Tracker {
	return &Tracker{scope: scope, ttl: ttl, cands: map[string]Candidate{}}
}

// Put records a candidate's key (new, or its value changed).
func (t *Tracker) Put(c Candidate, now time.Time) []Event {
	t.cands[c.Key] = c
	if t.leader != nil && t.leader.Key == c.Key {
		t.leader.Info = c.Info // a proclaim: the same term
		return nil
	}
	return t.elect(now)
}

// Delete records that a candidate's key is gone.
func (t *Tracker) Delete(key string, now time.Time) []Event {
	c, ok := t.cands[key]
	if !ok {
		return nil
	}
	delete(t.cands, key)
	if t.leader == nil || t.leader.Key != key {
		return nil
	}
	var out []Event
	if !t.expired {
		kind, reason := KindExpired, "the leader's lease ended without a resignation"
		if c.Info.Resigning {
			kind, reason = KindSteppedDown, "the leader resigned"
		}
		out = append(out, Event{Kind: kind, Token: t.token, Reason: reason, At: now})
	}
	t.leader = nil
	return append(out, t.elect(now)...)
}

// Lost reports that this seed, the leader, learned it no longer leads (its session ended
// or a fenced write was refused) before the prefix showed it.
func (t *Tracker) Lost(key string, now time.Time, reason string) []Event {
	if t.leader == nil || t.leader.Key != key {
		return nil
	}
	ev := Event{Kind: KindLost, Token: t.token, Reason: reason, At: now}
	t.expired = true // its key's deletion is not reported again
	return []Event{ev}
}

// Renewed reports the leader's lease renewed until expires.
func (t *Tracker) Renewed(key string, expires, now time.Time) []Event {
	if t.leader == nil || t.leader.Key != key || !expires.After(t.token.ExpiresAt) {
		return nil
	}
	t.token.ExpiresAt = expires
	t.expired = false
	return []Event{{Kind: KindRenewed, Token: t.token, Reason: "lease renewed", At: now}}
}

// Tick reports an EXPIRED event once the leader's token runs out without a renewal: the
// leader may be paused or partitioned from etcd (its key goes when etcd expires the lease).
func (t *Tracker) Tick(now time.Time) []Event {
	if t.leader == nil || t.expired || now.Before(t.token.ExpiresAt) {
		return nil
	}
	t.expired = true
	return []Event{{Kind: KindExpired, Token: t.token, Reason: "no renewal seen before the token's expiry", At: now}}
}

func (t *Tracker) elect(now time.Time) []Event {
	var best *Candidate
	for _, c := range t.cands {
		if best == nil || c.Rev < best.Rev {
			best = &c
		}
	}
	if best == nil || (t.leader != nil && t.leader.Key == best.Key) {
		return nil
	}
	var out []Event
	if t.leader != nil && !t.expired { // a lower revision appeared: cannot happen in etcd, reported anyway
		out = append(out, Event{Kind: KindLost, Token: t.token, Reason: "superseded", At: now})
	}
	t.leader, t.expired = best, false
	t.token = Token{Scope: t.scope, LeaderID: best.Info.ID, Admin: best.Info.Admin, Term: best.Rev, IssuedAt: now, ExpiresAt: now.Add(t.ttl)}
	return append(out, Event{Kind: KindElected, Token: t.token, Reason: "elected", At: now})
}

// Leader returns the current token, if any.
func (t *Tracker) Leader() (Token, bool) {
	if t.leader == nil {
		return Token{}, false
	}
	return t.token, true
}

// Followers are the candidates that do not lead, in revision order.
func (t *Tracker) Followers() []Info {
	var cs []Candidate
	for _, c := range t.cands {
		if t.leader == nil || c.Key != t.leader.Key {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b Candidate) int { return int(a.Rev - b.Rev) })
	out := make([]Info, len(cs))
	for i, c := range cs {
		out[i] = c.Info
	}
	return out
}

// Snapshot is the events a new subscriber gets first: one per current token.
func (t *Tracker) Snapshot(now time.Time) []Event {
	if t.leader == nil {
		return nil
	}
	return []Event{{Kind: KindSnapshot, Token: t.token, Reason: "snapshot", At: now}}
}

// String describes the current leadership, for logs.
func (t *Tracker) String() string {
	if t.leader == nil {
		return t.scope + ": no leader"
	}
	var f []string
	for _, in := range t.Followers() {
		f = append(f, in.ID)
	}
	return fmt.Sprintf("%s: leader %s term %d, followers %s", t.scope, t.token.LeaderID, t.token.Term, strings.Join(f, ","))
}
