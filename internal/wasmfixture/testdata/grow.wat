;; Grows its memory to 4,096 pages (256 MiB) while starting, and traps if it cannot,
;; as a language runtime's allocator aborts when the heap cannot grow.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "_initialize")
    (if (i32.eq (memory.grow (i32.const 4095)) (i32.const -1)) (then unreachable))))
