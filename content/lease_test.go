package content

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestLeaseTable steps a one-slot lease table through message sequences: each step is a
// request from a peer at a time (ms since start) with the bytes it was then sent, and
// whether it was served.
func TestLeaseTable(t *testing.T) {
	type step struct {
		at     int // ms
		peer   string
		bytes  int64 // sent to it when served
		served bool
	}
	const chunk = 256 << 10
	// every is a peer asking every ms milliseconds from start to end inclusive.
	every := func(ms, start, end int, p string, bytes int64, served bool) []step {
		var out []step
		for at := start; at <= end; at += ms {
			out = append(out, step{at, p, bytes, served})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"an honest peer keeps its slot while it fetches; others wait", []step{
			{0, "a", chunk, true}, {100, "b", chunk, false}, {500, "a", chunk, true}, {2500, "a", chunk, true}, {2600, "b", chunk, false},
		}},
		{"a finished peer's slot frees after a second of silence, with no cooldown", []step{
			{0, "a", chunk, true}, {900, "b", chunk, false}, {2001, "b", chunk, true}, {2100, "a", chunk, false}, {3200, "a", chunk, true},
		}},
		{"a peer asking a byte at a time loses its slot after the grace, and waits out a cooldown", []step{
			{0, "hog", 1, true}, {300, "hog", 1, true}, {600, "honest", chunk, false}, {900, "hog", 1, true}, {1800, "hog", 1, true},
			{2100, "hog", 1, false}, {2100, "honest", chunk, true}, {2400, "hog", 1, false}, {11000, "honest", chunk, true},
			{12200, "hog", 1, true},
		}},
		{"no lease outlives its maximum age, however fast", append(every(500, 0, 30000, "a", chunk, true),
			step{30500, "b", chunk, true}, step{30600, "a", chunk, false}, step{40000, "a", chunk, false}, step{40600, "a", chunk, true},
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lt := newLeaseTable(1)
			t0 := time.Unix(1_000_000, 0)
			for i, s := range tc.steps {
				p := peer.ID(s.peer)
				got := lt.acquire(p, t0.Add(time.Duration(s.at)*time.Millisecond))
				if got != s.served {
					t.Fatalf("step %d (%s at %d ms): served %v, want %v; leases %s", i, s.peer, s.at, got, s.served, describe(lt))
				}
				if got {
					lt.served(p, s.bytes)
				}
			}
		})
	}
}

func describe(lt leaseTable) string {
	out := ""
	for p, l := range lt.leases {
		out += fmt.Sprintf("%s:%dB ", p, l.bytes)
	}
	for p := range lt.cooldown {
		out += fmt.Sprintf("cooling:%s ", p)
	}
	return out
}

func TestUnlimitedLeaseTable(t *testing.T) {
	lt := newLeaseTable(0)
	for i := range 100 {
		if !lt.acquire(peer.ID(fmt.Sprint(i)), time.Unix(0, 0)) {
			t.Fatal("an unlimited table refused a peer")
		}
	}
}
