// Package sim runs real MeshKit agents, seeds and bridges over simulated networks with
// latency, loss and partitions, and reports propagation percentiles (docs/architecture.md).
//
// Nothing imports sim but cmd.
package sim
