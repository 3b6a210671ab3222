// Package p2p builds libp2p hosts and the per-domain gossipsub topics, validators and sync
// protocol that agents and seeds share (docs/architecture.md).
package p2p
