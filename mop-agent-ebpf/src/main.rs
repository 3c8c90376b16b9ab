//! mop's eBPF programs (see `syscalls.rs`); built for the bpf target by `mop-agent/build.rs`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

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
