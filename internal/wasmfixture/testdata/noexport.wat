;; Lacks proxy_on_context_create, which every Proxy-Wasm host calls.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))
