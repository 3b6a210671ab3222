package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

// BenchmarkAgentProcess starts the real `meshkit agent` binary with no network on a data
// directory holding a 1 MiB last-known-good bundle, and reports the time from process
// start until /readyz answers 200 (serving the LKG), and the process's resident memory
// after 3 s of steady state (VmRSS) and its peak (VmHWM):
//
//	go test ./cmd/meshkit -run '^$' -bench AgentProcess -benchtime 5x
func BenchmarkAgentProcess(b *testing.B) {
	dir := b.TempDir()
	rootPath, size := writeLKGFixture(b, dir, 1<<20)
	bin := filepath.Join(dir, "meshkit")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	var starts, rss, hwm []float64
	b.ResetTimer()
	for range b.N {
		httpAddr := freeAddr(b)
		cmd := exec.Command(bin, "agent", "--data", filepath.Join(dir, "agent"), "--root", rootPath,
			"--listen", "/ip4/127.0.0.1/tcp/0", "--http-addr", httpAddr, "--southbound-addr", "127.0.0.1:0")
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			resp, err := http.Get("http://" + httpAddr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Since(t0) > 10*time.Second {
				_ = cmd.Process.Kill()
				b.Fatalf("agent not ready after 10 s (last err %v)", err)
			}
			time.Sleep(time.Millisecond)
		}
		starts = append(starts, float64(time.Since(t0).Microseconds())/1000)
		b.StopTimer()
		time.Sleep(3 * time.Second)
		r, h := procMemMiB(b, cmd.Process.Pid)
		rss, hwm = append(rss, r), append(hwm, h)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.StartTimer()
	}
	b.StopTimer()
	med := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ReportMetric(med(starts), "start-to-lkg-ms")
	b.ReportMetric(med(rss), "rss-MiB")
	b.ReportMetric(med(hwm), "peak-rss-MiB")
	b.ReportMetric(float64(size)/(1<<20), "bundle-MiB")
}

// procMemMiB reads VmRSS and VmHWM of pid.
func procMemMiB(b *testing.B, pid int) (rss, hwm float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

// writeLKGFixture creates a domain root in dir/root.json and, in dir/agent, the
// last-known-good of a signed bundle of about size bytes, written by a real agent.
func writeLKGFixture(b *testing.B, dir string, size int) (rootPath string, payloadBytes int) {
	root, rootEnv, seedKey := testRoot(b, time.Now())
	rootPath = filepath.Join(dir, "root.json")
	if err := writeEnvelopeJSON(rootPath, rootEnv, false); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	bd := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{SchemaVersion: 1, Domain: "prod", Epoch: 1, Version: 1,
		IssuedAt: timestamppb.New(now.Add(-time.Minute)), ExpiresAt: timestamppb.New(now.Add(12 * time.Hour))}}
	bd.Clusters = []*bundlev1.Cluster{{Metadata: &bundlev1.Metadata{Name: "api", Namespace: "shop"}, Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 80}}}}}
	var payload []byte
	var err error
	for i := 0; len(payload) < size; i += 1000 {
		for j := i; j < i+1000; j++ {
			bd.Routes = append(bd.Routes, &bundlev1.Route{Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("r%06d", j), Namespace: "shop"},
				Spec: &bundlev1.RouteSpec{Cluster: "api", Match: &bundlev1.RouteMatch{Hosts: []string{fmt.Sprintf("r%06d.shop.example", j)}}}})
		}
		bundle.Canonicalize(bd)
		if payload, err = bundle.Encode(bd); err != nil {
			b.Fatal(err)
		}
	}
	senv := trust.NewEnvelope(trust.PayloadBundle, payload)
	if err := trust.Sign(senv, seedKey); err != nil {
		b.Fatal(err)
	}
	sb, err := trust.MarshalEnvelope(senv)
	if err != nil {
		b.Fatal(err)
	}
	// A real agent fetches it by sync from a peer (1 MiB is beyond gossip) and persists it.
	mn := mocknet.New()
	defer mn.Close()
	sh, err := mn.GenPeer()
	if err != nil {
		b.Fatal(err)
	}
	h, err := mn.GenPeer()
	if err != nil {
		b.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		b.Fatal(err)
	}
	hash := bundle.Hash(payload)
	src := &staticSource{head: &syncv1.Head{Epoch: 1, Version: 1, Hash: hash[:], Size: uint64(len(payload))}, held: &syncv1.HeldBundle{Proof: sb}}
	sn, err := p2p.New(context.Background(), p2p.Config{Domain: "prod", Host: sh, Role: p2p.RoleSeed, Validator: src, Source: src})
	if err != nil {
		b.Fatal(err)
	}
	defer sn.Close()
	a, err := node.New(context.Background(), node.Config{Root: root, DataDir: filepath.Join(dir, "agent"), Host: h,
		Bootstrap: []peer.AddrInfo{{ID: sh.ID(), Addrs: sh.Addrs()}}})
	if err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if cur, ok := a.Current(); ok && cur.Version == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the fixture agent did not fetch the bundle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Close(); err != nil { // flushes the LKG
		b.Fatal(err)
	}
	return rootPath, len(payload)
}

// staticSource serves one bundle over sync.
type staticSource struct {
	head *syncv1.Head
	held *syncv1.HeldBundle
}

func (s *staticSource) Validate(context.Context, p2p.Message) p2p.Verdict { return p2p.Ignore }
func (s *staticSource) Heads() []*syncv1.Head                             { return []*syncv1.Head{s.head} }
func (s *staticSource) Held([]byte) *syncv1.HeldBundle                    { return s.held }

// testRoot is a domain "prod" whose root key also holds the seed role, valid around now.
func testRoot(t testing.TB, now time.Time) (*trust.Root, *trustv1.Envelope, *trust.PrivateKey) {
	t.Helper()
	k, err := trust.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := trust.BuildRoot(trust.RootSpec{Domain: "prod", Version: 1, IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(24 * time.Hour),
		RootKeys: []trust.PublicKey{k.Public()}, RootThreshold: 1, SeedKeys: []trust.PublicKey{k.Public()}, SeedThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.Sign(env, k); err != nil {
		t.Fatal(err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	root, err := trust.VerifyRoot(b)
	if err != nil {
		t.Fatal(err)
	}
	return root, env, k
}
