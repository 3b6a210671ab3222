// Package node is the MeshKit agent that runs on every host: it receives signed bundles
// from peers over gossipsub, verifies them with package trust before using or relaying
// them, keeps a crash-safe last-known-good copy, and serves the local OmniRelay over the
// omnirelay.control and omnirelay.ca gRPC contracts (docs/architecture.md).
//
// node never imports seed or bridge.
package node
