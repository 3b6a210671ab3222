package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshkit.dev/meshkit/node"
)

// proc is a meshkit process the test owns.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func startProc(t *testing.T, bin, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// If the test process dies without its cleanups, its children die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
		_ = f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log ---\n%s", name, b)
		}
	})
	return p
}

// waitEndpoint waits for DATA/p2p.json written once a fresh process listens.
func waitEndpoint(t *testing.T, data string, since time.Time) endpoint {
	t.Helper()
	path := filepath.Join(data, "p2p.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && !st.ModTime().Before(since) {
			b, err := os.ReadFile(path)
			if err == nil {
				var ep endpoint
				if json.Unmarshal(b, &ep) == nil && len(ep.Addrs) > 0 {
					return ep
				}
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agentStatus runs `meshkit agent status --output json` against an agent.
func agentStatus(t *testing.T, bin, httpAddr string) (node.Status, error) {
	t.Helper()
	out, err := exec.Command(bin, "agent", "status", "--addr", httpAddr, "--output", "json").Output()
	if err != nil {
		return node.Status{}, err
	}
	var st node.Status
	return st, json.Unmarshal(out, &st)
}

func waitServing(t *testing.T, bin, httpAddr string, version uint64) node.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := agentStatus(t, bin, httpAddr)
		if err == nil && st.Serving.Version >= version {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent at %s does not serve v%d: %+v (err %v)", httpAddr, version, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSeedAndAgentsAsProcesses is the "done when", with separate processes on
// loopback: a change applied at the seed reaches three agents; with the seed killed the
// agents keep serving and a new agent gets the bundle from them; an agent restarted with
// the seed down serves its last-known-good at once.
func TestSeedAndAgentsAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs five processes")
	}
	bin := filepath.Join(t.TempDir(), "meshkit")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	seedData := t.TempDir()
	grpcAddr := freeAddr(t)
	start := time.Now()
	seedProc := startProc(t, bin, "seed", "seed", "--dev", "--data", seedData, "--grpc-addr", grpcAddr, "--http-addr", freeAddr(t),
		"--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--debounce", "10ms")
	seedEP := waitEndpoint(t, seedData, start)
	root := filepath.Join(seedData, "trust", "root.json")

	startAgent := func(name, data string, bootstrap ...string) (*proc, endpoint) {
		args := []string{"agent", "--data", data, "--root", root, "--listen", "/ip4/127.0.0.1/tcp/0", "--http-addr", "127.0.0.1:0", "--southbound-addr", "127.0.0.1:0", "--sync-interval", "1s"}
		for _, b := range bootstrap {
			args = append(args, "--bootstrap", b)
		}
		since := time.Now()
		p := startProc(t, bin, name, args...)
		return p, waitEndpoint(t, data, since)
	}
	var agents []*proc
	var eps []endpoint
	var dirs []string
	for i := range 3 {
		dirs = append(dirs, t.TempDir())
		p, ep := startAgent("agent"+string(rune('1'+i)), dirs[i], seedEP.Addrs[0])
		agents, eps = append(agents, p), append(eps, ep)
	}

	if out, err := exec.Command(bin, "apply", "-f", "../../examples/shop", "--seed", grpcAddr).CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "delete", "AuthzPolicy", "deny-admin-paths", "--namespace", "shop", "--seed", grpcAddr).CombinedOutput(); err != nil {
		t.Fatalf("delete: %v\n%s", err, out) // output shows why
	}
	var want node.HeadStatus
	for i, ep := range eps {
		st := waitServing(t, bin, ep.HTTPAddr, 2)
		if i == 0 {
			want = st.Serving
		} else if st.Serving.Hash != want.Hash {
			t.Fatalf("agent %d serves %s, agent 1 %s", i+1, st.Serving.Hash, want.Hash)
		}
	}

	// The seed dies. The agents keep serving, and a new agent joining through agent 1
	// gets the bundle from the agents.
	seedProc.kill9(t)
	for _, ep := range eps {
		if st, err := agentStatus(t, bin, ep.HTTPAddr); err != nil || st.Serving.Hash != want.Hash {
			t.Fatalf("with the seed down an agent serves %+v (err %v)", st.Serving, err)
		}
	}
	_, ep4 := startAgent("agent4", t.TempDir(), eps[0].Addrs[0])
	if st := waitServing(t, bin, ep4.HTTPAddr, want.Version); st.Serving.Hash != want.Hash {
		t.Fatalf("the new agent serves %s, want %s", st.Serving.Hash, want.Hash)
	}

	// An agent killed and restarted with the seed down serves its LKG at once.
	agents[1].kill9(t)
	_, ep2 := startAgent("agent2-restarted", dirs[1], seedEP.Addrs[0])
	st, err := agentStatus(t, bin, ep2.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Serving.Hash != want.Hash || !st.Serving.FromLKG {
		t.Fatalf("restarted agent serves %+v, want %s from its LKG", st.Serving, want.Hash)
	}
	if !strings.HasPrefix(st.Serving.Hash, "sha256:") {
		t.Fatalf("hash %q", st.Serving.Hash)
	}
}
