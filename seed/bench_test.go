package seed_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
)

// scaleResources is 2,000 clusters and 10,000 routes over 20 tenants.
func scaleResources() []*adminv1.Resource {
	var out []*adminv1.Resource
	for i := 0; i < 2000; i++ {
		out = append(out, &adminv1.Resource{
			Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("svc-%04d", i), Namespace: "prod", Tenant: fmt.Sprintf("t%02d", i%20), Region: "eu-west-1"},
			Spec: &adminv1.Resource_Cluster{Cluster: &bundlev1.ClusterSpec{
				Endpoints: []*bundlev1.Endpoint{{Address: "10.1.0.1", Port: 8080, Zone: "a"}, {Address: "10.1.0.2", Port: 8080, Zone: "b"}},
				LbPolicy:  bundlev1.LbPolicy_LB_POLICY_LEAST_REQUEST, ConnectTimeout: durationpb.New(time.Second),
			}},
		})
	}
	for i := 0; i < 10000; i++ {
		out = append(out, route(i, time.Second))
	}
	return out
}

func route(i int, timeout time.Duration) *adminv1.Resource {
	return &adminv1.Resource{
		Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("route-%05d", i), Namespace: "prod", Tenant: fmt.Sprintf("t%02d", (i/5)%20), Region: "eu-west-1"},
		Spec: &adminv1.Resource_Route{Route: &bundlev1.RouteSpec{
			Match:   &bundlev1.RouteMatch{Hosts: []string{fmt.Sprintf("svc-%04d.prod.example.com", i/5)}, PathPrefix: fmt.Sprintf("/api/v1/r%05d", i)},
			Cluster: fmt.Sprintf("svc-%04d", i/5), Timeout: durationpb.New(timeout),
		}},
	}
}

func noDebounce(c *seed.Config) { c.Debounce, c.MaxDelay = time.Nanosecond, time.Nanosecond }

// peakRSS reads the process's peak resident set (VmHWM) in MiB, or 0 off Linux.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkApplyPublish10k: one Apply of 12,000 resources into a fresh seed, through
// whole-state validation, one fsynced bbolt transaction, memdb, the publish loop,
// compilation, canonical encoding and signing, until the version is published.
func BenchmarkApplyPublish10k(b *testing.B) {
	rs := scaleResources()
	var bytes uint64
	for b.Loop() {
		b.StopTimer()
		ts := open(b, "", noDebounce)
		b.StartTimer()
		ts.apply(b, rs)
		pub := ts.waitPublished(b, 1)
		b.StopTimer()
		bytes = pub.Info.GetVariants()[0].GetSnapshotBytes()
		ts.close()
		b.StartTimer()
	}
	b.ReportMetric(float64(bytes), "snapshot-bytes")
}

// BenchmarkIncrementalRoute: in a published 12,000-resource state, change one route and
// wait until the version carrying it (snapshot + delta) is published.
func BenchmarkIncrementalRoute(b *testing.B) {
	ts := open(b, "", noDebounce)
	ts.apply(b, scaleResources())
	ts.waitPublished(b, 1)
	v := uint64(1)
	var delta uint64
	i := 0
	for b.Loop() {
		i++
		ts.apply(b, []*adminv1.Resource{route(i%10000, time.Duration(2+i%7)*time.Second)})
		v++
		pub := ts.waitPublished(b, v)
		delta = pub.Info.GetVariants()[0].GetDeltaBytes()
	}
	b.ReportMetric(float64(delta), "delta-bytes")
}

// TestIncrementalPublishIsADelta checks what the benchmark measures: one changed route
// yields a delta holding just that route.
func TestIncrementalPublishIsADelta(t *testing.T) {
	if testing.Short() {
		t.Skip("12,000 resources")
	}
	ts := open(t, "", noDebounce)
	ts.apply(t, scaleResources())
	ts.waitPublished(t, 1)
	ts.apply(t, []*adminv1.Resource{route(42, 9*time.Second)})
	pub := ts.waitPublished(t, 2)
	v := verifierFor(t, "prod")
	if pv := pub.Variants[0]; pv.Delta == nil || len(pv.Delta) > 2048 {
		t.Fatalf("delta of one route is %d bytes", len(pv.Delta))
	}
	first := ts.MemPublisher().History()[0]
	vb, err := v.Verify(first.Variants[0].Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	v.Commit(vb)
	vd, err := v.Verify(pub.Variants[0].Delta)
	if err != nil {
		t.Fatal(err)
	}
	if len(vd.Delta.GetUpserts()) != 1 || len(vd.Delta.GetRemovals()) != 0 {
		t.Fatalf("delta has %d upserts, %d removals", len(vd.Delta.GetUpserts()), len(vd.Delta.GetRemovals()))
	}
}

const rssChildEnv = "MESHKIT_SEED_RSS_CHILD"

// rssChild runs one seed holding the 12,000-resource state, published, and prints its
// peak RSS: the figure the memory goal is about, free of benchmark-harness noise.
func rssChild(dir string) {
	var t testing.B
	ts := open(&t, dir, noDebounce)
	ts.apply(&t, scaleResources())
	ts.waitPublished(&t, 1)
	ts.apply(&t, []*adminv1.Resource{route(1, 5*time.Second)})
	ts.waitPublished(&t, 2)
	fmt.Printf("RSS %.1f\n", peakRSS())
	ts.close()
}

// BenchmarkSeedPeakRSS10k reports the peak RSS of a separate seed process that applies
// and publishes 2,000 clusters and 10,000 routes, then one incremental change.
func BenchmarkSeedPeakRSS10k(b *testing.B) {
	var rss float64
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), rssChildEnv+"="+b.TempDir())
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v %s", err, out)
		}
		if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "RSS %f", &rss); err != nil {
			b.Fatalf("child said %q", out)
		}
	}
	b.ReportMetric(rss, "peak-RSS-MiB")
}
