package node_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	"meshkit.dev/meshkit/trust"
)

const crashChildEnv = "MESHKIT_NODE_CRASH_CHILD"

// TestKill9DuringApplyLeavesAVerifiedLKG kills an agent process with SIGKILL at random
// moments while it applies a stream of snapshots and deltas, 200 times over one data
// directory. After every kill the directory must load as a verified bundle at least as
// new as the one the previous kill left: never a torn file, never a rollback.
func TestKill9DuringApplyLeavesAVerifiedLKG(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns 200 processes")
	}
	iterations := 200
	if s := os.Getenv("MESHKIT_CRASH_ITERATIONS"); s != "" {
		iterations, _ = strconv.Atoi(s)
	}
	d := newDomain(t, "prod")
	dir := t.TempDir()
	rootEnv, seedPEM := exportDomain(t, d)
	if err := os.WriteFile(filepath.Join(dir, "root.bin"), rootEnv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "seed.key"), seedPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "agent")
	var last uint64
	for i := range iterations {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil { // "applying"
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("iteration %d: child did not start applying: %v", i, err)
		}
		time.Sleep(time.Duration(rand.IntN(40_000)) * time.Microsecond)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()

		v := loadVersion(t, d, data)
		if v < last {
			t.Fatalf("iteration %d: LKG rolled back from v%d to v%d", i, last, v)
		}
		last = v
	}
	if last < 10 {
		t.Fatalf("after %d kills the LKG is only at v%d: the child did not get to apply", iterations, last)
	}
	t.Logf("%d kills; LKG advanced to v%d, always verified", iterations, last)
}

// loadVersion starts an agent on data with no network and returns the version it serves.
func loadVersion(t *testing.T, d *domain, data string) uint64 {
	t.Helper()
	mn := mocknet.New()
	defer mn.Close()
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: data, Host: h, Clock: d.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, ok := a.Current()
	if !ok {
		if entries, _ := os.ReadDir(filepath.Join(data, "lkg")); len(entries) > 0 {
			t.Fatalf("LKG files exist (%d) but none verified", len(entries))
		}
		return 0
	}
	return b.Version
}

func exportDomain(t *testing.T, d *domain) (rootEnv, seedPEM []byte) {
	t.Helper()
	p, err := d.seed.MarshalPrivatePEM()
	if err != nil {
		t.Fatal(err)
	}
	return d.rootBytes, p
}

// crashChild applies bundles forever: the parent kills it.
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	rootEnv, err := os.ReadFile(filepath.Join(dir, "root.bin"))
	if err != nil {
		fail(err)
	}
	root, err := trust.VerifyRoot(rootEnv)
	if err != nil {
		fail(err)
	}
	kf, err := trust.LoadKeyFile(filepath.Join(dir, "seed.key"))
	if err != nil {
		fail(err)
	}
	d := &domain{name: root.Domain(), seed: kf.Private, root: root, clock: &fakeClock{Clock: clockwork.NewRealClock(), now: t0}}
	tb := &childTB{fail: fail}
	mn := mocknet.New()
	h, err := mn.GenPeer()
	if err != nil {
		fail(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: root, DataDir: filepath.Join(dir, "agent"), Host: h, Clock: d.clock})
	if err != nil {
		fail(err)
	}
	cur, have := a.Current()
	v := cur.Version
	prev := cur.Payload
	first := true
	for {
		v++
		p := d.payload(tb, v, 50+int(v%7)*40)
		msg := d.seal(tb, trust.PayloadBundle, p, d.seed)
		if have && v%2 == 0 {
			msg = d.delta(tb, prev, p)
		}
		if verdict := a.Replica().Validate(context.Background(), p2p.Message{Data: msg}); verdict != p2p.Accept {
			fail(fmt.Errorf("v%d: %s", v, verdict))
		}
		prev, have = p, true
		if first {
			fmt.Println("applying") // the parent's random delay starts after one apply
			first = false
		}
	}
}

// childTB lets the fixtures run outside a test.
type childTB struct {
	testing.TB
	fail func(error)
}

func (c *childTB) Helper()                      {}
func (c *childTB) Fatal(args ...any)            { c.fail(fmt.Errorf("%v", args...)) }
func (c *childTB) Fatalf(f string, args ...any) { c.fail(fmt.Errorf(f, args...)) }
