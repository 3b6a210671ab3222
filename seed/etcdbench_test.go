package seed_test

import (
	"context"
	"testing"
	"time"

	"meshkit.dev/meshkit/internal/etcdtest"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/etcdstore"
)

// onEtcd runs a test seed on a real etcd over loopback (one member, fsyncing, started
// in-process), fenced as a leader's store is. 12,000 resources in one apply need etcd's
// --max-txn-ops and --max-request-bytes raised (docs/ha.md).
func onEtcd(b *testing.B) func(*seed.Config) {
	srv := etcdtest.Start(b, b.TempDir(), etcdtest.Options{MaxTxnOps: 20000, MaxRequestBytes: 32 << 20})
	cli := srv.Client(b)
	st, err := etcdstore.New(cli, "prod")
	if err != nil {
		b.Fatal(err)
	}
	key := etcdstore.ElectionPrefix("prod") + "/bench"
	resp, err := cli.Put(context.Background(), key, "bench")
	if err != nil {
		b.Fatal(err)
	}
	fenced := st.Fenced(key, resp.Header.Revision)
	return func(c *seed.Config) { c.Store = fenced }
}

// BenchmarkApplyPublish10kEtcd is BenchmarkApplyPublish10k with the state in etcd.
func BenchmarkApplyPublish10kEtcd(b *testing.B) {
	rs := scaleResources()
	for b.Loop() {
		b.StopTimer()
		ts := open(b, "", noDebounce, onEtcd(b))
		b.StartTimer()
		ts.apply(b, rs)
		ts.waitPublished(b, 1)
		b.StopTimer()
		ts.close()
		b.StartTimer()
	}
}

// BenchmarkIncrementalRouteEtcd is BenchmarkIncrementalRoute with the state in etcd.
func BenchmarkIncrementalRouteEtcd(b *testing.B) {
	ts := open(b, "", noDebounce, onEtcd(b))
	ts.apply(b, scaleResources())
	ts.waitPublished(b, 1)
	v := uint64(1)
	i := 0
	for b.Loop() {
		i++
		ts.apply(b, []*adminv1.Resource{route(i%10000, time.Duration(2+i%7)*time.Second)})
		v++
		ts.waitPublished(b, v)
	}
}
