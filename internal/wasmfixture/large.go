package wasmfixture

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// The large module's shape: the Proxy-Wasm 0.2.1 marker and the two exports every host
// calls, then n generated functions of perFunc arithmetic statements each. Compilers emit
// thousands of functions of tens of statements; perFunc 1 is the worst case for
// per-function costs.
func largeFuncs(size, perFunc int) int { return size / (perFunc*17 + 20) }

func stmtConsts(i, j int) (mul, xor int32) { return int32(i*7 + j), int32(i*13 + j) }

// LargeText returns the WebAssembly text of a valid Proxy-Wasm 0.2.1 module of about size
// bytes of text, in functions of perFunc statements each. Large encodes the same module.
func LargeText(size, perFunc int) []byte {
	var b bytes.Buffer
	b.WriteString(`(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32))
`)
	for i := range largeFuncs(size, perFunc) {
		fmt.Fprintf(&b, "  (func $f%d (param $a i32) (param $b i32) (result i32)\n", i)
		for j := range perFunc {
			mul, xor := stmtConsts(i, j)
			fmt.Fprintf(&b, "    (local.set $a (i32.add (i32.mul (local.get $a) (i32.const %d)) (i32.xor (local.get $b) (i32.const %d))))\n", mul, xor)
		}
		b.WriteString("    (local.get $a))\n")
	}
	b.WriteString(")\n")
	return b.Bytes()
}

// Wasm binary format constants (WebAssembly Core Specification, section 5).
const (
	secType     = 1
	secFunction = 3
	secMemory   = 5
	secExport   = 7
	secCode     = 10

	typeFunc = 0x60
	valI32   = 0x7f

	exportFunc   = 0x00
	exportMemory = 0x02

	opEnd      = 0x0b
	opLocalGet = 0x20
	opLocalSet = 0x21
	opI32Const = 0x41
	opI32Add   = 0x6a
	opI32Mul   = 0x6c
	opI32Xor   = 0x73
)

// Large returns the binary of the module LargeText describes, byte for byte what wat2wasm
// makes of that text.
func Large(size, perFunc int) []byte {
	n := largeFuncs(size, perFunc)
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

	// Types, in order of first use: () -> (), (i32) -> i32, (i32, i32) -> (), and, when
	// there are generated functions, (i32, i32) -> i32.
	types := [][]byte{
		{typeFunc, 0, 0},
		{typeFunc, 1, valI32, 1, valI32},
		{typeFunc, 2, valI32, valI32, 0},
		{typeFunc, 2, valI32, valI32, 1, valI32},
	}
	if n == 0 {
		types = types[:3]
	}
	out = section(out, secType, vector(len(types), func(b []byte, i int) []byte { return append(b, types[i]...) }))

	funcTypes := func(b []byte, i int) []byte { return binary.AppendUvarint(b, uint64(min(i, 3))) }
	out = section(out, secFunction, vector(3+n, funcTypes))

	out = section(out, secMemory, vector(1, func(b []byte, _ int) []byte { return append(b, 0x00, 0x01) }))

	exports := []struct {
		name string
		kind byte
		idx  uint64
	}{
		{"memory", exportMemory, 0},
		{"proxy_abi_version_0_2_1", exportFunc, 0},
		{"proxy_on_memory_allocate", exportFunc, 1},
		{"proxy_on_context_create", exportFunc, 2},
	}
	out = section(out, secExport, vector(len(exports), func(b []byte, i int) []byte {
		e := exports[i]
		b = binary.AppendUvarint(b, uint64(len(e.name)))
		b = append(b, e.name...)
		b = append(b, e.kind)
		return binary.AppendUvarint(b, e.idx)
	}))

	out = section(out, secCode, vector(3+n, func(b []byte, i int) []byte {
		body := []byte{0} // no locals beyond the parameters
		switch i {
		case 0, 2:
		case 1:
			body = append(body, opI32Const, 0)
		default:
			for j := range perFunc {
				mul, xor := stmtConsts(i-3, j)
				body = append(body, opLocalGet, 0, opI32Const)
				body = appendSLEB(body, mul)
				body = append(body, opI32Mul, opLocalGet, 1, opI32Const)
				body = appendSLEB(body, xor)
				body = append(body, opI32Xor, opI32Add, opLocalSet, 0)
			}
			body = append(body, opLocalGet, 0)
		}
		body = append(body, opEnd)
		b = binary.AppendUvarint(b, uint64(len(body)))
		return append(b, body...)
	}))
	return out
}

// vector encodes a count followed by n elements.
func vector(n int, elem func(b []byte, i int) []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(n))
	for i := range n {
		b = elem(b, i)
	}
	return b
}

func section(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...)
}

// appendSLEB appends v in signed LEB128, the encoding of i32.const immediates.
func appendSLEB(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
