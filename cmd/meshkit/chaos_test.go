package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/etcdstore"
)

// chaosReport is what `make chaos` writes (MESHKIT_CHAOS_REPORT) for the README.
type chaosReport struct {
	Iterations int     `json:"iterations"`
	Kills      int     `json:"sigkill"`
	Pauses     int     `json:"sigstop"`
	LeaseTTL   string  `json:"lease_ttl"`
	FailoverMS []int64 `json:"failover_ms"` // leader signalled → first publish by the next leader
	P50MS      int64   `json:"failover_p50_ms"`
	P99MS      int64   `json:"failover_p99_ms"`
	MaxMS      int64   `json:"failover_max_ms"`
	Acked      int     `json:"applies_acknowledged"`
	Refused    int     `json:"applies_refused"`
	Published  int     `json:"publications"`
	AgentSeen  int     `json:"agent_heads_observed"`
}

func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// TestChaosSeedsOnEtcd kills and pauses the leader of three seed processes on a real etcd,
// at random points around publishes, while a client applies a change every 50 ms and two
// agents follow. Over the whole history: no (epoch, version) is published twice with
// different content, no acknowledged apply is lost, no agent ever serves an older
// (epoch, version) than it served before, and every failover is measured. The CI variant
// runs 6 iterations; `make chaos` runs MESHKIT_CHAOS_ITERATIONS (100) and writes the report.
func TestChaosSeedsOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three seeds, two agents and etcd through leader kills")
	}
	iterations := 6
	if v := os.Getenv("MESHKIT_CHAOS_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MESHKIT_CHAOS_ITERATIONS=%q", v)
		}
		iterations = n
	}
	ttl := election4s
	d := newHADomain(t, 3, ttl)
	if out, err := d.run("apply", "-f", "../../examples/shop", "--seed", d.seeds[0].grpc); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	d.leader(60 * time.Second)
	agents := []string{startHAAgent(t, d, "agent1"), startHAAgent(t, d, "agent2")}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }() // a failed iteration stops the client and the watchers too
	admins := make([]adminv1.AdminServiceClient, len(d.seeds))
	for i, s := range d.seeds {
		admins[i] = d.admin(s)
	}
	var mu sync.Mutex
	var acked []string
	refused := 0
	regressions := []string{}
	observed := 0

	// The client: one new Cluster every 50 ms, to whichever seed accepts it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil; n++ {
			name := fmt.Sprintf("chaos-%d", n)
			rs, err := resources(clusterYAML(name))
			if err != nil {
				panic(err) // a constant, valid document
			}
			ok := false
			for i, s := range d.seeds {
				cctx, cancel := context.WithTimeout(d.ctx(), 2*time.Second)
				_, err := admins[i].Apply(cctx, &adminv1.ApplyRequest{Resources: rs})
				cancel()
				if err == nil {
					ok = true
					break
				}
				if os.Getenv("MESHKIT_CHAOS_DEBUG") != "" {
					t.Logf("apply %s at %s: %v", name, s.id, err)
				}
			}
			mu.Lock()
			if ok {
				acked = append(acked, name)
			} else {
				refused++
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// The agents: what each serves, every 20 ms, never older than before.
	for i, addr := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last [2]uint64
			for ctx.Err() == nil {
				if h, err := headOf(addr); err == nil && h.Version > 0 {
					cur := [2]uint64{h.Epoch, h.Version}
					mu.Lock()
					observed++
					if cur[0] < last[0] || (cur[0] == last[0] && cur[1] < last[1]) {
						regressions = append(regressions, fmt.Sprintf("agent%d: %v after %v", i+1, cur, last))
					}
					mu.Unlock()
					last = cur
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}

	rep := chaosReport{Iterations: iterations, LeaseTTL: ttl}
	for i := range iterations {
		lead, _ := d.leader(60 * time.Second)
		oldEpoch, _ := d.meta()
		// A second of applies under this leader, then a signal somewhere around one of
		// its publishes (each apply is published 10 ms later).
		time.Sleep(time.Second + time.Duration(rand.IntN(60))*time.Millisecond)
		sig := syscall.SIGKILL
		if i%2 == 1 {
			sig = syscall.SIGSTOP // the paused old leader: the dangerous case
		}
		signalled := time.Now()
		d.signal(lead, sig)
		_, at := d.waitEpochAbove(oldEpoch, 60*time.Second)
		rep.FailoverMS = append(rep.FailoverMS, at.Sub(signalled).Milliseconds())
		if sig == syscall.SIGKILL {
			rep.Kills++
			d.start(lead)
		} else {
			rep.Pauses++
			time.Sleep(300 * time.Millisecond) // the new leader writes while the old one is paused
			d.signal(lead, syscall.SIGCONT)
			waitFollows(t, d, lead)
		}
		t.Logf("iteration %d: %s %s, next leader published after %d ms", i+1, sig, lead.id, rep.FailoverMS[i])
	}
	stop()
	wg.Wait()

	// No acknowledged apply lost.
	lead, st := d.leader(60 * time.Second)
	list, err := d.admin(lead).List(d.ctx(), &adminv1.ListRequest{Kind: "Cluster", Namespace: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range list.GetResources() {
		o, err := seed.ObjectFromResource(r)
		if err != nil {
			t.Fatal(err)
		}
		have[o.Metadata.GetName()] = true
	}
	for _, name := range acked {
		if !have[name] {
			t.Errorf("apply of %s was acknowledged and is lost", name)
		}
	}
	// No (epoch, version) published twice with different content: every seed's log of
	// every run, and etcd's history.
	published := map[[2]uint64]string{}
	for _, s := range d.seeds {
		for run := 1; run <= s.runs; run++ {
			for _, p := range publishedIn(t, s, run) {
				key := [2]uint64{p.Epoch, p.Version}
				if prev, ok := published[key]; ok && prev != p.State {
					t.Errorf("epoch %d version %d published twice: state %s and %s", p.Epoch, p.Version, prev, p.State)
				}
				published[key] = p.State
			}
		}
	}
	checkHistory(t, d.cli)
	for _, r := range regressions {
		t.Errorf("an agent regressed: %s", r)
	}
	// Both agents end on the final publication.
	for i, addr := range agents {
		deadline := time.Now().Add(30 * time.Second)
		for {
			h, err := headOf(addr)
			if err == nil && h.Epoch == st.GetEpoch() && h.Version >= st.GetVersion() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent%d serves %+v (%v); the leader published epoch %d v%d", i+1, h, err, st.GetEpoch(), st.GetVersion())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	sorted := slices.Clone(rep.FailoverMS)
	slices.Sort(sorted)
	rep.P50MS, rep.P99MS, rep.MaxMS = percentile(sorted, 0.5), percentile(sorted, 0.99), sorted[len(sorted)-1]
	rep.Acked, rep.Refused, rep.Published, rep.AgentSeen = len(acked), refused, len(published), observed
	if len(acked) == 0 || observed == 0 {
		t.Fatalf("nothing was exercised: %d applies acknowledged, %d agent heads observed", len(acked), observed)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("chaos report:\n%s", b)
	if path := os.Getenv("MESHKIT_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// election4s is the default lease the chaos test measures failover with.
const election4s = "4s"

func resourcesOf(t *testing.T, doc string) []*adminv1.Resource {
	t.Helper()
	out, err := resources(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func resources(doc string) ([]*adminv1.Resource, error) {
	objs, err := bundle.Decode("c.yaml", []byte(doc))
	if err != nil {
		return nil, err
	}
	out := make([]*adminv1.Resource, len(objs))
	for i, o := range objs {
		if out[i], err = seed.ResourceFromObject(o); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// waitFollows waits until a resumed old leader knows its term ended: its admin API
// refuses (it follows) or names another leader.
func waitFollows(t *testing.T, d *haDomain, s *haSeed) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(d.ctx(), time.Second)
		st, err := d.admin(s).Status(cctx, &adminv1.StatusRequest{})
		cancel()
		if err != nil || st.GetLeadership().GetLeaderId() != s.id {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still leads 30 s after it was resumed", s.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type publishedLine struct {
	Msg     string `json:"msg"`
	Epoch   uint64 `json:"epoch"`
	Version uint64 `json:"version"`
	State   string `json:"state"`
}

// publishedIn reads the "published" lines of one run's log.
func publishedIn(t *testing.T, s *haSeed, run int) []publishedLine {
	t.Helper()
	f, err := os.Open(s.logs[run-1])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []publishedLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l publishedLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "published" {
			out = append(out, l)
		}
	}
	return out
}

// checkHistory reads the publications etcd kept: versions strictly increase and epochs
// never go back.
func checkHistory(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	r, err := cli.Get(context.Background(), etcdstore.Prefix("prod")+"history/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var last *adminv1.Publication
	for _, kv := range r.Kvs {
		p := &adminv1.Publication{}
		if err := proto.Unmarshal(kv.Value, p); err != nil {
			t.Fatal(err)
		}
		if last != nil && (p.GetVersion() != last.GetVersion()+1 || p.GetEpoch() < last.GetEpoch()) {
			t.Errorf("history: epoch %d v%d after epoch %d v%d", p.GetEpoch(), p.GetVersion(), last.GetEpoch(), last.GetVersion())
		}
		last = p
	}
	if last == nil {
		t.Fatal("etcd holds no publication")
	}
}
