package seed

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
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

// ErrDiverged is wrapped by a Commit refused because the store no longer holds what this
// seed believes it does: another writer extended the audit log, or (on etcd) this seed's
// leadership ended. Nothing was written; the seed's memory is stale, and only loading the
// store again (a new term) can continue. Config.OnDiverged hears of it.
var ErrDiverged = errors.New("the store moved on without this seed")

// divergence calls fn when a Commit fails with ErrDiverged.
type divergence struct {
	Store
	fn func(error)
}

func (d divergence) Commit(ctx context.Context, tx *Tx) error {
	err := d.Store.Commit(ctx, tx)
	if err != nil && errors.Is(err, ErrDiverged) {
		d.fn(err)
	}
	return err
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

// Stored is what a store holds of one variant: the newest snapshot it was given with its
// delta, and the deltas given after it, which turn that snapshot into the newest version.
type Stored struct {
	Snapshot []byte   // signed bundle envelope
	Delta    []byte   // the delta envelope stored with Snapshot (into its version), or nil
	Chain    [][]byte // signed delta envelopes after Snapshot, oldest first
}

// Loaded is the state read at start.
type Loaded struct {
	Meta      Meta
	Resources []*adminv1.Resource
	AuditHead *adminv1.AuditEntry // nil when the log is empty
	History   []*adminv1.Publication
	Latest    map[string]Stored // by variant key
	// Identity holds the join tokens and enrolments (issued certificates stay on disk).
	Identity []*adminv1.IdentityRecord
}

// Tx is one atomic change. Every Tx carries its audit entry, so no change is ever stored
// without its record.
type Tx struct {
	Puts    []*adminv1.Resource
	Deletes []bundle.Key
	Audit   *adminv1.AuditEntry
	// For a publish: the new publication, each variant's envelopes, the new meta. A
	// variant given without a Snapshot is stored as its Delta appended to the variant's
	// chain (the store refuses it when it holds no snapshot of that variant): a one-route
	// change writes a few hundred bytes, not the whole bundle. A variant given with one
	// restarts its chain. Variants not given are dropped.
	Publication *adminv1.Publication
	// Identity records to store (put, replacing any with the same key).
	Identity []*adminv1.IdentityRecord
	Latest   map[string]Published
	Meta     *Meta
}

// IdentityKey is the key a store keeps an identity record under: one per join token,
// enrolment, issued certificate, root version (zero-padded, so they load oldest first)
// and revocation, and one each for the control stream's and the CA's state. A store
// loads every record but the issued certificates ("c/…").
func IdentityKey(r *adminv1.IdentityRecord) (string, error) {
	switch r := r.GetRecord().(type) {
	case *adminv1.IdentityRecord_JoinToken:
		return "t/" + r.JoinToken.GetSha256(), nil
	case *adminv1.IdentityRecord_Enrolment:
		return "e/" + r.Enrolment.GetNode(), nil
	case *adminv1.IdentityRecord_Issued:
		return "c/" + r.Issued.GetSerial(), nil
	case *adminv1.IdentityRecord_Root:
		env, m := &trustv1.Envelope{}, &trustv1.DomainRoot{}
		if err := proto.Unmarshal(r.Root, env); err != nil {
			return "", fmt.Errorf("identity root: %w", err)
		}
		if err := proto.Unmarshal(env.GetPayload(), m); err != nil {
			return "", fmt.Errorf("identity root: %w", err)
		}
		return fmt.Sprintf("r/%020d", m.GetVersion()), nil
	case *adminv1.IdentityRecord_Revocation:
		rv := r.Revocation
		return "v/" + rv.GetSerial() + "|" + rv.GetPeerId() + "|" + rv.GetNode(), nil
	case *adminv1.IdentityRecord_Control:
		return "m/control", nil
	case *adminv1.IdentityRecord_Ca:
		return "m/ca", nil
	}
	return "", errors.New("identity record of no known kind")
}
