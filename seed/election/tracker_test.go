package election

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestTrackerSequences steps a tracker through message sequences and checks the events
// each step makes ("KIND leader term" joined by ", ") and who leads after it.
func TestTrackerSequences(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	cand := func(key string, rev int64, id string, resigning bool) Candidate {
		return Candidate{Key: key, Rev: rev, Info: Info{ID: id, Admin: id + ":17400", Resigning: resigning}}
	}
	type step struct {
		do     func(tr *Tracker, now time.Time) []Event
		at     time.Duration
		events string
		leader string // "id term" or ""
	}
	put := func(key string, rev int64, id string) func(*Tracker, time.Time) []Event {
		return func(tr *Tracker, now time.Time) []Event { return tr.Put(cand(key, rev, id, false), now) }
	}
	resign := func(key string, rev int64, id string) func(*Tracker, time.Time) []Event {
		return func(tr *Tracker, now time.Time) []Event { return tr.Put(cand(key, rev, id, true), now) }
	}
	del := func(key string) func(*Tracker, time.Time) []Event {
		return func(tr *Tracker, now time.Time) []Event { return tr.Delete(key, now) }
	}
	tick := func(tr *Tracker, now time.Time) []Event { return tr.Tick(now) }
	renew := func(key string, until time.Duration) func(*Tracker, time.Time) []Event {
		return func(tr *Tracker, now time.Time) []Event { return tr.Renewed(key, t0.Add(until), now) }
	}
	lost := func(key string) func(*Tracker, time.Time) []Event {
		return func(tr *Tracker, now time.Time) []Event { return tr.Lost(key, now, "session ended") }
	}
	cases := map[string][]step{
		"the lowest revision leads; a later candidate follows": {
			{do: put("k/b", 12, "b"), events: "ELECTED b 12", leader: "b 12"},
			{do: put("k/c", 15, "c"), events: "", leader: "b 12"},
		},
		"a resigning leader steps down and the next candidate is elected": {
			{do: put("k/a", 10, "a"), events: "ELECTED a 10", leader: "a 10"},
			{do: put("k/b", 11, "b"), events: "", leader: "a 10"},
			{do: resign("k/a", 10, "a"), events: "", leader: "a 10"},
			{do: del("k/a"), at: time.Second, events: "STEPPED_DOWN a 10, ELECTED b 11", leader: "b 11"},
		},
		"a killed leader's lease expires: EXPIRED on the clock, not again when its key goes": {
			{do: put("k/a", 10, "a"), events: "ELECTED a 10", leader: "a 10"},
			{do: put("k/b", 11, "b"), events: "", leader: "a 10"},
			{do: renew("k/a", 11*time.Second), at: 3 * time.Second, events: "RENEWED a 10", leader: "a 10"},
			{do: tick, at: 10 * time.Second, events: "", leader: "a 10"},
			{do: tick, at: 11 * time.Second, events: "EXPIRED a 10", leader: "a 10"},
			{do: tick, at: 12 * time.Second, events: "", leader: "a 10"},
			{do: del("k/a"), at: 12 * time.Second, events: "ELECTED b 11", leader: "b 11"},
		},
		"a paused leader renewed late is live again": {
			{do: put("k/a", 10, "a"), events: "ELECTED a 10", leader: "a 10"},
			{do: tick, at: 9 * time.Second, events: "EXPIRED a 10", leader: "a 10"},
			{do: renew("k/a", 17*time.Second), at: 9 * time.Second, events: "RENEWED a 10", leader: "a 10"},
			{do: del("k/a"), at: 10 * time.Second, events: "EXPIRED a 10", leader: ""},
		},
		"the leader that learns it lost reports LOST once": {
			{do: put("k/a", 10, "a"), events: "ELECTED a 10", leader: "a 10"},
			{do: lost("k/a"), events: "LOST a 10", leader: "a 10"},
			{do: del("k/a"), events: "", leader: ""},
			{do: put("k/a2", 20, "a"), events: "ELECTED a 20", leader: "a 20"},
		},
		"a stale renewal and an unknown key change nothing": {
			{do: put("k/a", 10, "a"), events: "ELECTED a 10", leader: "a 10"},
			{do: renew("k/a", 5*time.Second), events: "", leader: "a 10"},
			{do: renew("k/x", 50*time.Second), events: "", leader: "a 10"},
			{do: del("k/x"), events: "", leader: "a 10"},
			{do: lost("k/x"), events: "", leader: "a 10"},
		},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			tr := NewTracker("prod", 8*time.Second)
			for i, s := range steps {
				var got []string
				for _, ev := range s.do(tr, t0.Add(s.at)) {
					got = append(got, fmt.Sprintf("%s %s %d", ev.Kind, ev.Token.LeaderID, ev.Token.Term))
					if ev.Token.Scope != "prod" || ev.At != t0.Add(s.at) {
						t.Errorf("step %d: event %+v", i, ev)
					}
				}
				if strings.Join(got, ", ") != s.events {
					t.Errorf("step %d: events %q, want %q", i, strings.Join(got, ", "), s.events)
				}
				leader := ""
				if tok, ok := tr.Leader(); ok {
					leader = fmt.Sprintf("%s %d", tok.LeaderID, tok.Term)
				}
				if leader != s.leader {
					t.Errorf("step %d: leader %q, want %q", i, leader, s.leader)
				}
			}
		})
	}
}

func TestFollowersAndSnapshot(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tr := NewTracker("prod", 8*time.Second)
	if tr.Snapshot(now) != nil {
		t.Fatal("a snapshot without a leader")
	}
	for i, id := range []string{"c", "a", "b"} {
		tr.Put(Candidate{Key: "k/" + id, Rev: int64(30 - i), Info: Info{ID: id}}, now)
	}
	var ids []string
	for _, f := range tr.Followers() {
		ids = append(ids, f.ID)
	}
	if strings.Join(ids, ",") != "a,c" {
		t.Fatalf("followers %v, want a,c (b leads at revision 28)", ids)
	}
	snap := tr.Snapshot(now)
	if len(snap) != 1 || snap[0].Kind != KindSnapshot || snap[0].Reason != "snapshot" || snap[0].Token.LeaderID != "b" || !snap[0].Token.ExpiresAt.Equal(now.Add(8*time.Second)) {
		t.Fatalf("snapshot = %+v", snap)
	}
}

func TestDecodeInfoBounded(t *testing.T) {
	if _, err := DecodeInfo([]byte(`{"id":"` + strings.Repeat("x", MaxInfoBytes) + `"}`)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized value: %v", err)
	}
	if _, err := DecodeInfo([]byte(`{"id":`)); err == nil {
		t.Fatal("truncated value decoded")
	}
	in, err := DecodeInfo([]byte(`{"id":"seed-1","admin":"10.0.0.1:17400","resigning":true}`))
	if err != nil || in.ID != "seed-1" || in.Admin != "10.0.0.1:17400" || !in.Resigning {
		t.Fatalf("decoded %+v, %v", in, err)
	}
}
