package seed_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/trust"
)

func TestRestartKeepsStateVersionAndDeltas(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir)
	ts.apply(t, resources(t, "../examples/shop"))
	ts.waitPublished(t, 1)
	before := ts.Status()
	ts.close()

	ts = open(t, dir)
	after := ts.Status()
	if after.GetVersion() != 1 || after.GetStateHash() != before.GetStateHash() || after.GetResources() != 13 || after.GetPending() {
		t.Fatalf("after restart: %v (before %v)", after, before)
	}
	ts.apply(t, resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: extra, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n"))
	pub := ts.waitPublished(t, 2)
	if pub.Info.GetVersion() != 2 || pub.Variants[0].Delta == nil {
		t.Fatalf("after restart published v%d with delta %v", pub.Info.GetVersion(), pub.Variants[0].Delta != nil)
	}
	hist, _ := ts.api.History(adminCtx(), &adminv1.HistoryRequest{})
	if len(hist.GetPublications()) != 2 || hist.GetPublications()[0].GetVersion() != 2 {
		t.Fatalf("history = %v", hist)
	}
}

// TestAuditChainDetectsTampering edits an entry, then the state, behind the seed's back.
func TestAuditChainDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir)
	ts.apply(t, resources(t, "../examples/shop"))
	ts.waitPublished(t, 1)
	ok, err := ts.api.VerifyAudit(adminCtx(), &adminv1.VerifyAuditRequest{})
	if err != nil || ok.GetEntries() != 2 {
		t.Fatalf("verify = %v, %v; want 2 entries (apply, publish)", ok, err)
	}
	entries, _ := ts.api.Audit(adminCtx(), &adminv1.AuditRequest{})
	if a := entries.GetEntries(); a[0].GetAction() != "apply" || a[0].GetActor() != "test-admin" || a[1].GetAction() != "publish" || a[1].GetVersion() != 1 || a[1].GetPrevHash() != a[0].GetHash() {
		t.Fatalf("entries = %v", a)
	}
	ts.close()

	edit := func(bucket, key []byte, f func(v []byte) []byte) {
		db, err := bolt.Open(dir+"/seed.db", 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			return b.Put(key, f(b.Get(key)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Rewrite who made the first change.
	edit([]byte("audit"), []byte{0, 0, 0, 0, 0, 0, 0, 1}, func(v []byte) []byte {
		e := &adminv1.AuditEntry{}
		proto.Unmarshal(v, e)
		e.Actor = "someone-else"
		out, _ := proto.Marshal(e)
		return out
	})
	st, _ := boltstore.Open(dir, time.Second)
	_, err = seed.VerifyStore(context.Background(), st)
	st.Close()
	if !errors.Is(err, seed.ErrAuditChain) || !strings.Contains(err.Error(), "entry 1 was altered") {
		t.Fatalf("tampered entry: err = %v", err)
	}
	// The seed verifies the whole log at start, not only its head: it refuses this store.
	if err := startErr(t, dir); !errors.Is(err, seed.ErrAuditChain) || !strings.Contains(err.Error(), "entry 1 was altered") {
		t.Fatalf("a seed started on a log with an altered older entry: %v", err)
	}
}

// TestAuditLogCutBehindThePublishIsRefused: someone with write access to the store removes
// the newest entries and rolls the state back to match, so that what is left is a valid
// chain consistent with the state. The newest published bundle, signed by the seed,
// checkpointed a later entry: the seed refuses to start and audit verify refuses the
// store. Editing that checkpoint instead breaks the bundle's signature.
func TestAuditLogCutBehindThePublishIsRefused(t *testing.T) {
	cluster := func(name string) []*adminv1.Resource {
		r, err := seed.ResourceFromObject(bundle.Object{Kind: bundle.KindCluster, Metadata: &bundleMeta{Name: name, Namespace: "shop"}, Spec: clusterSpec()})
		if err != nil {
			t.Fatal(err)
		}
		return []*adminv1.Resource{r}
	}
	build := func(t *testing.T) string {
		dir := t.TempDir()
		ts := open(t, dir)
		ts.apply(t, cluster("a")) // entry 1
		ts.waitPublished(t, 1)    // entry 2
		ts.apply(t, cluster("b")) // entry 3
		ts.waitPublished(t, 2)    // entry 4; v2 checkpoints entry 3
		ts.close()
		return dir
	}
	update := func(dir string, f func(tx *bolt.Tx) error) {
		db, err := bolt.Open(dir+"/seed.db", 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(f); err != nil {
			t.Fatal(err)
		}
	}
	cut := func(tx *bolt.Tx) error {
		for _, seq := range []byte{3, 4} {
			if err := tx.Bucket([]byte("audit")).Delete([]byte{0, 0, 0, 0, 0, 0, 0, seq}); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("resources")).Delete([]byte("Cluster/shop/b"))
	}
	start := func(dir string) error {
		st, err := boltstore.Open(dir, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = seed.VerifyStore(context.Background(), st)
		st.Close()
		if !errors.Is(err, seed.ErrAuditChain) {
			t.Errorf("audit verify passed a cut log: %v", err)
		}
		return startErr(t, dir)
	}

	dir := build(t)
	update(dir, cut)
	if err := start(dir); !errors.Is(err, seed.ErrAuditChain) || !strings.Contains(err.Error(), "checkpointed entry 3: entries were removed") {
		t.Fatalf("a seed started on a log cut behind its last publish: %v", err)
	}

	// The same cut, and the checkpoint in the stored bundle lowered to match.
	dir = build(t)
	update(dir, func(tx *bolt.Tx) error {
		if err := cut(tx); err != nil {
			return err
		}
		latest := tx.Bucket([]byte("latest"))
		return latest.ForEach(func(k, v []byte) error {
			// Find the encoded audit_seq (field 9, varint 3) in the signed payload and lower it.
			i := bytes.Index(v, []byte{9 << 3, 3})
			if i < 0 {
				return nil // not this record
			}
			w := bytes.Clone(v)
			w[i+1] = 1
			return latest.Put(k, w)
		})
	})
	if err := start(dir); !errors.Is(err, seed.ErrAuditChain) || !strings.Contains(err.Error(), "not signed by this seed's key") {
		t.Fatalf("a seed started on an edited checkpoint: %v", err)
	}
}

func TestStateChangedBehindTheLogIsRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir)
	ts.apply(t, resources(t, "../examples/shop"))
	ts.close()
	db, err := bolt.Open(dir+"/seed.db", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("resources")).Delete([]byte("Cluster/shop/payments")) })
	db.Close()
	st, _ := boltstore.Open(dir, time.Second)
	defer st.Close()
	_, seedKey := keys(t)
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store = "prod", 1, seedKey, st
	if _, err := seed.New(context.Background(), cfg); !errors.Is(err, seed.ErrAuditChain) {
		t.Fatalf("err = %v, want ErrAuditChain", err)
	}
}

func TestBurstOfChangesIsDebouncedIntoFewPublishes(t *testing.T) {
	ts := open(t, "", func(c *seed.Config) { c.Debounce, c.MaxDelay = 300*time.Millisecond, 10*time.Second })
	ts.apply(t, resources(t, "../examples/shop"))
	for i := 0; i < 20; i++ {
		ts.apply(t, resources(t, fmt.Sprintf("apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: burst-%d, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n", i)))
	}
	want := ts.Status().GetStateHash()
	deadline := time.Now().Add(20 * time.Second)
	for ts.Status().GetPending() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	pubs := ts.MemPublisher().History()
	if n := len(pubs); n == 0 || n > 3 {
		t.Fatalf("21 changes in a burst gave %d publishes, want 1-3", n)
	}
	entries, _ := ts.api.Audit(adminCtx(), &adminv1.AuditRequest{})
	last := entries.GetEntries()[len(entries.GetEntries())-1]
	if last.GetAction() != "publish" || last.GetStateHash() != want {
		t.Fatalf("last publish compiled %s, want the final state %s", last.GetStateHash(), want)
	}
}

func TestSchemaMigrationAndNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	// A file with no schema version (as version 0 would have left it) migrates.
	db, _ := bolt.Open(dir+"/seed.db", 0o600, nil)
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("meta")); return err })
	db.Close()
	st, err := boltstore.Open(dir, time.Second)
	if err != nil {
		t.Fatalf("migrating v0: %v", err)
	}
	loaded, err := st.Load(context.Background())
	if err != nil || len(loaded.Resources) != 0 {
		t.Fatalf("load after migration: %v", err)
	}
	st.Close()
	db, _ = bolt.Open(dir+"/seed.db", 0o600, nil)
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	})
	db.Close()
	if _, err := boltstore.Open(dir, time.Second); !errors.Is(err, boltstore.ErrNewerSchema) {
		t.Fatalf("newer schema: err = %v", err)
	}
}

func TestCommitWithoutAuditIsRefused(t *testing.T) {
	st, err := boltstore.Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Commit(context.Background(), &seed.Tx{}); err == nil {
		t.Fatal("commit without an audit entry accepted")
	}
	bad := &adminv1.AuditEntry{Seq: 5, Hash: "x"}
	if err := st.Commit(context.Background(), &seed.Tx{Audit: bad}); err == nil {
		t.Fatal("audit entry out of sequence accepted")
	}
}

// failingPublisher fails its first n calls.
type failingPublisher struct {
	mem *seed.MemPublisher
	n   int
}

func (f *failingPublisher) Publish(ctx context.Context, p *seed.Publication) error {
	if f.n > 0 {
		f.n--
		return errors.New("network down")
	}
	return f.mem.Publish(ctx, p)
}

func TestPublisherFailureIsRetriedUntilDelivered(t *testing.T) {
	fp := &failingPublisher{mem: seed.NewMemPublisher(10), n: 2}
	ts := open(t, "", func(c *seed.Config) { c.Publisher = fp })
	ts.apply(t, resources(t, "../examples/shop"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := fp.mem.WaitVersion(ctx, 1)
	if err != nil {
		t.Fatalf("never delivered after publisher failures: %v (status %v)", err, ts.Status())
	}
	if len(p.Variants) != 1 || ts.Status().GetLastError() != "" {
		t.Fatalf("delivered %v; status %v", p.Info, ts.Status())
	}
}

// gatedSigner blocks its first signature until release is closed, signs the rest of that
// publish (a first publish of one variant signs its snapshot and its announce), and fails
// every signature after, as if the process died before it could publish again.
type gatedSigner struct {
	trust.Signer
	entered, release chan struct{}
	calls            atomic.Int32
}

const firstPublishSignatures = 2

func (g *gatedSigner) SignMessage(msg []byte) ([]byte, error) {
	switch n := g.calls.Add(1); {
	case n == 1:
		close(g.entered)
		<-g.release
		return g.Signer.SignMessage(msg)
	case n <= firstPublishSignatures:
		return g.Signer.SignMessage(msg)
	default:
		return nil, errors.New("the process is gone")
	}
}

// TestChangeAppliedWhilePublishingSurvivesACrash: a change acknowledged while a publish
// is compiling is not in that publish's bundles. If the seed dies before publishing
// again, it must come back with the change pending and publish it, not take the state
// the publish entry was committed on for the state it signed.
func TestChangeAppliedWhilePublishingSurvivesACrash(t *testing.T) {
	dir := t.TempDir()
	cluster := func(name string) []*adminv1.Resource {
		r, err := seed.ResourceFromObject(bundle.Object{Kind: bundle.KindCluster, Metadata: &bundleMeta{Name: name, Namespace: "crash"}, Spec: clusterSpec()})
		if err != nil {
			t.Fatal(err)
		}
		return []*adminv1.Resource{r}
	}
	gate := &gatedSigner{entered: make(chan struct{}), release: make(chan struct{})}
	ts := open(t, dir, func(c *seed.Config) { gate.Signer = c.Signer; c.Signer = gate })
	ts.apply(t, cluster("a"))
	<-gate.entered // the publish of a is compiling
	ts.apply(t, cluster("b"))
	close(gate.release)
	ts.waitPublished(t, 1)
	ts.close() // every later publish failed: b was acknowledged but never published

	ts = open(t, dir)
	if !ts.Status().GetPending() {
		t.Fatal("after the restart the seed reports nothing pending, but b was never published")
	}
	p := ts.waitPublished(t, 2)
	env, err := trust.DecodeEnvelope(p.Variants[0].Snapshot, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.DecodeBundle(env.GetPayload())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range b.GetClusters() {
		names = append(names, c.GetMetadata().GetName())
	}
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("published v2 holds clusters %v, want [a b]", names)
	}
}

// TestRotatedSeedKeyStartsOnItsPredecessorsBundles: a seed restarted with a new key
// accepts the stored bundles its previous key signed when that key is among its
// CheckpointKeys (the root's seed role during a rotation), and refuses them otherwise.
func TestRotatedSeedKeyStartsOnItsPredecessorsBundles(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir)
	ts.apply(t, resources(t, "../examples/shop"))
	ts.waitPublished(t, 1)
	ts.close()
	_, oldKey := keys(t)
	newKey, err := trust.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	start := func(checkpointKeys ...trust.PublicKey) error {
		return startErr(t, dir, func(c *seed.Config) { c.Signer, c.CheckpointKeys = newKey, checkpointKeys })
	}
	if err := start(); !errors.Is(err, seed.ErrAuditChain) {
		t.Fatalf("a new key with no checkpoint keys: %v, want the stored bundle refused", err)
	}
	if err := start(oldKey.Public(), newKey.Public()); err != nil {
		t.Fatalf("a new key with the root's seed role as checkpoint keys: %v", err)
	}
}
