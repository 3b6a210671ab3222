// Package content stores and fetches content-addressed artifacts (CIDv1, sha2-256), such
// as Wasm extensions, verifying every byte against its digest (docs/architecture.md).
package content
