package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshkit.dev/meshkit/bundle"
)

// bin runs the built meshkit binary as a user would: env adds to the environment, the
// exit code and combined output come back.
type bin struct {
	path string
	env  []string
}

func (b bin) run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(b.path, args...)
	cmd.Env = append(os.Environ(), b.env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("meshkit %v: %v", args, err)
	}
	return code, string(out)
}

func (b bin) must(t *testing.T, args ...string) string {
	t.Helper()
	code, out := b.run(t, args...)
	if code != 0 {
		t.Fatalf("meshkit %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (b bin) as(token string) bin {
	return bin{path: b.path, env: append(append([]string{}, b.env...), "MESHKIT_TOKEN="+token)}
}

func buildMeshkit(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meshkit")
	if out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return path
}

// TestOperatorCLIAgainstAProductionSeed drives the built binary as an operator would,
// against a seed with real keys and a --policy file (RBAC on, not --dev), and an agent,
// both on their default p2p ports: the GitOps loop (get -o yaml, edit, diff, apply),
// refusals that point into the files, apply --wait, principals added while the seed runs,
// messages that say what to do, shell completion and -o.
func TestOperatorCLIAgainstAProductionSeed(t *testing.T) {
	mk := bin{path: buildMeshkit(t)}
	work := t.TempDir()
	p := func(name string) string { return filepath.Join(work, name) }

	// Trust material and principals, made as an operator makes them.
	mk.must(t, "key", "gen", "--out", p("root.key"))
	mk.must(t, "key", "gen", "--out", p("seed.key"))
	mk.must(t, "root", "init", "--domain", "prod", "--root-key", p("root.key"), "--seed-key", p("seed.key.pub"), "--expires", "30d", "--out", p("root.json"))
	example, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("policy.yaml"), example, 0o600); err != nil {
		t.Fatal(err)
	}
	out := mk.must(t, "policy", "add", "--name", "ops", "--scope", "mesh.admin", "--tenant", "*", "--policy", p("policy.yaml"))
	opsToken := tokenIn(t, out)
	if b, _ := os.ReadFile(p("policy.yaml")); bytes.Contains(b, []byte(opsToken)) || !bytes.Contains(b, []byte("name: acme-ci")) {
		t.Fatalf("the policy file holds the token itself, or lost the example's principals:\n%s", b)
	}

	// The seed, in production form, and an agent on the same host: default p2p ports.
	data := p("seed-data")
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	since := time.Now()
	seedProc := startProc(t, mk.path, "seed", "seed", "--data", data, "--key", p("seed.key"), "--root", p("root.json"),
		"--policy", p("policy.yaml"), "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--debounce", "10ms")
	ep := waitEndpoint(t, data, since)
	if !strings.Contains(strings.Join(ep.Addrs, " "), "/tcp/17410/") {
		t.Fatalf("the seed's default p2p port is not 17410: %v", ep.Addrs)
	}
	for _, name := range []string{"trust", "admin.token"} {
		if _, err := os.Stat(filepath.Join(data, name)); err == nil {
			t.Errorf("a seed given real keys and a policy made dev material: %s", name)
		}
	}
	agentData := p("agent-data")
	since = time.Now()
	startProc(t, mk.path, "agent", "agent", "--data", agentData, "--root", p("root.json"), "--bootstrap", loopbackAddr(t, ep.Addrs))
	if aep := waitEndpoint(t, agentData, since); !strings.Contains(strings.Join(aep.Addrs, " "), "/tcp/17411/") || aep.HTTPAddr != "127.0.0.1:17481" {
		t.Fatalf("the agent's default p2p port is not 17411, or its HTTP address not 127.0.0.1:17481: %v %s", aep.Addrs, aep.HTTPAddr)
	}
	help := mk.must(t, "seed", "--help")
	for _, want := range []string{`"127.0.0.1:17400"`, `"127.0.0.1:17480"`} {
		if !strings.Contains(help, want) {
			t.Errorf("seed --help does not give the default %s", want)
		}
	}

	ops := bin{path: mk.path, env: []string{"MESHKIT_SEED=" + grpcAddr}}.as(opsToken)

	// Refusals name the command and say what to do next.
	code, out := bin{path: mk.path, env: []string{"MESHKIT_SEED=" + grpcAddr}}.run(t, "status")
	if code != 1 || !strings.HasPrefix(out, "meshkit status: Unauthenticated") || !strings.Contains(out, "MESHKIT_TOKEN") {
		t.Errorf("status without a token: exit %d %q", code, out)
	}
	if code, out := ops.as("example-ci-token").run(t, "audit"); code != 1 || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "meshkit policy add") {
		t.Errorf("audit by acme-ci: exit %d %q", code, out)
	}
	if code, out := ops.run(t, "audit", "verify", "--data", p("nowhere")); code != 1 || !strings.HasPrefix(out, "meshkit audit verify: ") {
		t.Errorf("audit verify of a missing directory: exit %d %q", code, out)
	}
	if code, out := ops.run(t, "status", "--seed", "127.0.0.1:1", "--timeout", "3s"); code != 1 || !strings.Contains(out, "--seed or MESHKIT_SEED") {
		t.Errorf("status of a seed that is not there: exit %d %q", code, out)
	}

	// A refusal of the seed points into the files.
	bad := p("bad")
	copyDir(t, "../../examples/shop", bad)
	routes := filepath.Join(bad, "routes.yaml")
	b, _ := os.ReadFile(routes)
	if err := os.WriteFile(routes, bytes.Replace(b, []byte("cluster: frontend"), []byte("cluster: nowhere"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	located := regexp.MustCompile(`Route shop/storefront \(.*bad/routes\.yaml:\d+\): spec\.cluster`)
	if code, out := ops.run(t, "apply", "-f", bad); code != 1 || !located.MatchString(out) {
		t.Errorf("apply of a broken file: exit %d %q", code, out)
	}
	if code, out := ops.run(t, "diff", "-f", bad); code != 2 || !located.MatchString(out) {
		t.Errorf("diff of a broken file: exit %d %q", code, out)
	}

	// apply --wait returns once the change is published, and --wait=agents once the agent
	// serves it.
	out = ops.must(t, "apply", "-f", "../../examples/shop", "--wait")
	if !strings.Contains(out, "published: epoch 1 version 1") {
		t.Fatalf("apply --wait: %s", out)
	}

	// The GitOps loop: get -o yaml, edit, diff, apply.
	cluster := p("checkout-v2.yaml")
	yamlOut := ops.must(t, "get", "Cluster", "checkout-v2", "-n", "shop", "-o", "yaml")
	if err := os.WriteFile(cluster, []byte(yamlOut), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := ops.run(t, "diff", "-f", cluster); code != 0 || out != "" {
		t.Fatalf("diff of what get printed: exit %d %q", code, out)
	}
	if err := os.WriteFile(cluster, []byte(strings.Replace(yamlOut, "connectTimeout: 500ms", "connectTimeout: 750ms", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = ops.run(t, "diff", "-f", cluster)
	if code != 1 || !strings.Contains(out, "--- live/Cluster/shop/checkout-v2\n+++ merged/Cluster/shop/checkout-v2\n") ||
		!strings.Contains(out, "\n-  connectTimeout: 500ms\n+  connectTimeout: 750ms\n") {
		t.Fatalf("diff of an edit: exit %d\n%s", code, out)
	}
	code, out = ops.run(t, "diff", "-f", cluster, "-o", "json")
	var changes struct {
		Changes []yamlChange `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &changes); code != 1 || err != nil || len(changes.Changes) != 1 ||
		changes.Changes[0].Op != "~" || changes.Changes[0].Name != "checkout-v2" || !strings.HasSuffix(changes.Changes[0].Source, "checkout-v2.yaml:1") {
		t.Fatalf("diff -o json: exit %d %v\n%s", code, err, out)
	}
	if out := ops.must(t, "apply", "--dry-run", "-f", cluster); !strings.Contains(out, "+  connectTimeout: 750ms") || !strings.Contains(out, "nothing stored") {
		t.Fatalf("apply --dry-run: %s", out)
	}
	if out := ops.must(t, "apply", "-f", cluster, "--wait=agents", "--wait-timeout", "60s"); !strings.Contains(out, "published: epoch 1 version 2") || !strings.Contains(out, "served by 1 of 1 reporting agent(s)") {
		t.Fatalf("apply --wait=agents: %s", out)
	}
	if code, out := ops.run(t, "diff", "-f", cluster); code != 0 {
		t.Fatalf("diff after the apply: exit %d %q", code, out)
	}

	// Every kind the examples hold comes back from get -o yaml as it applies: no diff,
	// and the same bytes after a second round.
	objs, err := bundle.LoadPath("../../examples/shop")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.Kind] = true
	}
	for kind := range kinds {
		first := ops.must(t, "get", kind, "-o", "yaml")
		f := p(kind + ".yaml")
		if err := os.WriteFile(f, []byte(first), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := ops.run(t, "diff", "-f", f); code != 0 {
			t.Errorf("get %s -o yaml does not apply back unchanged: exit %d\n%s", kind, code, out)
		}
		if out := ops.must(t, "apply", "-f", f); !strings.Contains(out, "no changes") {
			t.Errorf("apply of get %s -o yaml changed something: %s", kind, out)
		}
		if again := ops.must(t, "get", kind, "-o", "yaml"); again != first {
			t.Errorf("get %s -o yaml is not stable:\n%s\nthen\n%s", kind, first, again)
		}
	}

	// A principal added while the seed runs works once the seed rereads its policy.
	out = mk.must(t, "policy", "add", "--name", "late", "--scope", "mesh.read", "--tenant", "acme", "--policy", p("policy.yaml"))
	late := ops.as(tokenIn(t, out))
	if err := seedProc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, out := late.run(t, "get", "Route", "-o", "json")
		if code == 0 && strings.Contains(out, "storefront") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the principal added to the policy file is not accepted: exit %d %q", code, out)
		}
	}

	// Without a signal too: the seed notices the file changed. Removing a principal takes
	// its token away.
	b, err = os.ReadFile(p("policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("  - name: late"))
	if i < 0 {
		t.Fatalf("no principal late in\n%s", b)
	}
	if err := os.WriteFile(p("policy.yaml"), b[:i], 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, out := late.run(t, "get", "Route")
		if code == 1 && strings.Contains(out, "unknown bearer token") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a principal removed from the policy file still works: exit %d %q", code, out)
		}
	}

	// The policy format is in the seed's help; nothing is coloured.
	if out := mk.must(t, "seed", "--help"); !strings.Contains(out, "tokenSHA256:") || !strings.Contains(out, "meshkit policy add") {
		t.Errorf("seed --help does not describe the policy file:\n%s", out)
	}
	if code, out := ops.run(t, "diff", "-f", bad); strings.Contains(out, "\x1b[") || code != 2 {
		t.Errorf("output carries terminal escapes: %q", out)
	}

	// Output conventions: -o json on reads, flags after positional arguments, completion.
	var st map[string]any
	if err := json.Unmarshal([]byte(ops.must(t, "status", "-o", "json")), &st); err != nil || st["domain"] != "prod" {
		t.Errorf("status -o json: %v %v", st, err)
	}
	for _, args := range [][]string{{"get", "Route", "storefront", "-n", "shop", "-o", "json"}, {"history", "-o", "json"}, {"audit", "-o", "json"}, {"audit", "verify", "-o", "json"}} {
		var v any
		if out := ops.must(t, args...); json.Unmarshal([]byte(out), &v) != nil {
			t.Errorf("meshkit %s is not JSON: %s", strings.Join(args, " "), out)
		}
	}
	if err := json.Unmarshal([]byte(mk.must(t, "version", "-o", "json")), &st); err != nil || st["version"] != Version {
		t.Errorf("version -o json: %v %v", st, err)
	}
	for shell, want := range map[string]string{"bash": "__start_meshkit", "zsh": "#compdef meshkit", "fish": "complete -c meshkit"} {
		if out := mk.must(t, "completion", shell); !strings.Contains(out, want) {
			t.Errorf("completion %s lacks %q", shell, want)
		}
	}
	if out := mk.must(t, "__complete", "apply", "--wa"); !strings.Contains(out, "--wait") || !strings.Contains(out, "--wait-share") {
		t.Errorf("flag completion of apply --wa: %q", out)
	}
}

// tokenIn finds the token `meshkit policy add` printed.
func tokenIn(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`token \(shown once[^)]*\): ([0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token in %q", out)
	}
	return m[1]
}

// loopbackAddr picks the 127.0.0.1 address of a listener on every interface.
func loopbackAddr(t *testing.T, addrs []string) string {
	t.Helper()
	for _, a := range addrs {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			return a
		}
	}
	t.Fatalf("no loopback address in %v", addrs)
	return ""
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}
