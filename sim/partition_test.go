package sim

import (
	"context"
	"testing"
)

// TestPartitionCrossingsAreCounted: the simulator must notice when its own network lets
// data across a partition. A partition that leaves three of its cut links in place lets
// the seed's versions reach the cut-off side, and the result must say so; the same run
// with the cut whole must count none.
func TestPartitionCrossingsAreCounted(t *testing.T) {
	if testing.Short() {
		t.Skip("two 12 s simulations")
	}
	sc, err := ParseScenario("leaky.yaml", []byte(`
name: leaky-partition
seed: 11
agents: 20
duration: 9s
warmup: 3s
bundle_bytes: 1024
link: {latency: 20ms}
degree: 6
events:
  - {at: 1s, partition: 0.5}
  - {at: 2s, publish: 3, every: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	leaky, err := Run(context.Background(), sc, Options{leaveLinked: 3})
	if err != nil {
		t.Fatal(err)
	}
	if leaky.CrossedPartition == 0 {
		t.Errorf("three cut links left in place, yet no agent reached across the cut (delivered %.2f)", leaky.DeliveredRatio)
	}
	whole, err := Run(context.Background(), sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if whole.CrossedPartition != 0 {
		t.Errorf("%d agents reached across a whole cut", whole.CrossedPartition)
	}
	// Half the agents were cut off for every publish: about half the deliveries.
	if whole.DeliveredRatio > 0.6 || leaky.DeliveredRatio <= whole.DeliveredRatio {
		t.Errorf("delivered: whole cut %.2f, leaky cut %.2f", whole.DeliveredRatio, leaky.DeliveredRatio)
	}
	t.Logf("leaky: %d agents reached across, delivered %.2f; whole: %d, delivered %.2f",
		leaky.CrossedPartition, leaky.DeliveredRatio, whole.CrossedPartition, whole.DeliveredRatio)
}
