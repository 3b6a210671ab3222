package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer goroutine and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startSeed runs `meshkit seed` in-process until the test ends.
func startSeed(t *testing.T, data string, extra ...string) (grpcAddr string) {
	t.Helper()
	grpcAddr, _ = startSeedAddrs(t, data, extra...)
	return grpcAddr
}

// startSeedAddrs is startSeed, returning the HTTP address (REST and the registry) too.
func startSeedAddrs(t *testing.T, data string, extra ...string) (grpcAddr, httpAddr string) {
	t.Helper()
	grpcAddr, httpAddr = freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	a := &app{ctx: ctx, stdout: out, stderr: out, now: time.Now}
	done := make(chan int)
	go func() {
		done <- a.main(append([]string{"seed", "--data", data, "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--debounce", "10ms", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"}, extra...))
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("seed exited %d:\n%s", code, out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "serving admin gRPC") {
		if time.Now().After(deadline) {
			t.Fatalf("seed did not start:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return grpcAddr, httpAddr
}

func TestSeedApplyFetchVerify(t *testing.T) {
	data := t.TempDir()
	addr := startSeed(t, data)
	tok := filepath.Join(data, "admin.token")
	st, _ := os.Stat(tok)
	if st == nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file missing or not 0600: %v", st)
	}
	c := func(args ...string) []string { return append(args, "--seed", addr, "--token-file", tok) }

	out := mustCLI(t, c("apply", "-f", "../../examples/shop")...)
	if !strings.Contains(out, "applied 13 resource(s)") {
		t.Fatalf("apply: %s", out)
	}
	if code, out := cli(t, "get", "Route", "--seed", addr); code != exitFail || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("get without a token: exit %d %s", code, out)
	}
	// get --output yaml round-trips: applying it back changes nothing.
	yml := mustCLI(t, c("get", "Route", "--namespace", "shop", "--output", "yaml")...)
	os.WriteFile(filepath.Join(data, "routes.yaml"), []byte(yml), 0o644)
	if out := mustCLI(t, c("apply", "-f", filepath.Join(data, "routes.yaml"))...); !strings.Contains(out, "no changes") {
		t.Fatalf("re-applying get's YAML changed something:\n%s\n%s", yml, out)
	}
	// Published, fetched and verified with the seed's root.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := cli(t, c("bundle", "fetch", "--out", filepath.Join(data, "v1.bundle"))...)
		if code == exitOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing was published")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := mustCLI(t, "bundle", "verify", "--root", filepath.Join(data, "trust", "root.json"), filepath.Join(data, "v1.bundle")); !strings.Contains(out, "OK bundle domain=dev") {
		t.Fatalf("verify: %s", out)
	}
	var hist struct {
		Publications []struct {
			Version string `json:"version"`
		} `json:"publications"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, c("history", "--output", "json")...)), &hist); err != nil || len(hist.Publications) == 0 {
		t.Fatalf("history: %v %+v", err, hist)
	}
	if code, out := cli(t, c("delete", "Cluster", "inventory", "--namespace", "shop")...); code != exitFail || !strings.Contains(out, "still referenced") {
		t.Fatalf("delete of a referenced cluster: exit %d %s", code, out)
	}
	if code, out := cli(t, c("apply", "-f", "../../bundle/testdata/does-not-exist")...); code != exitFail {
		t.Fatalf("apply of a missing path: exit %d %s", code, out)
	}
	if out := mustCLI(t, c("audit", "verify")...); !strings.Contains(out, "OK audit chain") {
		t.Fatalf("audit verify: %s", out)
	}
	if out := mustCLI(t, c("audit")...); !strings.Contains(out, "apply   by admin-token") {
		t.Fatalf("audit: %s", out)
	}
}

func TestSeedRefusesAKeyTheRootDoesNotDelegate(t *testing.T) {
	dir := t.TempDir()
	mustCLI(t, "key", "gen", "--out", filepath.Join(dir, "root.key"))
	mustCLI(t, "key", "gen", "--out", filepath.Join(dir, "seed.key"))
	mustCLI(t, "key", "gen", "--out", filepath.Join(dir, "other.key"))
	mustCLI(t, "root", "init", "--domain", "prod", "--root-key", filepath.Join(dir, "root.key"), "--seed-key", filepath.Join(dir, "seed.key.pub"), "--out", filepath.Join(dir, "root.json"))
	code, out := cli(t, "seed", "--data", filepath.Join(dir, "data"), "--key", filepath.Join(dir, "other.key"), "--root", filepath.Join(dir, "root.json"))
	if code != exitFail || !strings.Contains(out, "is not in the seed role") {
		t.Fatalf("exit %d %s", code, out)
	}
	if code, out := cli(t, "seed", "--data", dir, "--dev", "--grpc-addr", "0.0.0.0:17400"); code != exitUsage || !strings.Contains(out, "loopback") {
		t.Fatalf("--dev on a public address: exit %d %s", code, out)
	}
}

// TestNoBearerTokenInClearOffLoopback: with a token and no TLS, a command aimed at a seed
// off loopback refuses before sending anything, naming the flags that fix it.
func TestNoBearerTokenInClearOffLoopback(t *testing.T) {
	t.Setenv("MESHKIT_TOKEN", "s3cret")
	for _, args := range [][]string{
		{"get", "Route", "--seed", "seed.invalid:17400"},
		{"status", "--seed", "seed.invalid:17400"},
		{"ext", "push", "x.wasm", "--name", "x", "--abi", "proxy-wasm/0.2.1", "--seed", "seed.invalid:17400"},
	} {
		code, out := cli(t, args...)
		if code != exitUsage || !strings.Contains(out, "refusing to send the bearer token without TLS to seed.invalid:17400") ||
			!strings.Contains(out, "--tls-ca") || !strings.Contains(out, "--insecure") || strings.Contains(out, "s3cret") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
}

// TestPrintableEscapesWhatTerminalsActOn: text from agents is printed as it is when plain,
// and quoted with its control characters escaped otherwise.
func TestPrintableEscapesWhatTerminalsActOn(t *testing.T) {
	for in, want := range map[string]string{
		"route shop/checkout: unknown cluster": "route shop/checkout: unknown cluster",
		`says "hi"`:                            `says "hi"`,
		"\x1b]0;pwned\x07":                     `"\x1b]0;pwned\a"`,
		"red \x1b[31mtext":                     `"red \x1b[31mtext"`,
		"bad \xff utf8":                        `"bad \xff utf8"`,
		`back\slash`:                           `"back\\slash"`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %s, want %s", in, got, want)
		}
	}
}
