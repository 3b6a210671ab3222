package wasm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// Sig is a Wasm function signature.
type Sig struct {
	Params, Results []api.ValueType
}

func (s Sig) String() string {
	name := func(ts []api.ValueType) string {
		var out []string
		for _, t := range ts {
			out = append(out, api.ValueTypeName(t))
		}
		return "(" + strings.Join(out, ", ") + ")"
	}
	return name(s.Params) + " -> " + name(s.Results)
}

func (s Sig) equal(params, results []api.ValueType) bool {
	return slices.Equal(s.Params, params) && slices.Equal(s.Results, results)
}

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// sig builds a signature of n i32 parameters and the given results; extra places
// replace parameters by index (for the few i64 ones).
func sig(n int, results []api.ValueType, i64At ...int) Sig {
	p := make([]api.ValueType, n)
	for i := range p {
		p[i] = i32
	}
	for _, at := range i64At {
		p[at] = i64
	}
	return Sig{Params: p, Results: results}
}

var status = []api.ValueType{i32}

// ABI is what an extension may import from its host and must export to it.
type ABI struct {
	Name string
	// Imports are the host functions allowed, by module and name.
	Imports map[string]map[string]Sig
	// Marker is an export that must exist: the module's claim to speak this ABI.
	Marker string
	// Required exports (memory is "memory"); each entry lists alternatives, one of which
	// must be exported.
	Required [][]string
	// Callbacks are the exports the host may call: checked for signature when present.
	Callbacks map[string]Sig
}

// proxyWasmImports are the host functions of Proxy-Wasm ABI v0.2.x, with their
// signatures, from the specification (github.com/proxy-wasm/spec, abi-versions/v0.2.1):
// every parameter is i32 but the metric values and WASI's clock precision.
func proxyWasmImports() map[string]map[string]Sig {
	env := map[string]Sig{
		"proxy_done":                         sig(0, status),
		"proxy_set_effective_context":        sig(1, status),
		"proxy_log":                          sig(3, status),
		"proxy_get_log_level":                sig(1, status),
		"proxy_get_current_time_nanoseconds": sig(1, status),
		"proxy_set_tick_period_milliseconds": sig(1, status),
		"proxy_set_buffer_bytes":             sig(5, status),
		"proxy_get_buffer_bytes":             sig(5, status),
		"proxy_get_buffer_status":            sig(3, status),
		"proxy_get_header_map_size":          sig(2, status),
		"proxy_get_header_map_pairs":         sig(3, status),
		"proxy_set_header_map_pairs":         sig(3, status),
		"proxy_get_header_map_value":         sig(5, status),
		"proxy_add_header_map_value":         sig(5, status),
		"proxy_replace_header_map_value":     sig(5, status),
		"proxy_remove_header_map_value":      sig(3, status),
		"proxy_continue_stream":              sig(1, status),
		"proxy_close_stream":                 sig(1, status),
		"proxy_get_status":                   sig(3, status),
		"proxy_send_local_response":          sig(8, status),
		"proxy_http_call":                    sig(10, status),
		"proxy_grpc_call":                    sig(12, status),
		"proxy_grpc_stream":                  sig(9, status),
		"proxy_grpc_send":                    sig(4, status),
		"proxy_grpc_cancel":                  sig(1, status),
		"proxy_grpc_close":                   sig(1, status),
		"proxy_set_shared_data":              sig(5, status),
		"proxy_get_shared_data":              sig(5, status),
		"proxy_register_shared_queue":        sig(3, status),
		"proxy_resolve_shared_queue":         sig(5, status),
		"proxy_enqueue_shared_queue":         sig(3, status),
		"proxy_dequeue_shared_queue":         sig(3, status),
		"proxy_define_metric":                sig(4, status),
		"proxy_record_metric":                sig(2, status, 1),
		"proxy_increment_metric":             sig(2, status, 1),
		"proxy_get_metric":                   sig(2, status),
		"proxy_get_property":                 sig(4, status),
		"proxy_set_property":                 sig(4, status),
		"proxy_call_foreign_function":        sig(6, status),
	}
	wasi := map[string]Sig{
		"fd_write":          sig(4, status),
		"clock_time_get":    sig(3, status, 1),
		"random_get":        sig(2, status),
		"environ_sizes_get": sig(2, status),
		"environ_get":       sig(2, status),
		"args_sizes_get":    sig(2, status),
		"args_get":          sig(2, status),
		"proc_exit":         sig(1, nil),
	}
	return map[string]map[string]Sig{"env": env, "wasi_snapshot_preview1": wasi}
}

func proxyWasmCallbacks() map[string]Sig {
	none := []api.ValueType(nil)
	return map[string]Sig{
		"_initialize":                             sig(0, none),
		"_start":                                  sig(0, none),
		"main":                                    sig(2, status),
		"proxy_on_memory_allocate":                sig(1, status),
		"malloc":                                  sig(1, status),
		"proxy_on_context_create":                 sig(2, none),
		"proxy_on_done":                           sig(1, status),
		"proxy_on_log":                            sig(1, none),
		"proxy_on_delete":                         sig(1, none),
		"proxy_on_vm_start":                       sig(2, status),
		"proxy_on_configure":                      sig(2, status),
		"proxy_on_tick":                           sig(1, none),
		"proxy_on_new_connection":                 sig(1, status),
		"proxy_on_downstream_data":                sig(3, status),
		"proxy_on_downstream_connection_close":    sig(2, none),
		"proxy_on_upstream_data":                  sig(3, status),
		"proxy_on_upstream_connection_close":      sig(2, none),
		"proxy_on_request_headers":                sig(3, status),
		"proxy_on_request_body":                   sig(3, status),
		"proxy_on_request_trailers":               sig(2, status),
		"proxy_on_response_headers":               sig(3, status),
		"proxy_on_response_body":                  sig(3, status),
		"proxy_on_response_trailers":              sig(2, status),
		"proxy_on_http_call_response":             sig(5, none),
		"proxy_on_grpc_receive_initial_metadata":  sig(3, none),
		"proxy_on_grpc_receive":                   sig(3, none),
		"proxy_on_grpc_receive_trailing_metadata": sig(3, none),
		"proxy_on_grpc_close":                     sig(3, none),
		"proxy_on_queue_ready":                    sig(2, none),
		"proxy_on_foreign_function":               sig(3, none),
	}
}

// ABIs are the ABIs admission knows, by the name an extension manifest declares.
func ABIs() map[string]ABI {
	out := map[string]ABI{}
	for _, v := range []string{"0.2.0", "0.2.1"} {
		name := "proxy-wasm/" + v
		out[name] = ABI{
			Name:      name,
			Imports:   proxyWasmImports(),
			Marker:    "proxy_abi_version_" + strings.ReplaceAll(v, ".", "_"),
			Required:  [][]string{{"memory"}, {"proxy_on_memory_allocate", "malloc"}, {"proxy_on_context_create"}},
			Callbacks: proxyWasmCallbacks(),
		}
	}
	return out
}

// LookupABI returns the named ABI.
func LookupABI(name string) (ABI, error) {
	abi, ok := ABIs()[name]
	if !ok {
		names := make([]string, 0)
		for n := range ABIs() {
			names = append(names, n)
		}
		slices.Sort(names)
		return ABI{}, fmt.Errorf("unknown ABI %q; known: %s", name, strings.Join(names, ", "))
	}
	return abi, nil
}
