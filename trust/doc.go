// Package trust is MeshKit's root of trust: Ed25519 keys and key files, signed envelopes
// with threshold counting, TUF-style domain roots with rotation, and the Verifier that
// decides whether a bundle or delta may be used.
//
// An agent only ever uses configuration that the right keys signed, for its own domain,
// newer than what it already holds, and not expired. Every refusal is a *VerifyError that
// wraps one of the Err… sentinels below, so callers branch with errors.Is and metrics use
// Reason.
//
// Package trust imports nothing of MeshKit's but the generated schemas in proto/.
package trust
