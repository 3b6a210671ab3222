// Package wat builds Wasm test modules from WebAssembly text with wat2wasm (Debian's
// wabt, which .ci/run installs), so that tests use real modules and no binary module is
// committed.
package wat

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Compile turns WebAssembly text into a binary module.
func Compile(text []byte) ([]byte, error) {
	bin, err := exec.LookPath("wat2wasm")
	if err != nil {
		return nil, fmt.Errorf("wat: wat2wasm not found (apt-get install wabt): %w", err)
	}
	dir, err := os.MkdirTemp("", "wat-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, text, 0o600); err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, in, "-o", out)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("wat: wat2wasm: %v: %s", err, stderr.Bytes())
	}
	return os.ReadFile(out)
}

// CompileFile compiles a .wat file.
func CompileFile(path string) ([]byte, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Compile(text)
}

// Large returns the text of a valid Proxy-Wasm 0.2.1 module of about size bytes of code,
// in functions of perFunc arithmetic statements each (compilers emit thousands of
// functions of tens of statements; perFunc 1 is the worst case for per-function costs).
func Large(size, perFunc int) []byte {
	var b bytes.Buffer
	b.WriteString(`(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32))
`)
	for i := 0; i < size/(perFunc*17+20); i++ {
		fmt.Fprintf(&b, "  (func $f%d (param $a i32) (param $b i32) (result i32)\n", i)
		for j := range perFunc {
			fmt.Fprintf(&b, "    (local.set $a (i32.add (i32.mul (local.get $a) (i32.const %d)) (i32.xor (local.get $b) (i32.const %d))))\n", i*7+j, i*13+j)
		}
		b.WriteString("    (local.get $a))\n")
	}
	b.WriteString(")\n")
	return b.Bytes()
}
