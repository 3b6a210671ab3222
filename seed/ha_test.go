package seed_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/internal/etcdtest"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/etcdstore"
)

// term makes a leader key for id, as an election does, and returns the seed options of
// that term: its epoch is the key's creation revision and its store is fenced on the key.
func term(t *testing.T, cli *clientv3.Client, st *etcdstore.Store, id string, diverged *atomic.Int32) (func(*seed.Config), string, int64) {
	t.Helper()
	key := etcdstore.ElectionPrefix("prod") + "/" + id
	resp, err := cli.Put(context.Background(), key, id)
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	return func(c *seed.Config) {
		c.Epoch, c.Store = uint64(rev), st.Fenced(key, rev)
		c.OnDiverged = func(error) { diverged.Add(1) }
	}, key, rev
}

func metaOf(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	r, err := cli.Get(context.Background(), etcdstore.Prefix("prod")+"meta")
	if err != nil || len(r.Kvs) == 0 {
		t.Fatalf("meta: %v", err)
	}
	return string(r.Kvs[0].Value)
}

// TestDeposedLeaderCannotWriteOrPublish is the split brain: seed A leads, loses its key
// (its lease expired while it was paused or cut off from etcd) and keeps running; seed B
// is elected and publishes. A's writes are refused, it publishes nothing more, and it is
// told its view is stale; B's epoch is higher and its writes land.
func TestDeposedLeaderCannotWriteOrPublish(t *testing.T) {
	srv := etcdtest.Start(t, t.TempDir(), etcdtest.Options{})
	cli := srv.Client(t)
	st, err := etcdstore.New(cli, "prod")
	if err != nil {
		t.Fatal(err)
	}
	var divergedA, divergedB atomic.Int32
	optsA, keyA, revA := term(t, cli, st, "a", &divergedA)
	a := open(t, "", noDebounce, optsA)
	a.apply(t, resources(t, "../examples/shop"))
	a.waitPublished(t, 1)

	if _, err := cli.Delete(context.Background(), keyA); err != nil { // A's lease ended
		t.Fatal(err)
	}
	optsB, _, revB := term(t, cli, st, "b", &divergedB)
	b := open(t, "", noDebounce, optsB)
	if b.Status().GetVersion() != 1 || b.Status().GetResources() != 13 {
		t.Fatalf("B loaded %v", b.Status())
	}
	pubB := b.waitPublished(t, 2) // a new term publishes at once
	if pubB.Info.GetEpoch() != uint64(revB) || revB <= revA {
		t.Fatalf("B published epoch %d (term %d; A's was %d)", pubB.Info.GetEpoch(), revB, revA)
	}
	before := metaOf(t, cli)

	_, err = a.api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: from-a, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n")})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not the leader") {
		t.Fatalf("a write to the deposed leader: %v", err)
	}
	if divergedA.Load() == 0 {
		t.Fatal("the deposed leader was not told its view is stale")
	}
	time.Sleep(300 * time.Millisecond) // A's publish loop has every chance to try
	if len(a.MemPublisher().History()) != 1 {
		t.Fatalf("the deposed leader published %d versions; it published 1 while it led", len(a.MemPublisher().History()))
	}
	if got := metaOf(t, cli); got != before {
		t.Fatalf("the deposed leader moved the domain's meta: %s → %s", before, got)
	}
	b.apply(t, resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: from-b, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n"))
	if pub := b.waitPublished(t, 3); pub.Info.GetEpoch() != uint64(revB) {
		t.Fatalf("B's next publication: %v", pub.Info)
	}
	if divergedB.Load() != 0 {
		t.Fatal("the leader was told its view is stale")
	}
}

// TestEtcdDownMidPublish stops etcd under a seed: a write is refused (never acknowledged)
// and the publish loop reports the failure; with etcd back, writes and publishes go on
// from where the store is, with no version published twice.
func TestEtcdDownMidPublish(t *testing.T) {
	srv := etcdtest.Start(t, t.TempDir(), etcdtest.Options{})
	cli := srv.Client(t)
	st, err := etcdstore.New(cli, "prod")
	if err != nil {
		t.Fatal(err)
	}
	var diverged atomic.Int32
	opts, _, _ := term(t, cli, st, "a", &diverged)
	ts := open(t, "", noDebounce, opts)
	ts.apply(t, resources(t, "../examples/shop"))
	ts.waitPublished(t, 1)

	srv.Stop()
	ctx, cancel := context.WithTimeout(adminCtx(), 2*time.Second)
	_, err = ts.api.Apply(ctx, &adminv1.ApplyRequest{Resources: resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: during, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n")})
	cancel()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("a write with etcd down: %v", err)
	}
	if ts.Status().GetVersion() != 1 {
		t.Fatalf("status %v", ts.Status())
	}

	srv.Restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(adminCtx(), 2*time.Second)
		_, err := ts.api.Apply(cctx, &adminv1.ApplyRequest{Resources: resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: after, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n")})
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, context.Canceled) || time.Now().After(deadline) {
			t.Fatalf("with etcd back, the write still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pub := ts.waitPublished(t, 2)
	loaded, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for _, p := range loaded.History {
		if seen[p.GetVersion()] {
			t.Fatalf("version %d stored twice", p.GetVersion())
		}
		seen[p.GetVersion()] = true
	}
	if loaded.Meta.Version != pub.Info.GetVersion() || len(loaded.History) != int(loaded.Meta.Version) {
		t.Fatalf("etcd holds meta %+v and %d publications; the seed published v%d", loaded.Meta, len(loaded.History), pub.Info.GetVersion())
	}
	if diverged.Load() != 0 {
		t.Fatal("a refused write made the seed think another wrote")
	}
}

// TestStaleEpochIsRefused: a seed on bbolt started with an epoch older than the one its
// data directory published at refuses to start, so it can never publish below it.
func TestStaleEpochIsRefused(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir, noDebounce, func(c *seed.Config) { c.Epoch = 3 })
	ts.apply(t, resources(t, "../examples/shop"))
	ts.waitPublished(t, 1)
	ts.close()
	err := startErr(t, dir, func(c *seed.Config) { c.Epoch = 2 })
	if err == nil || !strings.Contains(err.Error(), "epoch 3") || !strings.Contains(err.Error(), "older") {
		t.Fatalf("a seed with epoch 2 on a directory published at epoch 3: %v", err)
	}
}
