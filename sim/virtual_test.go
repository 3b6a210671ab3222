package sim_test

import (
	"encoding/json"
	"flag"
	"os"
	"testing"

	"meshkit.dev/meshkit/sim"
)

var scenarioFlag = flag.String("scenario", "", "scenario file for TestVirtualScenario")

// TestVirtualScenario runs -scenario FILE in virtual time and prints the result as JSON:
//
//	go test ./sim -run TestVirtualScenario -scenario sim/scenarios/steady.yaml -v
func TestVirtualScenario(t *testing.T) {
	if *scenarioFlag == "" {
		t.Skip("give -scenario FILE")
	}
	sc, err := sim.LoadScenario(*scenarioFlag)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.RunVirtual(t, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res)
}

// TestVirtualSmall: 100 agents in virtual time deliver every publish, in about the
// protocol's hops × link latency plus the modelled CPU cost, independent of machine load.
func TestVirtualSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("a virtual-time simulation")
	}
	sc, err := sim.ParseScenario("virtual-small", []byte(`
name: virtual-small
agents: 100
duration: 20s
link: {latency: 20ms}
events:
  - {at: 1s, publish: 5, every: 2s}
  - {at: 12s, partition: 0.5}
  - {at: 13s, publish: 1}
  - {at: 15s, heal: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.RunVirtual(t, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("virtual: delivered %.3f p50 %.0f ms p99 %.0f ms converge %.0f ms, wall %.1f s", res.DeliveredRatio, res.P50Ms, res.P99Ms, res.ConvergeMs, res.WallSeconds)
	if res.DeliveredRatio != 1 || res.Regressions != 0 || res.ConvergeMs < 0 {
		t.Fatalf("delivered %.3f, regressions %d, converge %.0f ms", res.DeliveredRatio, res.Regressions, res.ConvergeMs)
	}
	if res.CrossedPartition != 0 {
		t.Fatalf("%d cut-off agents got the version published during the partition before the heal", res.CrossedPartition)
	}
	// Before the partition every publish reaches everyone within a few hops.
	if p := res.PerPublish[0]; p.MaxMs <= 0 {
		t.Fatalf("first publish: %+v", p)
	}
}

// TestVirtualLossy: with jitter and loss on every link, every publish still reaches every
// agent and none goes backwards (a late write delays, it never reorders a stream).
func TestVirtualLossy(t *testing.T) {
	if testing.Short() {
		t.Skip("a virtual-time simulation")
	}
	sc, err := sim.ParseScenario("virtual-lossy", []byte(`
name: virtual-lossy
agents: 60
duration: 12s
link: {latency: 20ms, jitter: 10ms, loss: 0.05}
events:
  - {at: 1s, publish: 5, every: 2s}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.RunVirtual(t, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lossy: delivered %.3f p50 %.0f ms p99 %.0f ms max %.0f ms", res.DeliveredRatio, res.P50Ms, res.P99Ms, res.MaxMs)
	if res.Publishes != 5 || res.DeliveredRatio != 1 || res.Regressions != 0 {
		t.Fatalf("publishes %d delivered %.3f regressions %d", res.Publishes, res.DeliveredRatio, res.Regressions)
	}
}

// TestVirtualTrust: revocations, root rotations (each a new seed key overlapping the one
// before) and a CA rotation reach every agent, the agents end on the newest root, and
// bundles published meanwhile, signed by the rotated keys, reach every agent too.
func TestVirtualTrust(t *testing.T) {
	if testing.Short() {
		t.Skip("a virtual-time simulation")
	}
	sc, err := sim.ParseScenario("virtual-trust", []byte(`
name: virtual-trust
agents: 60
duration: 16s
link: {latency: 20ms}
events:
  - {at: 1s, publish: 6, every: 2s}
  - {at: 2s, revoke: 2}
  - {at: 3s, rotate_root: true}
  - {at: 5s, rotate_root: true}
  - {at: 7s, rotate_ca: prepare}
  - {at: 12s, rotate_root: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.RunVirtual(t, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Trust
	if tr == nil {
		t.Fatal("no control message was tracked")
	}
	t.Logf("trust: %d messages, delivered %.3f, p50 %.0f ms p99 %.0f ms; root v%d on %d agents; bundles delivered %.3f, rejected %v",
		tr.Messages, tr.DeliveredRatio, tr.P50Ms, tr.P99Ms, tr.RootVersion, tr.AgentsOnRoot, res.DeliveredRatio, res.Rejected)
	// Two revocations, three rotations, the CA's prepare and the seed's own activation.
	if tr.Messages < 7 || tr.DeliveredRatio != 1 {
		t.Fatalf("%d control messages, delivered %.3f", tr.Messages, tr.DeliveredRatio)
	}
	if tr.RootVersion != 4 || tr.AgentsOnRoot != sc.Agents {
		t.Fatalf("root v%d held by %d of %d agents", tr.RootVersion, tr.AgentsOnRoot, sc.Agents)
	}
	if res.DeliveredRatio != 1 || res.Regressions != 0 {
		t.Fatalf("bundles through the rotations: delivered %.3f, regressions %d", res.DeliveredRatio, res.Regressions)
	}
	// A rotation that removes a seed key resets the marks, but the held bundle, signed by
	// the old key and the new one during the overlap, stays the base of the next delta.
	if n := res.Rejected["base_mismatch"]; n != 0 {
		t.Fatalf("%d deltas found no base after a rotation", n)
	}
}

// TestVirtualCertificatesExpireAndRecover: 30 enrolled agents in a closed mesh with
// 1-minute leaves. The seed (the CA) is down for two minutes, so every agent's
// certificate expires and they fall out of each other's mesh; once the seed is back they
// reconnect to it, renew, and the next publish reaches every one of them.
func TestVirtualCertificatesExpireAndRecover(t *testing.T) {
	if testing.Short() {
		t.Skip("a virtual-time simulation")
	}
	sc, err := sim.ParseScenario("virtual-expire", []byte(`
name: virtual-expire
agents: 30
duration: 240s
link: {latency: 20ms}
identity: true
leaf_lifetime: 1m
events:
  - {at: 5s, publish: 1}
  - {at: 20s, kill_seed: true}
  - {at: 140s, restart_seed: true}
  - {at: 220s, publish: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.RunVirtual(t, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Identity
	if id == nil {
		t.Fatal("no certificates sampled")
	}
	t.Logf("certified: lowest %.2f, mean %.2f, at the end %.2f; delivered %.3f; per publish %+v", id.CertifiedMin, id.CertifiedAvg, id.CertifiedEnd, res.DeliveredRatio, res.PerPublish)
	if id.CertifiedMin != 0 {
		t.Fatalf("the outage outlasted every leaf, yet at least %.2f of the agents always held a valid one", id.CertifiedMin)
	}
	if id.CertifiedEnd != 1 || res.DeliveredRatio != 1 {
		t.Fatalf("after the seed came back: %.2f certified, %.3f delivered", id.CertifiedEnd, res.DeliveredRatio)
	}
}

// TestVirtualRestartedSeedReachesItsAgents: a seed restarted after a long outage dials
// the peers it was connected to (its peers file), so the change applied a second after
// it is back reaches its three agents at once, rather than when one of them happens to
// redial it (their backoff had reached 30 s: 9 to 20 s in virtual time without the file).
func TestVirtualRestartedSeedReachesItsAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("a virtual-time simulation")
	}
	sc, err := sim.ParseScenario("virtual-restart", []byte(`
name: virtual-restart
agents: 3
duration: 110s
link: {latency: 20ms}
events:
  - {at: 5s, publish: 1}
  - {at: 10s, kill_seed: true}
  - {at: 100s, restart_seed: true}
  - {at: 101s, publish: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.RunVirtual(t, sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	after := res.PerPublish[len(res.PerPublish)-1]
	t.Logf("the publish after the restart: %+v", after)
	if after.MaxMs < 0 || after.MaxMs > 1000 {
		t.Fatalf("the publish a second after the seed's restart reached every agent in %.0f ms (-1: not all)", after.MaxMs)
	}
}
