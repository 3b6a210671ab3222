package seed_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/seed/registry"
	"meshkit.dev/meshkit/trust"
)

const crashChildEnv = "MESHKIT_SEED_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if dir := os.Getenv(rssChildEnv); dir != "" {
		rssChild(dir)
		return
	}
	registry.RouteLogs(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	// Distribution's App starts an idle notification broadcaster it offers no way to stop
	// (handlers.App.Shutdown leaves it): one goroutine per registry, for the process's life.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
}

// crashChild applies one new cluster after another, publishing as it goes, and prints
// "ACK n" once apply n has returned success. It runs until it is killed.
func crashChild(dir string) {
	st, err := boltstore.Open(dir, 5*time.Second)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	_, seedKey := keys(nil)
	cfg := seed.DefaultConfig()
	cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store = "prod", 1, seedKey, st
	cfg.Debounce, cfg.MaxDelay = time.Millisecond, 5*time.Millisecond
	s, err := seed.New(context.Background(), cfg)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	api := s.AdminServer()
	start, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_START"))
	for i := start; ; i++ {
		o := bundle.Object{Kind: bundle.KindCluster, Metadata: &bundleMeta{Name: fmt.Sprintf("c-%d", i), Namespace: "crash"}, Spec: clusterSpec()}
		r, _ := seed.ResourceFromObject(o)
		if _, err := api.Apply(adminCtx(), &adminv1.ApplyRequest{Resources: []*adminv1.Resource{r}}); err != nil {
			fmt.Println("ERR", err)
			os.Exit(3)
		}
		fmt.Printf("ACK %d\n", i)
	}
}

// TestKill9DuringApplyAndPublish kills a seed at random points, many times, on one data
// directory: every time it reopens with a verifying audit chain, the stored state is the
// one the newest entry recorded, and every acknowledged apply is there.
func TestKill9DuringApplyAndPublish(t *testing.T) {
	dir := t.TempDir()
	iterations := 25
	if testing.Short() {
		iterations = 5
	}
	rng := rand.New(rand.NewPCG(42, 42))
	acked := -1
	for it := 0; it < iterations; it++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashChildEnv+"_START="+strconv.Itoa(acked+1))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		killAfter := time.Duration(rng.IntN(40)) * time.Millisecond
		var timer <-chan time.Time
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				if n, found := strings.CutPrefix(line, "ACK "); found {
					acked, _ = strconv.Atoi(n)
					if timer == nil {
						timer = time.After(killAfter)
					}
				} else {
					t.Fatalf("child: %s", line)
				}
			case <-timer:
				cmd.Process.Signal(syscall.SIGKILL)
				timer = nil
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatal("child made no progress")
			}
		}
		cmd.Wait()

		st, err := boltstore.Open(dir, 5*time.Second)
		if err != nil {
			t.Fatalf("iteration %d: reopen: %v", it, err)
		}
		res, err := seed.VerifyStore(context.Background(), st)
		if err != nil {
			st.Close()
			t.Fatalf("iteration %d: after kill -9 the store does not verify: %v", it, err)
		}
		loaded, _ := st.Load(context.Background())
		have := map[string]bool{}
		for _, r := range loaded.Resources {
			have[r.GetMetadata().GetName()] = true
		}
		st.Close()
		for i := 0; i <= acked; i++ {
			if !have[fmt.Sprintf("c-%d", i)] {
				t.Fatalf("iteration %d: acknowledged apply c-%d was lost (%d entries)", it, i, res.GetEntries())
			}
		}
		// A real seed starts on the directory (its start-up check of log against state
		// passes), and publishes every acknowledged apply: none stays unpublished because
		// the kill fell between an apply and the publish after it.
		ts := open(t, dir)
		published := publishedClusters(t, ts)
		ts.close()
		for i := 0; i <= acked; i++ {
			if !published[fmt.Sprintf("c-%d", i)] {
				t.Fatalf("iteration %d: acknowledged apply c-%d is stored but was not published after the restart", it, i)
			}
		}
	}
	if acked < iterations {
		t.Fatalf("only %d applies acknowledged over %d runs", acked+1, iterations)
	}
	t.Logf("%d kill -9 runs, %d acknowledged applies, none lost", iterations, acked+1)
}

// publishedClusters waits until ts has nothing pending and returns the names of the
// clusters in the bundle it publishes.
func publishedClusters(t *testing.T, ts *testSeed) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for ts.Status().GetPending() {
		if time.Now().After(deadline) {
			t.Fatalf("still pending after 20 s: %v", ts.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := ts.api.GetBundle(adminCtx(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("the newest published bundle: %v", err)
	}
	env, err := trust.DecodeEnvelope(resp.GetEnvelope(), 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.DecodeBundle(env.GetPayload())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range b.GetClusters() {
		out[c.GetMetadata().GetName()] = true
	}
	return out
}
