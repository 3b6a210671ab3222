package wasm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"meshkit.dev/meshkit/internal/wasmfixture"
)

func module(t testing.TB, name string) []byte {
	t.Helper()
	return wasmfixture.Module(t, name)
}

func codes(v Verdict) []string {
	var out []string
	for _, r := range v.Reasons {
		out = append(out, r.Code)
	}
	return out
}

func TestAdmitValidModule(t *testing.T) {
	a := NewAdmitter(Config{})
	ctx := context.Background()
	m := module(t, "valid")
	v := a.Admit(ctx, Request{ABI: "proxy-wasm/0.2.1", Module: m})
	if !v.Accepted || v.Err() != nil || v.MemoryPages != 2 {
		t.Fatalf("verdict %+v", v)
	}
	// Its configuration reaches it through proxy_get_buffer_bytes, and it may refuse it.
	if v := a.Admit(ctx, Request{ABI: "proxy-wasm/0.2.1", Module: m, VMConfig: []byte("yes")}); !v.Accepted {
		t.Fatalf("with configuration: %+v", v)
	}
	v = a.Admit(ctx, Request{ABI: "proxy-wasm/0.2.1", Module: m, VMConfig: []byte("no")})
	if v.Accepted || !slices.Equal(codes(v), []string{CodeStartFailed}) || !strings.Contains(v.Err().Error(), "proxy_on_vm_start returned false") {
		t.Fatalf("refused configuration: %+v", v)
	}
	// The module claims 0.2.1: it is not a 0.2.0 module.
	v = a.Admit(ctx, Request{ABI: "proxy-wasm/0.2.0", Module: m})
	if v.Accepted || !strings.Contains(v.Err().Error(), "proxy_abi_version_0_2_0") {
		t.Fatalf("as 0.2.0: %+v", v)
	}
}

func TestAdmitRejectsBadModules(t *testing.T) {
	a := NewAdmitter(Config{StartTimeout: 200 * time.Millisecond, MaxMemoryPages: 256})
	for _, tc := range []struct {
		name  string
		codes []string
		says  string
	}{
		{"loop", []string{CodeStartTimeout}, "the start function did not finish within 200ms"},
		{"grow", []string{CodeMemoryGrowth}, "grew its memory to 4096 pages; the cap is 256 (16 MiB)"},
		{"forbidden", []string{CodeForbiddenImport}, "imports env.exec_shell, which proxy-wasm/0.2.1 does not provide"},
		{"noexport", []string{CodeMissingExport}, "exports none of proxy_on_context_create"},
		{"badsig", []string{CodeImportSignature, CodeExportSignature}, "imports env.proxy_log as (i32, i32) -> (i32); proxy-wasm/0.2.1 defines it as (i32, i32, i32) -> (i32)"},
		{"bigmem", []string{CodeMemoryDeclared}, "starts at 1024 pages; the cap is 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := a.Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: module(t, tc.name)})
			if v.Accepted || !slices.Equal(codes(v), tc.codes) || !strings.Contains(v.Err().Error(), tc.says) {
				t.Fatalf("verdict %v: %v; want codes %v saying %q", codes(v), v.Err(), tc.codes, tc.says)
			}
		})
	}
}

func TestAdmitRefusesGarbageUnknownABIAndOversize(t *testing.T) {
	a := NewAdmitter(Config{MaxModuleBytes: 1000})
	ctx := context.Background()
	for _, tc := range []struct {
		req  Request
		code string
	}{
		{Request{ABI: "proxy-wasm/0.2.1", Module: []byte("\x00asm\x01\x00\x00\x00garbage")}, CodeCompile},
		{Request{ABI: "proxy-wasm/0.2.1", Module: nil}, CodeCompile},
		{Request{ABI: "dsl/v1", Module: module(t, "valid")}, CodeUnknownABI},
		{Request{ABI: "proxy-wasm/0.2.1", Module: make([]byte, 1001)}, CodeTooLarge},
	} {
		v := a.Admit(ctx, tc.req)
		if v.Accepted || !slices.Equal(codes(v), []string{tc.code}) {
			t.Errorf("%q (%d bytes): %v, want %s", tc.req.ABI, len(tc.req.Module), v.Err(), tc.code)
		}
	}
}

// TestOptimizingCompilerAgrees: both wazero engines give the same verdicts.
func TestOptimizingCompilerAgrees(t *testing.T) {
	interp := NewAdmitter(Config{StartTimeout: 200 * time.Millisecond, Interpreter: true})
	opt := NewAdmitter(Config{StartTimeout: 200 * time.Millisecond})
	for _, name := range []string{"valid", "loop", "grow", "forbidden"} {
		m := module(t, name)
		a := interp.Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: m})
		b := opt.Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: m})
		if a.Accepted != b.Accepted || !slices.Equal(codes(a), codes(b)) {
			t.Errorf("%s: interpreter %v, optimizing %v", name, codes(a), codes(b))
		}
	}
}

func FuzzAdmit(f *testing.F) {
	for _, name := range []string{"valid", "grow", "badsig"} {
		f.Add(module(f, name))
	}
	a := NewAdmitter(Config{StartTimeout: 100 * time.Millisecond, MaxMemoryPages: 64})
	f.Fuzz(func(t *testing.T, b []byte) {
		v := a.Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: b})
		if !v.Accepted && len(v.Reasons) == 0 {
			t.Fatal("rejected without a reason")
		}
		if v.Accepted && v.MemoryPages > 64 {
			t.Fatalf("accepted with %d pages", v.MemoryPages)
		}
	})
}

// BenchmarkAdmit1MiB compiles, checks and starts a 1 MiB module with each engine, for
// two shapes of code: functions of 64 statements (as compilers emit) and of one.
func BenchmarkAdmit1MiB(b *testing.B) {
	for _, perFunc := range []int{64, 1} {
		m := wasmfixture.Large(1<<20, perFunc)
		for _, interpreter := range []bool{false, true} {
			engine := "optimizing"
			if interpreter {
				engine = "interpreter"
			}
			b.Run(fmt.Sprintf("%s/stmts-per-func=%d", engine, perFunc), func(b *testing.B) {
				a := NewAdmitter(Config{Interpreter: interpreter})
				b.SetBytes(int64(len(m)))
				var compile time.Duration
				for b.Loop() {
					v := a.Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: m})
					if !v.Accepted {
						b.Fatal(v.Err())
					}
					compile += v.Compile
				}
				b.ReportMetric(float64(compile.Milliseconds())/float64(b.N), "compile-ms/op")
			})
		}
	}
}

// BenchmarkLoopingModuleStops reports how long after its deadline a module that never
// returns is stopped (goal: within 50 ms).
func BenchmarkLoopingModuleStops(b *testing.B) {
	m := module(b, "loop")
	const deadline = 100 * time.Millisecond
	a := NewAdmitter(Config{StartTimeout: deadline})
	var over time.Duration
	for b.Loop() {
		t0 := time.Now()
		v := a.Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: m})
		over += time.Since(t0) - deadline - v.Compile
		if !slices.Equal(codes(v), []string{CodeStartTimeout}) {
			b.Fatal(v.Err())
		}
	}
	b.ReportMetric(float64(over.Microseconds())/1000/float64(b.N), "overshoot-ms/op")
}

// BenchmarkAdmitPeakRSS10MiB admits a 10 MiB module in a fresh process and reports that
// process's peak resident memory (goal: 160 MiB).
func BenchmarkAdmitPeakRSS10MiB(b *testing.B) {
	if os.Getenv("MESHKIT_ADMIT_CHILD") != "" {
		return
	}
	m := wasmfixture.Large(10<<20, 64)
	path := filepath.Join(b.TempDir(), "big.wasm")
	if err := os.WriteFile(path, m, 0o600); err != nil {
		b.Fatal(err)
	}
	for _, engine := range []string{"optimizing", "interpreter"} {
		b.Run(engine, func(b *testing.B) {
			var peak float64
			for b.Loop() {
				kb, err := childPeakRSS(path, engine)
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, float64(kb)/1024)
			}
			b.ReportMetric(float64(len(m))/(1<<20), "module-MiB")
			b.ReportMetric(peak, "peak-RSS-MiB")
		})
	}
}

// TestAdmitChild is the child process of BenchmarkAdmitPeakRSS10MiB.
func TestAdmitChild(t *testing.T) {
	path := os.Getenv("MESHKIT_ADMIT_CHILD")
	if path == "" {
		t.Skip("child process of BenchmarkAdmitPeakRSS10MiB")
	}
	m, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := NewAdmitter(Config{Interpreter: os.Getenv("MESHKIT_ADMIT_ENGINE") == "interpreter"}).Admit(context.Background(), Request{ABI: "proxy-wasm/0.2.1", Module: m})
	if !v.Accepted {
		t.Fatal(v.Err())
	}
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Println("PEAK", strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")))
		}
	}
}

func childPeakRSS(path, engine string) (int, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAdmitChild$", "-test.v")
	cmd.Env = append(os.Environ(), "MESHKIT_ADMIT_CHILD="+path, "MESHKIT_ADMIT_ENGINE="+engine)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("child: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var kb int
		if _, err := fmt.Sscanf(line, "PEAK %d kB", &kb); err == nil {
			return kb, nil
		}
	}
	return 0, fmt.Errorf("child reported no peak: %s", out)
}
