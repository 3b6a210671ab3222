// Package deps_test enforces MeshKit's import boundaries (MISSION.md section 4):
// node, seed and bridge never import one another; the shared pipeline (replica, publish)
// imports no role; nothing imports sim or cmd; trust and wasm import nothing of MeshKit's
// but the generated schemas in proto/.
package deps_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "meshkit.dev/meshkit"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// rule says that packages under from must not import (directly or transitively) any
// MeshKit package for which forbidden returns true.
type rule struct {
	from      string
	forbidden func(dep string) bool
	why       string
}

func under(prefix string) func(string) bool {
	return func(p string) bool { return p == module+"/"+prefix || strings.HasPrefix(p, module+"/"+prefix+"/") }
}

func rules() []rule {
	ours := func(p string) bool { return strings.HasPrefix(p, module+"/") || p == module }
	onlyProto := func(p string) bool { return ours(p) && !under("proto")(p) }
	role := func(p string) bool { return under("node")(p) || under("seed")(p) || under("bridge")(p) }
	return []rule{
		{"node", func(p string) bool { return under("seed")(p) || under("bridge")(p) }, "node must not import seed or bridge"},
		{"seed", func(p string) bool { return under("node")(p) || under("bridge")(p) }, "seed must not import node or bridge"},
		{"bridge", func(p string) bool { return under("node")(p) || under("seed")(p) }, "bridge must not import node or seed"},
		{"replica", role, "replica is the role-neutral receive side: it imports no role"},
		{"publish", role, "publish is the role-neutral send side: it imports no role"},
		{"trust", onlyProto, "trust imports nothing of ours but proto"},
		{"ca", func(p string) bool { return ours(p) && !under("internal")(p) }, "ca is policy and signing only: it imports nothing of ours but internal"},
		{"wasm", onlyProto, "wasm imports nothing of ours but proto"},
		{"p2p", func(p string) bool { return ours(p) && !under("proto")(p) && !under("internal")(p) }, "p2p is transport only: it imports nothing of ours but proto and internal"},
		{"", func(p string) bool { return under("sim")(p) }, "nothing but cmd imports sim"},
		{"", func(p string) bool { return under("cmd")(p) }, "nothing imports cmd"},
	}
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// violations returns the broken rules for the package set (test files are not included:
// go list reports the imports of the non-test build only).
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		for _, r := range rules() {
			if r.from != "" && !under(r.from)(p.ImportPath) {
				continue
			}
			if r.from == "" && (under("cmd")(p.ImportPath) || isSelf(r, p.ImportPath)) {
				continue
			}
			for _, d := range slices.Concat(p.Imports, p.Deps) {
				if r.forbidden(d) && d != p.ImportPath {
					out = append(out, fmt.Sprintf("%s imports %s: %s", p.ImportPath, d, r.why))
					break
				}
			}
		}
	}
	return out
}

// isSelf exempts a package from a global rule about its own subtree.
func isSelf(r rule, path string) bool { return r.forbidden(path) }

func TestImportBoundaries(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestRulesCatchViolations proves the checker can fail, on synthetic packages.
func TestRulesCatchViolations(t *testing.T) {
	bad := []pkg{
		{ImportPath: module + "/node", Imports: []string{module + "/seed"}},
		{ImportPath: module + "/trust", Deps: []string{module + "/bundle"}},
		{ImportPath: module + "/wasm", Imports: []string{module + "/content"}},
		{ImportPath: module + "/seed", Imports: []string{module + "/sim"}},
		{ImportPath: module + "/bridge", Imports: []string{module + "/cmd/meshkit"}},
		{ImportPath: module + "/replica", Deps: []string{module + "/node"}},
		{ImportPath: module + "/publish", Imports: []string{module + "/seed"}},
		{ImportPath: module + "/ca", Imports: []string{module + "/proto/meshkit/admin/v1"}},
	}
	if got := violations(bad); len(got) != len(bad) {
		t.Fatalf("caught %d of %d violations: %v", len(got), len(bad), got)
	}
	good := []pkg{
		{ImportPath: module + "/trust", Imports: []string{module + "/proto/meshkit/trust/v1", "crypto/ed25519"}},
		{ImportPath: module + "/cmd/meshkit", Imports: []string{module + "/sim", module + "/node"}},
		{ImportPath: module + "/sim", Imports: []string{module + "/node", module + "/seed"}},
		{ImportPath: module + "/bridge", Imports: []string{module + "/replica", module + "/publish"}},
		{ImportPath: module + "/replica", Imports: []string{module + "/p2p", module + "/trust", module + "/bundle"}},
	}
	if got := violations(good); len(got) != 0 {
		t.Fatalf("false positives: %v", got)
	}
}
