;; A minimal Proxy-Wasm 0.2.1 plugin: logs at start, reads its VM configuration, and
;; accepts it when it is non-empty or absent.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2 16)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 0) "plugin starting")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize")
    (drop (call $log (i32.const 2) (i32.const 0) (i32.const 15))))
  (func $alloc (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param $ctx i32) (param $size i32) (result i32)
    (if (i32.eqz (local.get $size)) (then (return (i32.const 1))))
    ;; VM_CONFIGURATION (6) into [16, 20): pointer and size.
    (if (call $get_buffer (i32.const 6) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20))
      (then (return (i32.const 0))))
    ;; Refuse the configuration "no".
    (i32.ne (i32.load16_u (i32.load (i32.const 16))) (i32.const 0x6f6e)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))
