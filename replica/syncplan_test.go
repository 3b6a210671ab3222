package replica

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

func TestPlanSync(t *testing.T) {
	head := func(source string, epoch, version uint64, caps ...string) *syncv1.Head {
		return &syncv1.Head{Source: source, Epoch: epoch, Version: version, RequiredCapabilities: caps}
	}
	keep := func(int, func(i, j int)) {} // no shuffle: ties stay in claim order
	for _, tc := range []struct {
		name   string
		marks  map[string]trust.Mark
		claims []claim
		want   map[string][]string // variant → peers in the order to try
	}{
		{
			name:   "newest first, the liar's huge head before the seed's, the seed kept as fallback",
			claims: []claim{{"seed", head("", 1, 1)}, {"liar", head("", 1, 1_000_000)}, {"agent", head("", 1, 1)}},
			want:   map[string][]string{"": {"liar", "seed", "agent"}},
		},
		{
			name:   "heads not newer than held are dropped",
			marks:  map[string]trust.Mark{"": {Epoch: 1, Version: 5}},
			claims: []claim{{"a", head("", 1, 5)}, {"b", head("", 1, 4)}, {"c", head("", 1, 6)}, {"d", head("", 2, 1)}},
			want:   map[string][]string{"": {"d", "c"}},
		},
		{
			name: "each stream and variant is planned apart",
			claims: []claim{{"a", head("", 1, 2)}, {"b", head("bridge/eu", 9, 9)}, {"c", head("", 1, 3, "core/v1")},
				{"d", head("bridge/eu", 9, 8)}},
			want: map[string][]string{"": {"a"}, "core/v1": {"c"}, "bridge/eu|": {"b", "d"}},
		},
		{
			name:   "nothing newer",
			marks:  map[string]trust.Mark{"": {Epoch: 3, Version: 1}},
			claims: []claim{{"a", head("", 2, 99)}},
			want:   map[string][]string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			variants, plan := planSync(tc.marks, tc.claims, keep)
			got := map[string][]string{}
			for _, v := range variants {
				for _, c := range plan[v] {
					got[v] = append(got[v], string(c.from))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || len(variants) != len(tc.want) || !slices.IsSorted(variants) {
				t.Fatalf("plan %v (variants %v), want %v", got, variants, tc.want)
			}
		})
	}
}

func TestPlanSyncShufflesTiesOnly(t *testing.T) {
	claims := []claim{{"a", &syncv1.Head{Epoch: 1, Version: 2}}, {"b", &syncv1.Head{Epoch: 1, Version: 2}}, {"c", &syncv1.Head{Epoch: 1, Version: 3}}}
	reverse := func(n int, swap func(i, j int)) {
		for i := range n / 2 {
			swap(i, n-1-i)
		}
	}
	_, plan := planSync(nil, claims, reverse)
	var got []string
	for _, c := range plan[""] {
		got = append(got, string(c.from))
	}
	if !slices.Equal(got, []string{"c", "b", "a"}) {
		t.Fatalf("order %v, want the newest first and the tie in shuffled order", got)
	}
}

func TestSyncBansDoubleAndEnd(t *testing.T) {
	var b syncBans
	t0 := time.Unix(1_000_000, 0)
	p := peer.ID("liar")
	if b.banned(p, t0) {
		t.Fatal("banned before any strike")
	}
	steps := []struct {
		at   time.Duration // since t0, when the strike happens
		want time.Duration
	}{{0, banFirst}, {banFirst, 2 * banFirst}, {3 * banFirst, 4 * banFirst}}
	for _, s := range steps {
		now := t0.Add(s.at)
		if d := b.strike(p, now); d != s.want {
			t.Fatalf("strike at %v: banned for %v, want %v", s.at, d, s.want)
		}
		if !b.banned(p, now.Add(s.want-time.Nanosecond)) || b.banned(p, now.Add(s.want)) {
			t.Fatalf("strike at %v: the ban does not last exactly %v", s.at, s.want)
		}
	}
	for range 20 {
		b.strike(p, t0)
	}
	if d := b.strike(p, t0); d != banLongest {
		t.Fatalf("after many strikes: %v, want the cap %v", d, banLongest)
	}
	if got := b.list(t0); !slices.Equal(got, []string{p.String()}) {
		t.Fatalf("list %v", got)
	}
	if got := b.list(t0.Add(banLongest)); len(got) != 0 {
		t.Fatalf("list after the ban ended: %v", got)
	}
}
