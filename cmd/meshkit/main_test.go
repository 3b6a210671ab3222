package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cli runs meshkit with args and returns its exit code and combined output.
func cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(args, &out, &out)
	return code, out.String()
}

// mustCLI runs meshkit and fails the test unless it exits 0.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out := cli(t, args...)
	if code != exitOK {
		t.Fatalf("meshkit %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

type env struct {
	dir string
}

func (e env) p(name string) string { return filepath.Join(e.dir, name) }

// setup makes keys, a root, and a signed v1 bundle of the examples.
func setup(t *testing.T) env {
	t.Helper()
	e := env{dir: t.TempDir()}
	mustCLI(t, "key", "gen", "--out", e.p("root.key"))
	mustCLI(t, "key", "gen", "--out", e.p("seed.key"))
	out := mustCLI(t, "root", "init", "--domain", "prod", "--root-key", e.p("root.key"), "--threshold", "1", "--seed-key", e.p("seed.key.pub"), "--expires", "30d", "--out", e.p("root.json"))
	if !strings.Contains(out, "fully signed") {
		t.Fatalf("root init: %s", out)
	}
	e.build(t, "1", "v1")
	return e
}

// build builds and signs version v of the examples as NAME.bundle.
func (e env) build(t *testing.T, version, name string, extra ...string) {
	t.Helper()
	args := append([]string{"bundle", "build", "-f", "../../examples/shop", "--domain", "prod", "--version", version, "--out", e.p(name + ".unsigned")}, extra...)
	mustCLI(t, args...)
	mustCLI(t, "bundle", "sign", "--key", e.p("seed.key"), "--in", e.p(name+".unsigned"), "--out", e.p(name+".bundle"))
}

func TestRoundTrip(t *testing.T) {
	e := setup(t)
	out := mustCLI(t, "bundle", "verify", "--root", e.p("root.json"), e.p("v1.bundle"))
	if !strings.HasPrefix(out, "OK bundle domain=prod epoch=1 version=1 hash=sha256:") || !strings.Contains(out, "signed-by=seed/seed") {
		t.Fatalf("summary = %q", out)
	}
	// The unsigned build is refused.
	if code, out := cli(t, "bundle", "verify", "--root", e.p("root.json"), e.p("v1.unsigned")); code != exitFail || !strings.Contains(out, "not signed") {
		t.Fatalf("unsigned: exit %d %s", code, out)
	}
	st, _ := os.Stat(e.p("seed.key"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("seed.key mode %04o", st.Mode().Perm())
	}
}

// TestEveryTamperedByteIsRefused flips each byte of a signed bundle in turn.
func TestEveryTamperedByteIsRefused(t *testing.T) {
	e := setup(t)
	orig, err := os.ReadFile(e.p("v1.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	bad := e.p("tampered.bundle")
	reasons := map[string]int{}
	for i := range orig {
		data := bytes.Clone(orig)
		data[i] ^= 0x20
		if err := os.WriteFile(bad, data, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out := cli(t, "bundle", "verify", "--root", e.p("root.json"), bad)
		if code != exitFail {
			t.Fatalf("byte %d flipped: exit %d, want 1\n%s", i, code, out)
		}
		reasons[strings.SplitN(strings.TrimPrefix(out, "meshkit bundle verify: trust: "), ":", 2)[0]]++
	}
	if reasons["bad signature"] == 0 {
		t.Errorf("no flip was reported as a bad signature: %v", reasons)
	}
	t.Logf("refusals of %d flipped bytes by reason: %v", len(orig), reasons)
}

func TestStateRefusesReplayAndRollback(t *testing.T) {
	e := setup(t)
	e.build(t, "2", "v2")
	state := e.p("state.json")
	verify := func(name string) (int, string) {
		return cli(t, "bundle", "verify", "--root", e.p("root.json"), "--state", state, e.p(name+".bundle"))
	}
	if code, out := verify("v1"); code != exitOK {
		t.Fatalf("v1: %s", out)
	}
	if code, out := verify("v1"); code != exitFail || !strings.Contains(out, "replay") {
		t.Fatalf("replayed v1: exit %d %s", code, out)
	}
	if code, out := verify("v2"); code != exitOK {
		t.Fatalf("v2: %s", out)
	}
	if code, out := verify("v1"); code != exitFail || !strings.Contains(out, "rollback") {
		t.Fatalf("v1 after v2: exit %d %s", code, out)
	}
	var s struct {
		Marks map[string]struct{ Version int } `json:"marks"`
	}
	data, _ := os.ReadFile(state)
	if err := json.Unmarshal(data, &s); err != nil || s.Marks["core/v1"].Version != 2 {
		t.Fatalf("state file %s: %v", data, err)
	}
	// A corrupt state file is an error, not a fresh start that would allow replays.
	os.WriteFile(state, []byte("{garbage"), 0o644)
	if code, out := verify("v2"); code != exitFail || !strings.Contains(out, "corrupt") {
		t.Fatalf("corrupt state: exit %d %s", code, out)
	}
}

func TestExpiredBundleIsRefused(t *testing.T) {
	e := setup(t)
	e.build(t, "3", "old", "--issued-at", "2020-01-01T00:00:00Z", "--expires", "1h")
	code, out := cli(t, "bundle", "verify", "--root", e.p("root.json"), e.p("old.bundle"))
	if code != exitFail || !strings.Contains(out, "expired") {
		t.Fatalf("exit %d %s", code, out)
	}
	// The same bundle verifies as of a time inside its window.
	mustCLI(t, "bundle", "verify", "--root", e.p("root.json"), "--at", "2020-01-01T00:30:00Z", e.p("old.bundle"))
}

func TestRootRotationAndMultiPartySigning(t *testing.T) {
	e := setup(t)
	mustCLI(t, "key", "gen", "--out", e.p("root2a.key"))
	mustCLI(t, "key", "gen", "--out", e.p("root2b.key"))
	mustCLI(t, "key", "gen", "--out", e.p("seed2.key"))
	// v2: two new root keys, threshold 2; signed now by the old root key and one new key.
	out := mustCLI(t, "root", "rotate", "--prev", e.p("root.json"), "--root-key", e.p("root2a.key")+","+e.p("root2b.key.pub"), "--threshold", "2",
		"--seed-key", e.p("seed2.key.pub"), "--sign-key", e.p("root.key"), "--out", e.p("2.root.json"))
	if !strings.Contains(out, "not yet valid") {
		t.Fatalf("rotation with one of two new signatures reported as complete: %s", out)
	}
	out = mustCLI(t, "root", "sign", "--key", e.p("root2b.key"), "--prev", e.p("root.json"), "--in", e.p("2.root.json"))
	if !strings.Contains(out, "fully signed") {
		t.Fatalf("root sign: %s", out)
	}
	out = mustCLI(t, "root", "verify", e.p("root.json"), e.p("2.root.json"))
	if !strings.Contains(out, "version=2") || !strings.Contains(out, "threshold 2 of 2 keys") {
		t.Fatalf("root verify: %s", out)
	}
	// The old seed key is rotated out: its bundle is refused under v2; the new key's verifies.
	code, out := cli(t, "bundle", "verify", "--root", e.p("root.json"), "--root-update", e.p("2.root.json"), e.p("v1.bundle"))
	if code != exitFail || !strings.Contains(out, "unknown key") {
		t.Fatalf("old seed under v2: exit %d %s", code, out)
	}
	mustCLI(t, "bundle", "sign", "--key", e.p("seed2.key"), "--in", e.p("v1.unsigned"), "--out", e.p("v1new.bundle"))
	mustCLI(t, "bundle", "verify", "--root", e.p("root.json"), "--root-update", e.p("2.root.json"), e.p("v1new.bundle"))
	// A rotation file tampered with is refused.
	data, _ := os.ReadFile(e.p("2.root.json"))
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(doc["payload"].(string))
	payload[len(payload)/2] ^= 1
	doc["payload"] = base64.StdEncoding.EncodeToString(payload)
	bad, _ := json.Marshal(doc)
	os.WriteFile(e.p("bad.root.json"), bad, 0o644)
	if code, _ := cli(t, "root", "verify", e.p("root.json"), e.p("bad.root.json")); code != exitFail {
		t.Fatalf("tampered rotation accepted (exit %d)", code)
	}
}

func TestInspectAndDiff(t *testing.T) {
	e := setup(t)
	out := mustCLI(t, "bundle", "inspect", "--output", "json", e.p("v1.bundle"))
	var ins struct {
		Hash       string   `json:"hash"`
		Signatures []string `json:"signatures"`
		Content    struct {
			Header struct {
				Domain string `json:"domain"`
			} `json:"header"`
			Routes []json.RawMessage `json:"routes"`
		} `json:"content"`
	}
	if err := json.Unmarshal([]byte(out), &ins); err != nil {
		t.Fatalf("inspect JSON: %v\n%s", err, out)
	}
	if ins.Content.Header.Domain != "prod" || len(ins.Content.Routes) != 4 || len(ins.Signatures) != 1 || !strings.HasPrefix(ins.Hash, "sha256:") {
		t.Fatalf("inspect = %+v", ins)
	}
	text := mustCLI(t, "bundle", "inspect", e.p("v1.bundle"))
	if !strings.Contains(text, "Route shop/checkout") {
		t.Fatalf("inspect text: %s", text)
	}
	e.build(t, "2", "v2")
	diff := mustCLI(t, "bundle", "diff", e.p("v1.bundle"), e.p("v2.bundle"))
	if !strings.Contains(diff, "~ header") || !strings.Contains(diff, "version") {
		t.Fatalf("diff: %s", diff)
	}
	if same := mustCLI(t, "bundle", "diff", e.p("v1.bundle"), e.p("v1.bundle")); !strings.Contains(same, "no differences") {
		t.Fatalf("diff of a bundle with itself: %s", same)
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "  meshkit [command]"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"--help"}, exitOK, "Available Commands:"},
		{[]string{"bundle", "frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"get", "--output", "xml", "Route"}, exitUsage, "--output must be one of"},
		{[]string{"status", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"bundle", "verify", "x"}, exitUsage, "--root is required"},
		{[]string{"bundle", "build", "-f", "x", "--domain", "prod", "--out", "y"}, exitUsage, "--version is required"},
		{[]string{"bundle", "build", "--help"}, exitOK, "--version"},
		{[]string{"root", "init", "--domain", "Bad Domain", "--out", "r"}, exitUsage, "not valid"},
		{[]string{"key", "gen"}, exitUsage, "--out is required"},
		{[]string{"bundle", "verify", "--root", "missing.json", "b"}, exitFail, "no such file"},
	}
	for _, tc := range cases {
		code, out := cli(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("meshkit %v: exit %d, output %q; want exit %d with %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}

func TestVersionAndDemo(t *testing.T) {
	if out := mustCLI(t, "version"); !strings.HasPrefix(out, "meshkit "+Version) {
		t.Fatalf("version = %q", out)
	}
	out := mustCLI(t, "demo")
	for _, want := range []string{"OK bundle", "bad signature", "replay", "expired", "demo complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}

// TestReadCommandsSpeakJSON: every command that reads and reports answers -o json with
// one JSON document (the seed-backed ones: TestOperatorCLIAgainstAProductionSeed).
func TestReadCommandsSpeakJSON(t *testing.T) {
	e := setup(t)
	e.build(t, "2", "v2")
	for _, args := range [][]string{
		{"version"},
		{"ext", "cid", e.p("root.json")},
		{"root", "verify", e.p("root.json")},
		{"bundle", "inspect", e.p("v1.bundle")},
		{"bundle", "verify", "--root", e.p("root.json"), e.p("v1.bundle")},
		{"bundle", "diff", e.p("v1.bundle"), e.p("v2.bundle")},
	} {
		out := mustCLI(t, append(args, "-o", "json")...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("meshkit %s -o json is not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
		if code, out := cli(t, append(args, "-o", "xml")...); code != exitUsage || !strings.Contains(out, "--output must be one of") {
			t.Errorf("meshkit %s -o xml: exit %d %q", strings.Join(args, " "), code, out)
		}
	}
}
