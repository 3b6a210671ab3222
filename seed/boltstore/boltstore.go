// Package boltstore is the embedded, default implementation of seed.Store: one bbolt
// file, every Commit one fsynced transaction, schema versions with migrations at open.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
)

// SchemaVersion is the layout this build writes. Open migrates older files up to it and
// refuses newer ones.
const SchemaVersion = 3

// DefaultHistory is how many publications are kept.
const DefaultHistory = 100

var (
	bucketMeta      = []byte("meta")
	bucketResources = []byte("resources")
	bucketAudit     = []byte("audit")
	bucketHistory   = []byte("history")
	bucketLatest    = []byte("latest")
	// bucketChain holds the delta envelopes stored after each variant's snapshot, keyed
	// "VARIANT\x00VERSION" (version big-endian, so a variant's deltas sort in order).
	bucketChain = []byte("chain")
	// bucketIdentity holds join tokens ("t/HASH"), enrolments ("e/NODE") and issued
	// certificates ("c/SERIAL").
	bucketIdentity = []byte("identity")

	keySchema  = []byte("schema_version")
	keyDomain  = []byte("domain")
	keyEpoch   = []byte("epoch")
	keyVersion = []byte("version")
)

// ErrNewerSchema is returned when the file was written by a newer MeshKit.
var ErrNewerSchema = errors.New("boltstore: data was written by a newer schema")

// migrations[v] upgrades a file at schema v to v+1.
var migrations = []func(tx *bolt.Tx) error{
	// 0 → 1: the initial layout.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketResources, bucketAudit, bucketHistory, bucketLatest} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: identity (join tokens, enrolments, issued certificates).
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketIdentity)
		return err
	},
	// 2 → 3: delta chains (a publish may store its deltas instead of its snapshots).
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketChain)
		return err
	},
}

// Store is a bbolt-backed seed.Store.
type Store struct {
	db      *bolt.DB
	history int
}

var _ seed.Store = (*Store)(nil)

// Open opens (creating if needed) DIR/seed.db, migrating it to SchemaVersion. It waits at
// most lockTimeout for another process holding the file.
func Open(dir string, lockTimeout time.Duration) (*Store, error) {
	db, err := bolt.Open(filepath.Join(dir, "seed.db"), 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w (is another seed using this data directory?)", dir, err)
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, history: DefaultHistory}, nil
}

// SetHistory sets how many publications are kept (minimum 1).
func (s *Store) SetHistory(n int) { s.history = max(n, 1) }

func migrate(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		v := uint64(0)
		if meta := tx.Bucket(bucketMeta); meta != nil {
			if raw := meta.Get(keySchema); raw != nil {
				v = binary.BigEndian.Uint64(raw)
			}
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w: schema %d, this build reads up to %d; upgrade meshkit", ErrNewerSchema, v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("boltstore: migrate schema %d to %d: %w", v, v+1, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion))
	})
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if raw := b.Get(k); len(raw) == 8 {
		return binary.BigEndian.Uint64(raw)
	}
	return 0
}

func resourceKey(k bundle.Key) []byte { return []byte(k.Kind + "/" + k.Namespace + "/" + k.Name) }

// Load reads the whole state.
func (s *Store) Load(ctx context.Context) (*seed.Loaded, error) {
	out := &seed.Loaded{Latest: map[string]seed.Stored{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		out.Meta = seed.Meta{Domain: string(meta.Get(keyDomain)), Epoch: getU64(meta, keyEpoch), Version: getU64(meta, keyVersion)}
		if err := tx.Bucket(bucketResources).ForEach(func(k, v []byte) error {
			r := &adminv1.Resource{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("resource %s: %w", k, err)
			}
			out.Resources = append(out.Resources, r)
			return nil
		}); err != nil {
			return err
		}
		if _, v := tx.Bucket(bucketAudit).Cursor().Last(); v != nil {
			out.AuditHead = &adminv1.AuditEntry{}
			if err := proto.Unmarshal(v, out.AuditHead); err != nil {
				return fmt.Errorf("audit head: %w", err)
			}
		}
		if err := tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			p := &adminv1.Publication{}
			if err := proto.Unmarshal(v, p); err != nil {
				return fmt.Errorf("publication %x: %w", k, err)
			}
			out.History = append(out.History, p)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketIdentity).ForEach(func(k, v []byte) error {
			if len(k) > 0 && k[0] == 'c' {
				return nil // issued certificates are not kept in memory
			}
			r := &adminv1.IdentityRecord{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("identity %q: %w", k, err)
			}
			out.Identity = append(out.Identity, r)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketLatest).ForEach(func(k, v []byte) error {
			if len(v) < 8 {
				return fmt.Errorf("latest %q: truncated", k)
			}
			n := binary.BigEndian.Uint64(v[:8])
			if n > uint64(len(v)-8) {
				return fmt.Errorf("latest %q: truncated", k)
			}
			p := seed.Stored{Snapshot: clone(v[8 : 8+n])}
			if rest := v[8+n:]; len(rest) > 0 {
				p.Delta = clone(rest)
			}
			c := tx.Bucket(bucketChain).Cursor()
			prefix := chainPrefix(string(k))
			for ck, cv := c.Seek(prefix); ck != nil && bytes.HasPrefix(ck, prefix); ck, cv = c.Next() {
				p.Chain = append(p.Chain, clone(cv))
			}
			out.Latest[string(k)] = p
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: load: %w", err)
	}
	return out, ctx.Err()
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// Commit writes tx in one bbolt transaction, which bbolt fsyncs before returning.
func (s *Store) Commit(ctx context.Context, t *seed.Tx) error {
	if t.Audit == nil {
		return errors.New("boltstore: a commit without an audit entry is refused")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		res := tx.Bucket(bucketResources)
		for _, k := range t.Deletes {
			if err := res.Delete(resourceKey(k)); err != nil {
				return err
			}
		}
		for _, r := range t.Puts {
			o, err := seed.ObjectFromResource(r)
			if err != nil {
				return err
			}
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return err
			}
			if err := res.Put(resourceKey(o.Key()), b); err != nil {
				return err
			}
		}
		audit := tx.Bucket(bucketAudit)
		if _, last := audit.Cursor().Last(); last != nil {
			head := &adminv1.AuditEntry{}
			if err := proto.Unmarshal(last, head); err != nil {
				return err
			}
			if t.Audit.GetSeq() != head.GetSeq()+1 || t.Audit.GetPrevHash() != head.GetHash() {
				return fmt.Errorf("audit entry %d does not follow head %d", t.Audit.GetSeq(), head.GetSeq())
			}
		} else if t.Audit.GetSeq() != 1 {
			return fmt.Errorf("first audit entry must be seq 1, got %d", t.Audit.GetSeq())
		}
		ab, err := proto.MarshalOptions{Deterministic: true}.Marshal(t.Audit)
		if err != nil {
			return err
		}
		if err := audit.Put(u64(t.Audit.GetSeq()), ab); err != nil {
			return err
		}
		if err := putIdentity(tx.Bucket(bucketIdentity), t.Identity); err != nil {
			return err
		}
		if t.Publication != nil {
			if err := s.putPublication(tx, t); err != nil {
				return err
			}
		}
		if t.Meta != nil {
			meta := tx.Bucket(bucketMeta)
			for k, v := range map[string][]byte{string(keyDomain): []byte(t.Meta.Domain), string(keyEpoch): u64(t.Meta.Epoch), string(keyVersion): u64(t.Meta.Version)} {
				if err := meta.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: commit: %w", err)
	}
	return nil
}

func putIdentity(b *bolt.Bucket, recs []*adminv1.IdentityRecord) error {
	for _, r := range recs {
		key, err := seed.IdentityKey(r)
		if err != nil {
			return err
		}
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(key), v); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) putPublication(tx *bolt.Tx, t *seed.Tx) error {
	hist := tx.Bucket(bucketHistory)
	pb, err := proto.MarshalOptions{Deterministic: true}.Marshal(t.Publication)
	if err != nil {
		return err
	}
	if err := hist.Put(u64(t.Publication.GetVersion()), pb); err != nil {
		return err
	}
	for hist.Stats().KeyN > s.history {
		k, _ := hist.Cursor().First()
		if k == nil {
			break
		}
		if err := hist.Delete(k); err != nil {
			return err
		}
	}
	latest, chain := tx.Bucket(bucketLatest), tx.Bucket(bucketChain)
	var gone [][]byte
	if err := latest.ForEach(func(k, _ []byte) error {
		if _, ok := t.Latest[string(k)]; !ok {
			gone = append(gone, clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range gone {
		if err := latest.Delete(k); err != nil {
			return err
		}
		if err := dropChain(chain, string(k)); err != nil {
			return err
		}
	}
	for variant, p := range t.Latest {
		if p.Snapshot == nil {
			if latest.Get([]byte(variant)) == nil {
				return fmt.Errorf("variant %q: a delta without a stored snapshot to apply it to", variant)
			}
			if err := chain.Put(append(chainPrefix(variant), u64(t.Publication.GetVersion())...), p.Delta); err != nil {
				return err
			}
			continue
		}
		if err := dropChain(chain, variant); err != nil {
			return err
		}
		v := append(append(u64(uint64(len(p.Snapshot))), p.Snapshot...), p.Delta...)
		if err := latest.Put([]byte(variant), v); err != nil {
			return err
		}
	}
	return nil
}

func chainPrefix(variant string) []byte { return append([]byte(variant), 0) }

// dropChain deletes a variant's stored deltas.
func dropChain(chain *bolt.Bucket, variant string) error {
	prefix := chainPrefix(variant)
	var keys [][]byte
	c := chain.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, clone(k))
	}
	for _, k := range keys {
		if err := chain.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Audit returns entries after afterSeq.
func (s *Store) Audit(ctx context.Context, afterSeq uint64, limit int) ([]*adminv1.AuditEntry, error) {
	var out []*adminv1.AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Seek(u64(afterSeq + 1)); k != nil; k, v = c.Next() {
			if limit > 0 && len(out) >= limit {
				break
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			e := &adminv1.AuditEntry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return fmt.Errorf("audit entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: audit: %w", err)
	}
	return out, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
