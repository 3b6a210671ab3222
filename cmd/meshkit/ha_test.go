package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/etcdtest"
	"meshkit.dev/meshkit/node"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	leadershipv1 "meshkit.dev/meshkit/proto/omnirelay/mesh/control/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/etcdstore"
	"meshkit.dev/meshkit/trust"
)

// haSeed is one seed process of an haDomain; its addresses survive restarts.
type haSeed struct {
	id, data, grpc, http, p2p string
	p                         *proc
	runs                      int
	logs                      []string // each run's log
	stopped                   bool     // SIGSTOPped
}

// haDomain is a domain of seed processes on one real etcd, in production mode (an admin
// token, no --dev), with agents following it.
type haDomain struct {
	t        *testing.T
	bin      string
	etcd     *etcdtest.Server
	cli      *clientv3.Client
	key      string // the seeds' shared signing key and root
	root     string
	caDir    string
	token    string
	leaseTTL string
	seeds    []*haSeed
}

func newHADomain(t *testing.T, n int, leaseTTL string) *haDomain {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshkit")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	d := &haDomain{t: t, bin: bin, etcd: etcdtest.Start(t, t.TempDir(), etcdtest.Options{}), token: "0123456789abcdef0123456789abcdef", leaseTTL: leaseTTL}
	d.cli = d.etcd.Client(t)
	shared := t.TempDir()
	a := &app{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard, now: time.Now}
	var err error
	if d.key, d.root, err = a.devTrust(shared, "prod"); err != nil {
		t.Fatal(err)
	}
	d.caDir = filepath.Join(shared, "ca") // one CA, as operators copy it to every seed host
	if _, err := openCA(d.caDir, "prod"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s := &haSeed{id: fmt.Sprintf("seed%d", i+1), data: t.TempDir(), grpc: freeAddr(t), http: freeAddr(t)}
		s.p2p = "/ip4/127.0.0.1/tcp/" + strings.Split(freeAddr(t), ":")[1]
		if err := os.WriteFile(filepath.Join(s.data, "admin.token"), []byte(d.token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		d.seeds = append(d.seeds, s)
		d.start(s)
	}
	return d
}

func (d *haDomain) start(s *haSeed) {
	d.t.Helper()
	s.runs++
	since := time.Now()
	s.p = startProc(d.t, d.bin, fmt.Sprintf("%s-run%d", s.id, s.runs), "seed", "--store", "etcd", "--etcd-endpoints", d.etcd.Endpoint,
		"--key", d.key, "--root", d.root, "--ca-dir", d.caDir, "--data", s.data, "--seed-id", s.id,
		"--grpc-addr", s.grpc, "--http-addr", s.http, "--p2p-listen", s.p2p, "--debounce", "10ms", "--lease-ttl", d.leaseTTL)
	s.stopped = false
	s.logs = append(s.logs, s.p.log)
	waitEndpoint(d.t, s.data, since)
}

func (d *haDomain) signal(s *haSeed, sig syscall.Signal) {
	d.t.Helper()
	if err := s.p.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("%s %s: %v", sig, s.id, err)
	}
	switch sig {
	case syscall.SIGKILL:
		_ = s.p.cmd.Wait()
	case syscall.SIGSTOP:
		s.stopped = true
	case syscall.SIGCONT:
		s.stopped = false
	}
}

func (d *haDomain) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+d.token)
}

// admin returns an admin client of one seed, without following redirects.
func (d *haDomain) admin(s *haSeed) adminv1.AdminServiceClient {
	d.t.Helper()
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminServiceClient(conn)
}

// meta is the domain's publish position as etcd holds it.
func (d *haDomain) meta() (epoch, version uint64) {
	d.t.Helper()
	r, err := d.cli.Get(context.Background(), etcdstore.Prefix("prod")+"meta")
	if err != nil {
		d.t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return 0, 0
	}
	var m struct{ Epoch, Version uint64 }
	if err := json.Unmarshal(r.Kvs[0].Value, &m); err != nil {
		d.t.Fatal(err)
	}
	return m.Epoch, m.Version
}

// waitEpochAbove waits for a publish at an epoch above old and returns when it was seen.
func (d *haDomain) waitEpochAbove(old uint64, within time.Duration) (uint64, time.Time) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if e, _ := d.meta(); e > old {
			return e, time.Now()
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no publish above epoch %d in %s", old, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leader finds the seed whose Status answers (followers refuse with Unavailable).
func (d *haDomain) leader(within time.Duration) (*haSeed, *adminv1.StatusResponse) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, s := range d.seeds {
			if s.stopped || s.p.cmd.ProcessState != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(d.ctx(), time.Second)
			st, err := d.admin(s).Status(ctx, &adminv1.StatusRequest{})
			cancel()
			if err == nil && st.GetLeadership().GetLeaderId() == s.id && st.GetVersion() > 0 {
				return s, st
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no seed leads after %s", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *haDomain) run(args ...string) (string, error) {
	cmd := exec.Command(d.bin, args...)
	cmd.Env = append(os.Environ(), "MESHKIT_TOKEN="+d.token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startHAAgent starts an agent bootstrapped to seeds (all of the domain's when none).
func startHAAgent(t *testing.T, d *haDomain, name string, seeds ...*haSeed) string {
	t.Helper()
	data := t.TempDir()
	args := []string{"agent", "--data", data, "--root", d.root, "--listen", "/ip4/127.0.0.1/tcp/0", "--http-addr", "127.0.0.1:0", "--southbound-addr", "off", "--sync-interval", "1s"}
	if len(seeds) == 0 {
		seeds = d.seeds
	}
	for _, s := range seeds {
		b, err := os.ReadFile(filepath.Join(s.data, "p2p.json"))
		if err != nil {
			t.Fatal(err)
		}
		var ep endpoint
		if err := json.Unmarshal(b, &ep); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--bootstrap", ep.Addrs[0])
	}
	since := time.Now()
	startProc(t, d.bin, name, args...)
	return waitEndpoint(t, data, since).HTTPAddr
}

func headOf(addr string) (node.HeadStatus, error) {
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return node.HeadStatus{}, err
	}
	defer resp.Body.Close()
	var st node.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return node.HeadStatus{}, err
	}
	return st.Serving, nil
}

func clusterYAML(name string) string {
	return fmt.Sprintf("apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: %s, namespace: shop}\nspec: {endpoints: [{address: a, port: 1}]}\n", name)
}

// TestThreeSeedsOnEtcd runs three seed processes of one domain on a real etcd, in
// production mode: one leads; the CLI pointed at a follower is sent to the leader (status
// shows leader, term and followers; an apply lands); OmniRelay's leadership stream on a
// follower names the leader; the leader killed with SIGKILL is replaced by a seed that
// publishes at a higher epoch with the applied change, and the agents follow it.
func TestThreeSeedsOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three seeds, an agent and etcd")
	}
	d := newHADomain(t, 3, "2s")
	if out, err := d.run("apply", "-f", "../../examples/shop", "--seed", d.seeds[0].grpc); err != nil {
		t.Fatalf("apply through seed1: %v\n%s", err, out)
	}
	lead, st := d.leader(30 * time.Second)
	var follower *haSeed
	for _, s := range d.seeds {
		if s != lead {
			follower = s
		}
	}
	// A follower refuses a write itself, naming the leader.
	_, err := d.admin(follower).Apply(d.ctx(), &adminv1.ApplyRequest{Resources: resourcesOf(t, clusterYAML("refused"))})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), lead.grpc) {
		t.Fatalf("a write to a follower: %v; want Unavailable naming %s", err, lead.grpc)
	}
	// Without credentials a follower says nothing about the leader, and serves no read.
	for name, call := range map[string]func(adminv1.AdminServiceClient) error{
		"Apply": func(c adminv1.AdminServiceClient) error {
			_, err := c.Apply(context.Background(), &adminv1.ApplyRequest{})
			return err
		},
		"Status": func(c adminv1.AdminServiceClient) error {
			_, err := c.Status(context.Background(), &adminv1.StatusRequest{})
			return err
		},
	} {
		if err := call(adminv1.NewAdminServiceClient(mustConn(t, follower.grpc))); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("an anonymous %s on a follower: %v", name, err)
		}
	}
	// A follower answers reads from its own view of etcd: status names the leader.
	var out string
	want := fmt.Sprintf("leader %s (%s) term %d; answered by %s", lead.id, lead.grpc, st.GetLeadership().GetTerm(), follower.id)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if out, err = d.run("status", "--seed", follower.grpc); err == nil && strings.Contains(out, want) && strings.Contains(out, "version 1 resources 13") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status from a follower:\n%s\nwant %q at version 1 (%v)", out, want, err)
		}
	}
	if strings.Count(out, "(127.0.0.1:") != 3 || st.GetEpoch() != uint64(st.GetLeadership().GetTerm()) {
		t.Fatalf("status from a follower:\n%s\nwant two followers, epoch = term", out)
	}
	doc := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(doc, []byte(clusterYAML("through-a-follower")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := d.run("apply", "-f", doc, "--seed", follower.grpc); err != nil {
		t.Fatalf("apply through a follower: %v\n%s", err, out)
	}
	// The follower's view catches up with the write it sent on.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := d.admin(follower).Get(d.ctx(), &adminv1.GetRequest{Kind: "Cluster", Namespace: "shop", Name: "through-a-follower"}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the follower's view never showed the write: %v", err)
		}
	}

	// A follower serves its own OCI registry, behind the same credentials.
	for token, want := range map[string]int{d.token: http.StatusOK, "": http.StatusUnauthorized} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+follower.http+"/v2/", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET /v2/ on a follower with token %t: %d, want %d", token != "", resp.StatusCode, want)
		}
	}

	// OmniRelay's leadership stream, from a follower: a SNAPSHOT naming the leader.
	sub, err := leadershipv1.NewLeadershipControlServiceClient(mustConn(t, follower.grpc)).Subscribe(d.ctx(), &leadershipv1.LeadershipSubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := sub.Recv()
	if err != nil || ev.GetKind() != leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_SNAPSHOT || ev.GetLeaderId() != lead.id || ev.GetToken().GetTerm() != st.GetLeadership().GetTerm() {
		t.Fatalf("leadership snapshot from a follower: %v, %v", ev, err)
	}

	agent := startHAAgent(t, d, "agent1")
	// An agent that knows only a follower gets the bundles from it (sync, from etcd).
	onlyFollower := startHAAgent(t, d, "agent2", follower)
	waitHeadOf := func(agent string, epoch uint64) node.HeadStatus {
		deadline := time.Now().Add(30 * time.Second)
		for {
			h, err := headOf(agent)
			if err == nil && h.Epoch >= epoch {
				return h
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent serves %+v (%v), want epoch %d", h, err, epoch)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitHead := func(epoch uint64) node.HeadStatus { return waitHeadOf(agent, epoch) }
	before := waitHead(st.GetEpoch())
	if h := waitHeadOf(onlyFollower, st.GetEpoch()); h.Hash != before.Hash && h.Version < before.Version {
		t.Fatalf("the agent of the follower serves %+v, the other %+v", h, before)
	}

	oldEpoch, _ := d.meta()
	killed := time.Now()
	d.signal(lead, syscall.SIGKILL)
	newEpoch, at := d.waitEpochAbove(oldEpoch, 30*time.Second)
	t.Logf("leader killed → publish at epoch %d by the next leader: %s (lease 2 s)", newEpoch, at.Sub(killed).Round(time.Millisecond))
	next, st2 := d.leader(30 * time.Second)
	if next == lead || st2.GetEpoch() != newEpoch || st2.GetVersion() <= st.GetVersion() {
		t.Fatalf("after the kill: %s leads at epoch %d v%d (before: %s at %d v%d)", next.id, st2.GetEpoch(), st2.GetVersion(), lead.id, st.GetEpoch(), st.GetVersion())
	}
	got, err := d.admin(next).Get(d.ctx(), &adminv1.GetRequest{Kind: "Cluster", Namespace: "shop", Name: "through-a-follower"})
	if err != nil || got.GetResource() == nil {
		t.Fatalf("the change applied through a follower is gone after the failover: %v", err)
	}
	after := waitHead(newEpoch)
	if after.Version <= before.Version {
		t.Fatalf("the agent went from %+v to %+v", before, after)
	}
}

func mustConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestBinaryStartsWithoutProtobufSettings: the binary links go-libp2p-pubsub and etcd's
// client, which both register a protobuf file "rpc.proto"; it must start with nothing set
// in its environment (a.meshkit.dev/protoconflict), as a user's `go run` does. The test
// process's own environment has the variable set by that package, so it is removed here.
func TestBinaryStartsWithoutProtobufSettings(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "meshkit")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = withoutProtobufSetting()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "version")
	cmd.Env = withoutProtobufSetting()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "meshkit ") {
		t.Fatalf("meshkit version: %v\n%s", err, out)
	}
}

func withoutProtobufSetting() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOLANG_PROTOBUF_REGISTRATION_CONFLICT=") && !strings.HasPrefix(kv, "GOFLAGS=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestEtcdSeedTakesNoEpoch: with etcd the epoch is the election's; a stale or any other
// --epoch is refused before anything starts, as is an unknown store.
func TestEtcdSeedTakesNoEpoch(t *testing.T) {
	data := t.TempDir()
	code, out := cli(t, "seed", "--store", "etcd", "--etcd-endpoints", "http://127.0.0.1:1", "--epoch", "5", "--data", data, "--p2p-listen", "off")
	if code != exitUsage || !strings.Contains(out, "--epoch is for --store bolt") {
		t.Fatalf("--epoch with etcd: exit %d\n%s", code, out)
	}
	code, out = cli(t, "seed", "--store", "zookeeper", "--data", data, "--p2p-listen", "off")
	if code != exitUsage || !strings.Contains(out, "bolt or etcd") {
		t.Fatalf("--store zookeeper: exit %d\n%s", code, out)
	}
}

// recorder is a Restorer that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	pubs []*seed.Publication
}

func (r *recorder) Publish(context.Context, *seed.Publication) error { return nil }

func (r *recorder) Restore(p *seed.Publication) {
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
}

func (r *recorder) newest() *seed.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pubs) == 0 {
		return nil
	}
	return r.pubs[len(r.pubs)-1]
}

// TestFollowerFollowsTheLeader: a follower's read-only view is loaded again after every
// write of the leader (reads answer what the leader stored; writes are refused), and its
// publisher is given every new publication, its snapshots rebuilt from the stored deltas
// and verifying under the domain's root, so it serves them over sync.
func TestFollowerFollowsTheLeader(t *testing.T) {
	srv := etcdtest.Start(t, t.TempDir(), etcdtest.Options{})
	cli := srv.Client(t)
	es, err := etcdstore.New(cli, "prod")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard, now: time.Now}
	keyPath, rootPath, err := a.devTrust(t.TempDir(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	signer, root, err := loadSeedTrust(keyPath, rootPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store = "prod", 7, signer, es
	cfg.Debounce, cfg.MaxDelay = time.Millisecond, time.Millisecond
	leader, err := seed.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	rec := &recorder{}
	var view atomic.Pointer[seed.Seed]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		follow(ctx, haConfig{seed: seed.Config{Domain: "prod", Signer: signer, Publisher: rec}, store: es, client: cli, log: slog.New(slog.DiscardHandler)}, &view)
	}()
	defer func() { cancel(); <-done }()

	v, err := trust.NewVerifier(trust.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	var base strings.Builder
	for i := range 300 { // big enough that one cluster's delta is stored instead of a snapshot
		base.WriteString(clusterYAML(fmt.Sprintf("base-%03d", i)) + "---\n")
	}
	apply := func(doc string, version uint64, clusters int) {
		t.Helper()
		if _, err := leader.Apply(context.Background(), "test", resourcesOf(t, doc)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if p := rec.newest(); p != nil && p.Info.GetVersion() == version {
				vb, err := v.Verify(p.Variants[0].Snapshot)
				if err != nil {
					t.Fatalf("the mirrored v%d: %v", version, err)
				}
				b, err := bundle.DecodeBundle(vb.Payload)
				if err != nil || vb.Header.GetVersion() != version || len(b.GetClusters()) != clusters {
					t.Fatalf("the mirrored v%d holds %d clusters (%v)", version, len(b.GetClusters()), err)
				}
				if st := view.Load().Status(); st.GetVersion() != version || st.GetResources() != uint64(clusters) || st.GetEpoch() != 7 {
					t.Fatalf("the follower's view: %v; want epoch 7 version %d with %d resources", st, version, clusters)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the follower was not given v%d (newest %v)", version, rec.newest())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	apply(base.String(), 1, 300)
	for i := uint64(2); i <= 4; i++ {
		apply(clusterYAML(fmt.Sprintf("c%d", i)), i, 300+int(i)-1)
	}
	if _, err := view.Load().Apply(context.Background(), "test", resourcesOf(t, clusterYAML("on-a-follower"))); status.Code(err) != codes.Unavailable {
		t.Fatalf("a write to the follower's view: %v", err)
	}
	_, stored, err := es.LoadPublished(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for key, st := range stored {
		if len(st.Chain) != 3 {
			t.Fatalf("variant %q: %d deltas stored after the snapshot; the follower was to rebuild v2..v4 from them", key, len(st.Chain))
		}
	}
}

// writeTLS writes a CA, a server certificate for 127.0.0.1 and a client certificate
// into dir, as PEM files: ca.pem, server.pem, server.key, client.pem, client.key.
func writeTLS(t *testing.T, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	for i, name := range []string{"server", "client"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		write(name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		write(name+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
	}
}

// TestSeedReachesEtcdOverMutualTLS: with --etcd-ca, --etcd-cert and --etcd-key the seed's
// client verifies etcd and shows its certificate; without the certificate etcd refuses it.
func TestSeedReachesEtcdOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	writeTLS(t, dir)
	p := func(n string) string { return filepath.Join(dir, n) }
	srv := etcdtest.Start(t, t.TempDir(), etcdtest.Options{TLS: &transport.TLSInfo{CertFile: p("server.pem"), KeyFile: p("server.key"), TrustedCAFile: p("ca.pem"), ClientCertAuth: true}})
	if !strings.HasPrefix(srv.Endpoint, "https://") {
		t.Fatalf("endpoint %s", srv.Endpoint)
	}
	cli, err := etcdClient([]string{srv.Endpoint}, p("ca.pem"), p("client.pem"), p("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/meshkit/prod/probe", "x"); err != nil {
		t.Fatalf("a put over mTLS: %v", err)
	}
	anon, err := etcdClient([]string{srv.Endpoint}, p("ca.pem"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	actx, acancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer acancel()
	if _, err := anon.Get(actx, "/meshkit/prod/probe"); err == nil {
		t.Fatal("etcd served a client without a certificate")
	}
}
