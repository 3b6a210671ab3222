package replica

import (
	"maps"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// claim is a head one peer says it holds.
type claim struct {
	from peer.ID
	head *syncv1.Head
}

// planSync orders, for each stream variant, the claimed heads newer than what is held:
// newest first, and peers claiming the same head in the order shuffle leaves them, so
// that after a heal the fetches spread over every peer that has the bundle instead of
// all going to one. Anti-entropy tries them in that order and falls back to the next
// when one fails, so a peer that claims a head it cannot deliver delays an agent by one
// bounded attempt, not a whole round.
func planSync(marks map[string]trust.Mark, claims []claim, shuffle func(n int, swap func(i, j int))) (variants []string, plan map[string][]claim) {
	plan = map[string][]claim{}
	for _, c := range claims {
		v := trust.VariantKey(c.head.GetSource(), c.head.GetRequiredCapabilities())
		if m, have := marks[v]; have && !trust.Newer(c.head.GetEpoch(), c.head.GetVersion(), m.Epoch, m.Version) {
			continue
		}
		plan[v] = append(plan[v], c)
	}
	for v, cs := range plan {
		shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		slices.SortStableFunc(cs, func(x, y claim) int {
			switch {
			case trust.Newer(x.head.GetEpoch(), x.head.GetVersion(), y.head.GetEpoch(), y.head.GetVersion()):
				return -1
			case trust.Newer(y.head.GetEpoch(), y.head.GetVersion(), x.head.GetEpoch(), x.head.GetVersion()):
				return 1
			}
			return 0
		})
		plan[v] = cs
	}
	variants = slices.Sorted(maps.Keys(plan))
	// The control stream first: the root rotations it carries are what the other streams'
	// newer bundles are signed under.
	slices.SortStableFunc(variants, func(a, b string) int { return cmpBool(b == trust.ControlVariant, a == trust.ControlVariant) })
	return variants, plan
}

// Bounds of one fetch attempt during anti-entropy: a base for the round trip, plus the
// claimed size at a slow link's rate, so an honest large bundle has the time it needs and a
// peer that stalls holds the agent up for little more than the base.
const (
	fetchAttemptBase    = 2 * time.Second
	fetchAttemptRate    = 1 << 20 // bytes per second
	fetchAttemptMaximum = 30 * time.Second
)

func fetchAttemptTimeout(size uint64) time.Duration {
	return min(fetchAttemptBase+time.Duration(size)*time.Second/fetchAttemptRate, fetchAttemptMaximum)
}

// syncBans remembers peers whose claimed heads turned out false: they are not asked
// during their ban, which starts at banFirst and doubles with each further false claim up
// to banLongest, and ends by itself. Not safe for concurrent use.
type syncBans struct {
	until   map[peer.ID]time.Time
	strikes map[peer.ID]int
}

const (
	banFirst   = 30 * time.Second
	banLongest = 30 * time.Minute
)

// banned reports whether p is banned at now, forgetting bans that have ended.
func (b *syncBans) banned(p peer.ID, now time.Time) bool {
	u, ok := b.until[p]
	if ok && !now.Before(u) {
		delete(b.until, p)
		return false
	}
	return ok
}

// strike bans p from now, for twice as long as its previous ban, and returns how long.
func (b *syncBans) strike(p peer.ID, now time.Time) time.Duration {
	if b.until == nil {
		b.until, b.strikes = map[peer.ID]time.Time{}, map[peer.ID]int{}
	}
	d := banFirst << min(b.strikes[p], 16)
	d = min(d, banLongest)
	b.strikes[p]++
	b.until[p] = now.Add(d)
	return d
}

// list returns the peers banned at now, sorted.
func (b *syncBans) list(now time.Time) []string {
	var out []string
	for p := range b.until {
		if b.banned(p, now) {
			out = append(out, p.String())
		}
	}
	slices.Sort(out)
	return out
}
