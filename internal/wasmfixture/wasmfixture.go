// Package wasmfixture holds the Wasm modules MeshKit's tests admit, so that the tests need
// nothing but Go.
//
// Each small module is committed twice: its WebAssembly text (testdata/NAME.wat), which
// says what the module is for, and the binary wat2wasm made of it (testdata/NAME.wasm),
// which the tests use. `make wasm-fixtures` regenerates the binaries, and
// TestCommittedModulesMatchTheirSources fails when a binary and its source disagree.
//
// The large generated modules of the admission benchmarks are encoded here in Go
// (Large), since megabytes of binary have no place in the repository;
// TestLargeMatchesWat2wasm holds the encoder to wat2wasm's output for the same text
// (LargeText).
package wasmfixture

import (
	"embed"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"
)

//go:embed testdata/*.wasm testdata/*.wat
var files embed.FS

// Module returns the committed binary of the named fixture ("valid", "loop", …), failing
// t when there is none.
func Module(t testing.TB, name string) []byte {
	t.Helper()
	b, err := files.ReadFile(path.Join("testdata", name+".wasm"))
	if err != nil {
		t.Fatalf("wasmfixture: no module %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return b
}

// Source returns the WebAssembly text the named fixture was built from.
func Source(t testing.TB, name string) []byte {
	t.Helper()
	b, err := files.ReadFile(path.Join("testdata", name+".wat"))
	if err != nil {
		t.Fatalf("wasmfixture: no source for %q", name)
	}
	return b
}

// Names lists every fixture that has a committed binary, sorted.
func Names() []string {
	entries, err := fs.Glob(files, "testdata/*.wasm")
	if err != nil {
		return nil // the pattern is a constant; Glob fails only on a malformed one
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(path.Base(e), ".wasm"))
	}
	slices.Sort(names)
	return names
}

// Sources lists every fixture that has WebAssembly text, sorted.
func Sources() []string {
	entries, err := fs.Glob(files, "testdata/*.wat")
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(path.Base(e), ".wat"))
	}
	slices.Sort(names)
	return names
}
