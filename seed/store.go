package seed

import (
	"context"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
)

// Store is the seed's durable state. Commit is one atomic transaction: after a crash at
// any point, Load returns either everything a Commit wrote or none of it. The embedded
// implementation is seed/boltstore; an etcd one can follow for HA seeds.
type Store interface {
	// Load returns the whole state, as the last successful Commit left it.
	Load(ctx context.Context) (*Loaded, error)
	// Commit applies tx atomically and durably before returning.
	Commit(ctx context.Context, tx *Tx) error
	// Audit returns up to limit entries with seq > afterSeq, in order (limit 0: all).
	Audit(ctx context.Context, afterSeq uint64, limit int) ([]*adminv1.AuditEntry, error)
	// Close releases the store.
	Close() error
}

// Meta is the domain's publish position.
type Meta struct {
	Domain  string
	Epoch   uint64
	Version uint64 // newest published version
}

// Published is the newest signed envelopes of one capability variant.
type Published struct {
	Snapshot []byte // signed bundle envelope
	Delta    []byte // signed delta envelope from the previous version, or nil
}

// Loaded is the state read at start.
type Loaded struct {
	Meta      Meta
	Resources []*adminv1.Resource
	AuditHead *adminv1.AuditEntry // nil when the log is empty
	History   []*adminv1.Publication
	Latest    map[string]Published // by variant key
	// Identity holds the join tokens and enrolments (issued certificates stay on disk).
	Identity []*adminv1.IdentityRecord
}

// Tx is one atomic change. Every Tx carries its audit entry, so no change is ever stored
// without its record.
type Tx struct {
	Puts    []*adminv1.Resource
	Deletes []bundle.Key
	Audit   *adminv1.AuditEntry
	// For a publish: the new publication, the envelopes that replace Latest, the new meta.
	Publication *adminv1.Publication
	// Identity records to store (put, replacing any with the same key).
	Identity []*adminv1.IdentityRecord
	Latest   map[string]Published
	Meta     *Meta
}
