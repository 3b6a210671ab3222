// Package wasm admits Wasm extensions with wazero before OmniRelay sees them: compile,
// check imports and exports against the declared ABI, cap memory, and run the start
// function under a deadline (docs/architecture.md).
//
// wasm imports nothing of MeshKit's but proto.
package wasm
