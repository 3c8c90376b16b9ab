//! mop's eBPF programs; built for the bpf target by `mop-agent/build.rs` and embedded in the
//! agent.
//!
//! The syscall capture path (`syscalls.rs`) hooks the `sys_enter` and `sys_exit` raw
//! tracepoints once each and dispatches on the syscall number, which costs less than one
//! tracepoint per syscall (see the README's performance section). Files by concern: `maps.rs`
//! (every map and the load-time config), `sock.rs` (fd to TCP socket and its addresses),
//! `emit.rs` (payload copy and ring-buffer output), `tls.rs` (plaintext at the TLS library),
//! `tcpctx.rs` (trace context in a TCP option).
//!
//! The kernel-function capture paths write the same records from hooks on the kernel's TCP
//! functions: `fentry.rs` (fentry/fexit) and `kprobe.rs` (kprobes) fetch arguments and call
//! the shared logic in `kfuncs.rs`. The agent attaches one path, the best that works.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use mop_agent_ebpf as _;

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod fentry;
#[cfg(target_arch = "bpf")]
mod kfuncs;
#[cfg(target_arch = "bpf")]
mod kprobe;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod tcpctx;
#[cfg(target_arch = "bpf")]
mod tls;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds (`cargo check --workspace`) compile this stub; the programs exist only for bpf.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(not(target_arch = "bpf"))]
use {aya_ebpf as _, mop_common as _};
