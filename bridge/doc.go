// Package bridge relays filtered state between control domains: it verifies bundles with
// the source domain's root, keeps what the export allowlist permits, and re-signs them
// with a key the destination root delegates to the bridge for a namespace
// (docs/architecture.md).
//
// bridge never imports node or seed.
package bridge
