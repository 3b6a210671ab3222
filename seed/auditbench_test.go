package seed_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
)

// BenchmarkStartWith100kAuditEntries measures a seed's start on a store whose audit log
// holds 100,000 entries: the whole log is read and verified link by link before the seed
// serves anything.
func BenchmarkStartWith100kAuditEntries(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	st, err := boltstore.Open(dir, time.Second) // creates the layout
	if err != nil {
		b.Fatal(err)
	}
	st.Close()
	empty := emptyStateHash(b, dir)
	db, err := bolt.Open(dir+"/seed.db", 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		prev := ""
		for i := range n {
			e := &adminv1.AuditEntry{Seq: uint64(i + 1), Actor: "ci", Action: "apply", Subjects: []string{fmt.Sprint("Cluster shop/c-", i)},
				BeforeHash: empty, AfterHash: empty, PrevHash: prev}
			enc, _ := proto.MarshalOptions{Deterministic: true}.Marshal(e)
			sum := sha256.Sum256(enc)
			e.Hash = fmt.Sprintf("sha256:%x", sum[:])
			prev = e.Hash
			v, _ := proto.MarshalOptions{Deterministic: true}.Marshal(e)
			if err := tx.Bucket([]byte("audit")).Put(binary.BigEndian.AppendUint64(nil, e.Seq), v); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		b.Fatal(err)
	}
	_, seedKey := keys(b)
	for b.Loop() {
		st, err := boltstore.Open(dir, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		cfg := seed.DefaultConfig()
		cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store = "prod", 1, seedKey, st
		s, err := seed.New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		st.Close()
	}
}

// emptyStateHash is the state hash of a store holding no resources, as the seed computes it.
func emptyStateHash(b *testing.B, dir string) string {
	st, err := boltstore.Open(dir, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	res, err := seed.VerifyStore(context.Background(), st)
	if err != nil {
		b.Fatal(err)
	}
	return res.GetStateHash()
}
