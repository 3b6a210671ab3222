package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Reason codes of a rejection: stable strings for status, metrics and reports.
const (
	CodeUnknownABI      = "unknown_abi"
	CodeTooLarge        = "too_large"
	CodeCompile         = "compile_error"
	CodeForbiddenImport = "forbidden_import"
	CodeImportSignature = "import_signature"
	CodeMissingExport   = "missing_export"
	CodeExportSignature = "export_signature"
	CodeMemoryDeclared  = "memory_declared"
	CodeMemoryGrowth    = "memory_growth"
	CodeStartTimeout    = "start_timeout"
	CodeStartTrap       = "start_trap"
	CodeStartFailed     = "start_failed"
)

// Reason is one cause of a rejection.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (r Reason) String() string { return r.Code + ": " + r.Message }

// Verdict is admission's result: data, recorded in agent status and reported to seeds.
type Verdict struct {
	Accepted bool     `json:"accepted"`
	ABI      string   `json:"abi"`
	Reasons  []Reason `json:"reasons,omitempty"`
	// Compile and Init are how long compiling and the bounded start took.
	Compile time.Duration `json:"compile_ns"`
	Init    time.Duration `json:"init_ns"`
	// MemoryPages is the most linear memory the module held during the start.
	MemoryPages uint32 `json:"memory_pages"`
}

// Err is nil when accepted, else an error naming every reason.
func (v Verdict) Err() error {
	if v.Accepted {
		return nil
	}
	var parts []string
	for _, r := range v.Reasons {
		parts = append(parts, r.String())
	}
	return fmt.Errorf("wasm: %s module rejected: %s", v.ABI, strings.Join(parts, "; "))
}

// Config bounds admission.
type Config struct {
	// MaxModuleBytes refuses larger modules before compiling; default 32 MiB.
	MaxModuleBytes int
	// MaxMemoryPages caps linear memory, declared and grown (64 KiB pages); default 512
	// (32 MiB).
	MaxMemoryPages uint32
	// StartTimeout bounds the start function and the ABI's initialisation; default 1 s.
	StartTimeout time.Duration
	// Interpreter compiles with wazero's interpreter instead of its optimizing compiler.
	// The optimizing compiler is the default: on modules shaped as compilers emit them it
	// compiles about as fast, and its peak memory for a 10 MiB module is a sixth of the
	// interpreter's (docs/extensions.md has the measurements).
	Interpreter bool
}

func (c *Config) defaults() {
	if c.MaxModuleBytes <= 0 {
		c.MaxModuleBytes = 32 << 20
	}
	if c.MaxMemoryPages == 0 {
		c.MaxMemoryPages = 512
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = time.Second
	}
}

// Request is one module to admit.
type Request struct {
	ABI    string
	Module []byte
	// VMConfig and PluginConfig are what proxy_on_vm_start and proxy_on_configure read
	// (the binding's configuration).
	VMConfig, PluginConfig []byte
}

// Admitter admits modules. It is safe for concurrent use; each admission runs in its own
// wazero runtime, closed before Admit returns.
type Admitter struct {
	cfg Config
}

// NewAdmitter returns an Admitter with cfg's limits.
func NewAdmitter(cfg Config) *Admitter {
	cfg.defaults()
	return &Admitter{cfg: cfg}
}

// Admit compiles the module, checks its imports and exports against the ABI, caps its
// memory and runs its start function and the ABI's initialisation under a deadline. It
// never returns an error: every failure is a reason in the verdict.
func (a *Admitter) Admit(ctx context.Context, req Request) Verdict {
	v := Verdict{ABI: req.ABI}
	reject := func(code, format string, args ...any) {
		v.Reasons = append(v.Reasons, Reason{Code: code, Message: fmt.Sprintf(format, args...)})
	}
	abi, err := LookupABI(req.ABI)
	if err != nil {
		reject(CodeUnknownABI, "%v", err)
		return v
	}
	if len(req.Module) > a.cfg.MaxModuleBytes {
		reject(CodeTooLarge, "%d bytes; the limit is %d", len(req.Module), a.cfg.MaxModuleBytes)
		return v
	}
	rcfg := wazero.NewRuntimeConfigCompiler()
	if a.cfg.Interpreter {
		rcfg = wazero.NewRuntimeConfigInterpreter()
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rcfg.WithCloseOnContextDone(true))
	defer rt.Close(context.WithoutCancel(ctx))

	t0 := time.Now()
	compiled, err := rt.CompileModule(ctx, req.Module)
	v.Compile = time.Since(t0)
	if err != nil {
		reject(CodeCompile, "%v", err)
		return v
	}
	a.checkImports(abi, compiled, reject)
	a.checkExports(abi, compiled, reject)
	a.checkDeclaredMemory(compiled, reject)
	if len(v.Reasons) > 0 {
		return v
	}
	t1 := time.Now()
	a.run(ctx, rt, abi, compiled, req, &v, reject)
	v.Init = time.Since(t1)
	v.Accepted = len(v.Reasons) == 0
	return v
}

func (a *Admitter) checkImports(abi ABI, m wazero.CompiledModule, reject func(string, string, ...any)) {
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		want, ok := abi.Imports[mod][name]
		switch {
		case !ok:
			reject(CodeForbiddenImport, "imports %s.%s, which %s does not provide", mod, name, abi.Name)
		case !want.equal(f.ParamTypes(), f.ResultTypes()):
			reject(CodeImportSignature, "imports %s.%s as %s; %s defines it as %s", mod, name,
				Sig{f.ParamTypes(), f.ResultTypes()}, abi.Name, want)
		}
	}
	for _, mem := range m.ImportedMemories() {
		mod, name, _ := mem.Import()
		reject(CodeForbiddenImport, "imports memory %s.%s; a %s module exports its own memory", mod, name, abi.Name)
	}
}

func (a *Admitter) checkExports(abi ABI, m wazero.CompiledModule, reject func(string, string, ...any)) {
	funcs := m.ExportedFunctions()
	mems := m.ExportedMemories()
	has := func(name string) bool {
		_, f := funcs[name]
		_, mem := mems[name]
		return f || mem
	}
	if _, ok := funcs[abi.Marker]; !ok {
		reject(CodeMissingExport, "does not export %s, the marker of %s", abi.Marker, abi.Name)
	}
	for _, alts := range abi.Required {
		if !slices.ContainsFunc(alts, has) {
			reject(CodeMissingExport, "exports none of %s, which %s requires", strings.Join(alts, " or "), abi.Name)
		}
	}
	names := make([]string, 0, len(funcs))
	for n := range funcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want, ok := abi.Callbacks[n]
		if f := funcs[n]; ok && !want.equal(f.ParamTypes(), f.ResultTypes()) {
			reject(CodeExportSignature, "exports %s as %s; %s calls it as %s", n, Sig{f.ParamTypes(), f.ResultTypes()}, abi.Name, want)
		}
	}
}

func (a *Admitter) checkDeclaredMemory(m wazero.CompiledModule, reject func(string, string, ...any)) {
	for name, mem := range m.ExportedMemories() {
		if mem.Min() > a.cfg.MaxMemoryPages {
			reject(CodeMemoryDeclared, "memory %q starts at %d pages; the cap is %d (%d MiB)", name, mem.Min(), a.cfg.MaxMemoryPages, a.cfg.MaxMemoryPages/16)
		}
	}
}

// run instantiates the module in a sandbox host and runs its initialisation.
func (a *Admitter) run(ctx context.Context, rt wazero.Runtime, abi ABI, compiled wazero.CompiledModule, req Request, v *Verdict, reject func(string, string, ...any)) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.StartTimeout)
	defer cancel()
	mem := &capAllocator{limit: uint64(a.cfg.MaxMemoryPages) * 65536}
	ctx = experimental.WithMemoryAllocator(ctx, mem)
	h := &sandbox{vmConfig: req.VMConfig, pluginConfig: req.PluginConfig}
	if err := h.instantiateHost(ctx, rt, compiled); err != nil {
		reject(CodeStartFailed, "host: %v", err)
		return
	}
	fail := func(stage string, err error) {
		switch {
		case mem.over.Load() != nil:
			// Reported below.
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || isDeadline(err):
			reject(CodeStartTimeout, "%s did not finish within %s", stage, a.cfg.StartTimeout)
		default:
			var exit *sys.ExitError
			if errors.As(err, &exit) {
				reject(CodeStartFailed, "%s exited with code %d", stage, exit.ExitCode())
			} else {
				reject(CodeStartTrap, "%s: %v", stage, err)
			}
		}
	}
	defer func() {
		if over := mem.over.Load(); over != nil {
			reject(CodeMemoryGrowth, "grew its memory to %d pages; the cap is %d (%d MiB)", *over/65536, a.cfg.MaxMemoryPages, a.cfg.MaxMemoryPages/16)
		}
		v.MemoryPages = uint32(mem.peak.Load() / 65536)
	}()
	// The Wasm start section runs during instantiation.
	mod, err := rt.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName("extension").WithStartFunctions())
	if err != nil {
		fail("the start function", err)
		return
	}
	h.mod = mod
	call := func(name string, args ...uint64) ([]uint64, bool) {
		f := mod.ExportedFunction(name)
		if f == nil {
			return nil, true
		}
		res, err := f.Call(ctx, args...)
		if err != nil {
			fail(name, err)
			return nil, false
		}
		if mem.over.Load() != nil {
			return nil, false
		}
		return res, true
	}
	// Proxy-Wasm's integration order: _initialize (then main), or _start.
	if mod.ExportedFunction("_initialize") != nil {
		if _, ok := call("_initialize"); !ok {
			return
		}
		if _, ok := call("main", 0, 0); !ok {
			return
		}
	} else if _, ok := call("_start"); !ok {
		return
	}
	const rootContext = 1
	if _, ok := call("proxy_on_context_create", rootContext, 0); !ok {
		return
	}
	for _, cb := range []struct {
		name string
		size int
	}{{"proxy_on_vm_start", len(req.VMConfig)}, {"proxy_on_configure", len(req.PluginConfig)}} {
		res, ok := call(cb.name, rootContext, uint64(cb.size))
		if !ok {
			return
		}
		if res != nil && uint32(res[0]) == 0 {
			reject(CodeStartFailed, "%s returned false (the plugin refused its configuration)", cb.name)
			return
		}
	}
}

func isDeadline(err error) bool {
	var exit *sys.ExitError
	return errors.As(err, &exit) && (exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled)
}

// capAllocator backs linear memory and refuses growth past limit, remembering that it
// did: a module may survive a failed memory.grow, but asking past the cap rejects it.
type capAllocator struct {
	limit uint64
	over  atomicPtr
	peak  atomicU64
}

func (c *capAllocator) Allocate(capacity, _ uint64) experimental.LinearMemory {
	return &capMemory{a: c, buf: make([]byte, 0, min(capacity, c.limit))}
}

type capMemory struct {
	a   *capAllocator
	buf []byte
}

func (m *capMemory) Reallocate(size uint64) []byte {
	if size > m.a.limit {
		m.a.over.Store(&size)
		return nil
	}
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.a.limit))
		copy(nb, m.buf)
		m.buf = nb
	} else {
		clear(m.buf[len(m.buf):size])
		m.buf = m.buf[:size]
	}
	m.a.peak.Max(size)
	return m.buf
}

func (m *capMemory) Free() { m.buf = nil }

// sandbox is the host an extension meets during admission: the ABI's functions, doing
// nothing outside the module (logs are dropped, no calls leave, properties are absent),
// and the binding's configuration buffers.
type sandbox struct {
	mod                    api.Module
	vmConfig, pluginConfig []byte
}

const (
	statusOK         = 0
	statusNotFound   = 1
	statusBadArg     = 2
	statusBadMemory  = 6
	statusUnimpl     = 12
	wasiSuccess      = 0
	wasiFault        = 21
	bufferVMConfig   = 6
	bufferPluginConf = 7
)

// instantiateHost defines the host modules with exactly the functions the module
// imports (all checked against the ABI before this).
func (h *sandbox) instantiateHost(ctx context.Context, rt wazero.Runtime, m wazero.CompiledModule) error {
	builders := map[string]wazero.HostModuleBuilder{}
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		b, ok := builders[mod]
		if !ok {
			b = rt.NewHostModuleBuilder(mod)
			builders[mod] = b
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(h.impl(mod, name), f.ParamTypes(), f.ResultTypes()).
			Export(name)
	}
	for _, b := range builders {
		if _, err := b.Instantiate(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (h *sandbox) impl(mod, name string) api.GoModuleFunction {
	ret := func(stack []uint64, v uint32) {
		if len(stack) > 0 {
			stack[0] = uint64(v)
		}
	}
	put32 := func(m api.Module, at uint32, v uint32) bool { return m.Memory().WriteUint32Le(at, v) }
	return api.GoModuleFunc(func(ctx context.Context, m api.Module, stack []uint64) {
		switch mod + "." + name {
		case "wasi_snapshot_preview1.proc_exit":
			panic(sys.NewExitError(uint32(stack[0])))
		case "wasi_snapshot_preview1.fd_write":
			// Output is dropped; report it written so the module goes on.
			iovs, n, written := uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
			var total uint32
			for i := range n {
				l, ok := m.Memory().ReadUint32Le(iovs + 8*i + 4)
				if !ok {
					ret(stack, wasiFault)
					return
				}
				total += l
			}
			if !put32(m, written, total) {
				ret(stack, wasiFault)
				return
			}
			ret(stack, wasiSuccess)
		case "wasi_snapshot_preview1.clock_time_get":
			if !m.Memory().WriteUint64Le(uint32(stack[2]), uint64(time.Now().UnixNano())) {
				ret(stack, wasiFault)
				return
			}
			ret(stack, wasiSuccess)
		case "wasi_snapshot_preview1.random_get":
			buf, ok := m.Memory().Read(uint32(stack[0]), uint32(stack[1]))
			if !ok {
				ret(stack, wasiFault)
				return
			}
			_, _ = rand.Read(buf)
			ret(stack, wasiSuccess)
		case "wasi_snapshot_preview1.environ_sizes_get", "wasi_snapshot_preview1.args_sizes_get":
			if !put32(m, uint32(stack[0]), 0) || !put32(m, uint32(stack[1]), 0) {
				ret(stack, wasiFault)
				return
			}
			ret(stack, wasiSuccess)
		case "wasi_snapshot_preview1.environ_get", "wasi_snapshot_preview1.args_get":
			ret(stack, wasiSuccess)
		case "env.proxy_log", "env.proxy_set_tick_period_milliseconds", "env.proxy_set_effective_context":
			ret(stack, statusOK)
		case "env.proxy_get_log_level":
			if !put32(m, uint32(stack[0]), 2) { // INFO
				ret(stack, statusBadMemory)
				return
			}
			ret(stack, statusOK)
		case "env.proxy_get_current_time_nanoseconds":
			if !m.Memory().WriteUint64Le(uint32(stack[0]), uint64(time.Now().UnixNano())) {
				ret(stack, statusBadMemory)
				return
			}
			ret(stack, statusOK)
		case "env.proxy_define_metric":
			if !put32(m, uint32(stack[3]), 1) {
				ret(stack, statusBadMemory)
				return
			}
			ret(stack, statusOK)
		case "env.proxy_record_metric", "env.proxy_increment_metric":
			ret(stack, statusOK)
		case "env.proxy_get_buffer_status":
			buf, ok := h.buffer(uint32(stack[0]))
			if !ok {
				ret(stack, statusNotFound)
				return
			}
			if !put32(m, uint32(stack[1]), uint32(len(buf))) || !put32(m, uint32(stack[2]), 0) {
				ret(stack, statusBadMemory)
				return
			}
			ret(stack, statusOK)
		case "env.proxy_get_buffer_bytes":
			ret(stack, h.getBufferBytes(ctx, m, stack))
		default:
			// Requests, calls, queues, properties and shared data do not exist while
			// the plugin starts.
			if strings.HasPrefix(name, "proxy_get_") {
				ret(stack, statusNotFound)
				return
			}
			ret(stack, statusUnimpl)
		}
	})
}

func (h *sandbox) buffer(id uint32) ([]byte, bool) {
	switch id {
	case bufferVMConfig:
		return h.vmConfig, true
	case bufferPluginConf:
		return h.pluginConfig, true
	}
	return nil, false
}

// getBufferBytes copies part of a configuration buffer into memory the module allocates
// (proxy_on_memory_allocate, or malloc), as a Proxy-Wasm host does.
func (h *sandbox) getBufferBytes(ctx context.Context, m api.Module, stack []uint64) uint32 {
	buf, ok := h.buffer(uint32(stack[0]))
	if !ok {
		return statusNotFound
	}
	start, size := uint64(uint32(stack[1])), uint64(uint32(stack[2]))
	if start > uint64(len(buf)) {
		return statusBadArg
	}
	part := buf[start:min(start+size, uint64(len(buf)))]
	alloc := m.ExportedFunction("proxy_on_memory_allocate")
	if alloc == nil {
		alloc = m.ExportedFunction("malloc")
	}
	if alloc == nil || len(part) == 0 {
		if !m.Memory().WriteUint32Le(uint32(stack[3]), 0) || !m.Memory().WriteUint32Le(uint32(stack[4]), 0) {
			return statusBadMemory
		}
		return statusOK
	}
	res, err := alloc.Call(ctx, uint64(len(part)))
	if err != nil || len(res) == 0 || res[0] == 0 {
		return statusBadMemory
	}
	ptr := uint32(res[0])
	if !m.Memory().Write(ptr, part) || !m.Memory().WriteUint32Le(uint32(stack[3]), ptr) || !m.Memory().WriteUint32Le(uint32(stack[4]), uint32(len(part))) {
		return statusBadMemory
	}
	return statusOK
}

// atomicPtr keeps the largest size asked past the cap (a mutex: it is set once or twice
// per admission, never on a hot path).
type atomicPtr struct {
	mu sync.Mutex
	v  *uint64
}

func (a *atomicPtr) Store(v *uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.v == nil || *v > *a.v {
		a.v = v
	}
}

func (a *atomicPtr) Load() *uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}

// atomicU64 is the peak memory size.
type atomicU64 struct {
	mu sync.Mutex
	v  uint64
}

func (a *atomicU64) Max(v uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.v = max(a.v, v)
}

func (a *atomicU64) Load() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}
