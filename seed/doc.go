// Package seed is MeshKit's thin centre for one control domain: it holds the declared
// resources, validates them, compiles them into signed, epoch-stamped bundles and deltas,
// and publishes them (docs/architecture.md).
//
// seed never imports node or bridge.
package seed
