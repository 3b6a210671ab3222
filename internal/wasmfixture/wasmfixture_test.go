package wasmfixture

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tetratelabs/wazero"
)

// wat2wasm returns the path of wat2wasm, skipping t when it is absent unless
// MESHKIT_REQUIRE_WAT2WASM is set (as `make check` sets it): the fixtures never need it,
// only the check that they agree with their sources.
func wat2wasm(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("wat2wasm")
	if err != nil {
		if os.Getenv("MESHKIT_REQUIRE_WAT2WASM") != "" {
			t.Fatal("wat2wasm not on PATH (apt-get install wabt); MESHKIT_REQUIRE_WAT2WASM is set")
		}
		t.Skip("wat2wasm not on PATH (apt-get install wabt): the committed binaries are not compared with their sources")
	}
	return p
}

func compileText(t *testing.T, bin string, text []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(bin, in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v: %s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEverySourceHasABinary(t *testing.T) {
	if !slices.Equal(Names(), Sources()) {
		t.Fatalf("binaries %v, sources %v: run `make wasm-fixtures`", Names(), Sources())
	}
	if len(Names()) < 7 {
		t.Fatalf("only %d fixtures embedded: %v", len(Names()), Names())
	}
}

// TestCommittedModulesMatchTheirSources rebuilds every fixture from its text and compares
// it with the committed binary, so that the text stays the truth about each module.
func TestCommittedModulesMatchTheirSources(t *testing.T) {
	bin := wat2wasm(t)
	for _, name := range Sources() {
		t.Run(name, func(t *testing.T) {
			if got, want := Module(t, name), compileText(t, bin, Source(t, name)); !bytes.Equal(got, want) {
				t.Fatalf("testdata/%s.wasm (%d bytes) is not what wat2wasm makes of testdata/%s.wat (%d bytes): run `make wasm-fixtures`",
					name, len(got), name, len(want))
			}
		})
	}
}

// TestLargeMatchesWat2wasm holds the Go encoder to wat2wasm's output for the same text,
// for both shapes the benchmarks use and negative, multi-byte and single-byte constants.
func TestLargeMatchesWat2wasm(t *testing.T) {
	bin := wat2wasm(t)
	for _, tc := range []struct{ size, perFunc int }{{40 << 10, 64}, {40 << 10, 1}, {3 << 10, 3}, {0, 1}} {
		got, want := Large(tc.size, tc.perFunc), compileText(t, bin, LargeText(tc.size, tc.perFunc))
		if !bytes.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Fatalf("Large(%d, %d): %d bytes, wat2wasm %d; first difference at byte %d", tc.size, tc.perFunc, len(got), len(want), i)
		}
	}
}

// TestLargeIsAValidProxyWasmModule compiles what Large encodes with wazero and checks its
// shape, without wat2wasm: the benchmarks depend on it being admissible.
func TestLargeIsAValidProxyWasmModule(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	const size, perFunc = 64 << 10, 8
	m, err := rt.CompileModule(ctx, Large(size, perFunc))
	if err != nil {
		t.Fatal(err)
	}
	exports := m.ExportedFunctions()
	for _, name := range []string{"proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_context_create"} {
		if _, ok := exports[name]; !ok {
			t.Errorf("does not export %s", name)
		}
	}
	if _, ok := m.ExportedMemories()["memory"]; !ok {
		t.Error("does not export its memory")
	}
	if len(Large(size, perFunc)) < size/4 {
		t.Errorf("Large(%d) is only %d bytes", size, len(Large(size, perFunc)))
	}
}
