package node

import (
	"crypto/x509"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRenewalWaveStaysBelowTwiceTheSteadyRate simulates 10,000 agents enrolled in the
// same minute, each renewing its 12 h leaf at renewAt with its own random draw, over two
// days: the busiest hour of renewals stays below twice the steady hourly rate.
func TestRenewalWaveStaysBelowTwiceTheSteadyRate(t *testing.T) {
	const agents, life = 10_000, 12 * time.Hour
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	perHour := map[int]int{}
	total := 0
	for range agents {
		issued := start.Add(time.Duration(rng.Int64N(int64(time.Minute))))
		for {
			leaf := &x509.Certificate{NotBefore: issued, NotAfter: issued.Add(life)}
			next := renewAt(leaf, rng.Float64())
			if next.Sub(start) > 48*time.Hour {
				break
			}
			perHour[int(next.Sub(start)/time.Hour)]++
			total++
			issued = next
		}
	}
	steady := float64(agents) / (life / 2).Hours() // every agent renews once per half life
	peak := 0
	for _, n := range perHour {
		peak = max(peak, n)
	}
	if ratio := float64(peak) / steady; ratio >= 2 {
		t.Fatalf("the busiest hour has %d renewals, %.2f × the steady %.0f/h", peak, ratio, steady)
	} else {
		t.Logf("%d renewals in 48 h; busiest hour %d, %.2f × the steady rate", total, peak, ratio)
	}
	// Without jitter every agent would renew in the same hour.
	if one := renewAt(&x509.Certificate{NotBefore: start, NotAfter: start.Add(life)}, 0.5); one != start.Add(life/2) {
		t.Fatalf("the middle draw renews at %s", one)
	}
}

func TestRenewAtBounds(t *testing.T) {
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: start, NotAfter: start.Add(10 * time.Hour)}
	for _, tc := range []struct {
		u    float64
		want time.Duration
	}{{0, 3*time.Hour + 30*time.Minute}, {0.5, 5 * time.Hour}, {1, 6*time.Hour + 30*time.Minute}} {
		if got := renewAt(leaf, tc.u).Sub(start); got != tc.want {
			t.Errorf("renewAt(u=%v) = +%s, want +%s", tc.u, got, tc.want)
		}
	}
}
