;; Declares 1,024 pages (64 MiB) of memory up front.
(module
  (memory (export "memory") 1024)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32)))
