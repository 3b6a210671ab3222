package sim_test

import (
	"context"
	"testing"

	"meshkit.dev/meshkit/sim"
)

// TestCIScenario runs sim/scenarios/ci.yaml: every agent must end up holding every
// version (delivery 100 % after the heal), none may ever go backwards, and the forged
// messages must all be refused. Timings are reported, not asserted.
func TestCIScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("a 25 s simulation")
	}
	sc, err := sim.LoadScenario("scenarios/ci.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.Run(context.Background(), sc, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("publishes %d delivered %.3f p50 %.0f ms p99 %.0f ms converge %.0f ms seed egress/publish %.0f B (bundle %d B) rejected %v",
		res.Publishes, res.DeliveredRatio, res.P50Ms, res.P99Ms, res.ConvergeMs, res.SeedEgressPerPublish, res.BundleBytes, res.Rejected)
	// The seed's share of the process's CPU is measured from a profile of the window.
	if res.ServerCPUSeconds <= 0 || res.ServerCPUSeconds >= res.CPUSeconds {
		t.Errorf("seed CPU %.3f s of %.3f s in all", res.ServerCPUSeconds, res.CPUSeconds)
	}
	if res.Publishes != 7 {
		t.Errorf("%d publishes, want 7", res.Publishes)
	}
	if res.DeliveredRatio != 1 {
		t.Errorf("delivered ratio %.3f, want 1", res.DeliveredRatio)
	}
	if res.Regressions != 0 {
		t.Errorf("%d agents saw a version go backwards", res.Regressions)
	}
	if res.ConvergeMs < 0 {
		t.Error("the agents did not converge after the heal")
	}
	if res.Rejected["unknown_key"] == 0 {
		t.Errorf("no forged message was refused: %v", res.Rejected)
	}
}
