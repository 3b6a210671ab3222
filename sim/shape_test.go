package sim

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestShapeDrawsJitterAndLoss: every draw puts each live link's latency in base ± jitter,
// plus one RTO on about loss of them; links cut by a partition are left alone.
func TestShapeDrawsJitterAndLoss(t *testing.T) {
	sc, err := ParseScenario("s.yaml", []byte(`
name: shaped
agents: 40
duration: 5s
degree: 6
link: {latency: 20ms, jitter: 5ms, loss: 0.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWorld(sc, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.mn.Close()
	for i := range w.slots {
		if _, err := w.up(i); err != nil {
			t.Fatal(err)
		}
	}
	side := map[int]bool{0: true}
	for i := 1; i <= 20; i++ {
		side[i] = true
	}
	w.partition(context.Background(), side, 0)
	rto := sc.Link.rto(20 * time.Millisecond)
	if rto != 200*time.Millisecond {
		t.Fatalf("default rto %s, want 200ms (Linux's minimum)", rto)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var draws, lossy int
	seen := map[time.Duration]bool{}
	for range 200 {
		w.reshape(rng)
		for p, ll := range w.live {
			if w.cut[p] {
				t.Fatalf("cut link %v is still live", p)
			}
			lat := ll.l.Options().Latency
			if lat >= rto {
				lat -= rto
				lossy++
			}
			if lat < 15*time.Millisecond || lat > 25*time.Millisecond {
				t.Fatalf("link %v latency %s outside 20ms ± 5ms (+ rto)", p, ll.l.Options().Latency)
			}
			seen[lat.Round(time.Millisecond)] = true
			draws++
		}
	}
	if draws == 0 || len(seen) < 11 {
		t.Fatalf("%d draws over %d distinct latencies; want the whole 15–25 ms range", draws, len(seen))
	}
	if got := float64(lossy) / float64(draws); got < 0.08 || got > 0.12 {
		t.Fatalf("%.3f of draws lossy, want about 0.1", got)
	}
}

// The fields are spelled in YAML as docs/sim.md says.
func TestLinkYAML(t *testing.T) {
	var l Link
	if err := yaml.Unmarshal([]byte("{latency: 20ms, jitter: 4ms, loss: 0.01, rto: 300ms, resample: 10ms}"), &l); err != nil {
		t.Fatal(err)
	}
	if l.Jitter.D() != 4*time.Millisecond || l.Loss != 0.01 || l.rto(0) != 300*time.Millisecond || l.resample() != 10*time.Millisecond {
		t.Fatalf("%+v", l)
	}
}
